//! A DHCP client (RFC 2131) for the card: DISCOVER, OFFER, REQUEST, ACK, broadcast both ways
//! (the broadcast flag asks the server to answer to ff:ff:ff:ff:ff:ff). The lease gives the
//! interface its address, prefix and router; it is not renewed (tests outlive no lease).

use super::card::NetCard;
use super::packet::{self, Ethernet, Ipv4, Ipv4Packet, Mac, Udp, BROADCAST};
use super::stack::{self, Address, Interface};
use crate::io::Io;
use crate::ticks;

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// The fixed BOOTP part before the magic cookie.
const FIXED: usize = 236;
/// Messages are padded to BOOTP's minimum.
const MESSAGE_BYTES: usize = 300;
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;
const OPTION_MASK: u8 = 1;
const OPTION_ROUTER: u8 = 3;
const OPTION_HOSTNAME: u8 = 12;
const OPTION_REQUESTED_IP: u8 = 50;
const OPTION_LEASE_TIME: u8 = 51;
const OPTION_MESSAGE_TYPE: u8 = 53;
const OPTION_SERVER: u8 = 54;
const OPTION_PARAMETERS: u8 = 55;
const OPTION_END: u8 = 255;
const HOSTNAME: &[u8] = b"vireo-test-guest";
/// How long each step waits for the server (2 s), and how often the exchange is tried.
const STEP_TICKS: u64 = 2 * ticks::HZ;
const ATTEMPTS: usize = 4;

/// What the server leased.
#[derive(Clone, Copy)]
pub struct Lease {
    /// The address and prefix.
    pub address: Address,
    /// The router, if the server named one.
    pub router: Option<Ipv4>,
    /// The server.
    pub server: Ipv4,
    /// Lease time in seconds.
    pub seconds: u32,
}

/// Why no lease was had.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// No server offered an address.
    #[error("no DHCP offer")]
    NoOffer,
    /// The server did not acknowledge the request.
    #[error("no DHCP ack")]
    NoAck,
    /// The server refused the request.
    #[error("DHCP request refused (NAK)")]
    Refused,
}

/// One server reply: its type and the fields the client uses.
#[derive(Clone, Copy)]
struct Reply {
    kind: u8,
    offered: Ipv4,
    server: Option<Ipv4>,
    prefix: u8,
    router: Option<Ipv4>,
    seconds: u32,
}

/// Runs DISCOVER/OFFER/REQUEST/ACK and gives `interface` the leased address and router.
pub fn acquire(
    card: &mut NetCard,
    interface: &mut Interface,
    io: &mut Io,
) -> Result<Lease, DhcpError> {
    let mut failure = DhcpError::NoOffer;
    for attempt in 0..ATTEMPTS {
        let xid = 0x7669_0000 ^ (ticks::now() as u32).rotate_left(8) ^ attempt as u32;
        match exchange(card, interface, io, xid) {
            Ok(lease) => {
                interface.address = Some(lease.address);
                interface.router = lease.router;
                return Ok(lease);
            }
            Err(DhcpError::Refused) => return Err(DhcpError::Refused),
            Err(error) => failure = error,
        }
    }
    Err(failure)
}

fn exchange(
    card: &mut NetCard,
    interface: &mut Interface,
    io: &mut Io,
    xid: u32,
) -> Result<Lease, DhcpError> {
    send(card, io, xid, DISCOVER, None);
    let offer = wait_reply(card, interface, io, xid, &[OFFER]).ok_or(DhcpError::NoOffer)?;
    let server = offer.server.ok_or(DhcpError::NoOffer)?;
    send(card, io, xid, REQUEST, Some((offer.offered, server)));
    let ack = wait_reply(card, interface, io, xid, &[ACK, NAK]).ok_or(DhcpError::NoAck)?;
    if ack.kind == NAK {
        return Err(DhcpError::Refused);
    }
    Ok(Lease {
        address: Address {
            ip: ack.offered,
            prefix: ack.prefix,
        },
        router: ack.router,
        server,
        seconds: ack.seconds,
    })
}

/// Waits for a reply to `xid` of one of `kinds`.
fn wait_reply(
    card: &mut NetCard,
    interface: &mut Interface,
    io: &mut Io,
    xid: u32,
    kinds: &[u8],
) -> Option<Reply> {
    let mac = card.mac;
    let mut found = None;
    stack::poll(card, interface, io, STEP_TICKS, |frame, _| {
        if found.is_none() {
            found = parse_reply(frame, mac, xid).filter(|reply| kinds.contains(&reply.kind));
        }
        found.is_some()
    });
    found
}

/// Broadcasts a DISCOVER, or a REQUEST for `requested` from its server.
fn send(card: &mut NetCard, io: &mut Io, xid: u32, kind: u8, requested: Option<(Ipv4, Ipv4)>) {
    let mac = card.mac;
    let mut message = [0u8; MESSAGE_BYTES];
    let len = write_message(&mut message, mac, xid, kind, requested);
    card.send(io, |out| {
        let ethernet = packet::write_ethernet(out, BROADCAST, mac, packet::ETHERTYPE_IPV4);
        let udp = packet::write_udp(
            &mut out[ethernet + 20..],
            ([0; 4], CLIENT_PORT),
            ([255; 4], SERVER_PORT),
            &message[..len],
        );
        packet::write_ipv4_header(
            &mut out[ethernet..],
            [0; 4],
            [255; 4],
            packet::PROTOCOL_UDP,
            udp,
        );
        ethernet + 20 + udp
    });
    io.flush();
}

/// Writes a client message into `out`; returns its length (BOOTP's minimum at least).
fn write_message(
    out: &mut [u8; MESSAGE_BYTES],
    mac: Mac,
    xid: u32,
    kind: u8,
    requested: Option<(Ipv4, Ipv4)>,
) -> usize {
    out[0] = 1; // BOOTREQUEST
    out[1] = 1; // Ethernet
    out[2] = 6;
    out[4..8].copy_from_slice(&xid.to_be_bytes());
    out[10] = 0x80; // broadcast flag
    out[28..34].copy_from_slice(&mac);
    out[FIXED..FIXED + 4].copy_from_slice(&MAGIC);
    let mut at = FIXED + 4;
    let mut option = |code: u8, value: &[u8]| {
        out[at] = code;
        out[at + 1] = value.len() as u8;
        out[at + 2..at + 2 + value.len()].copy_from_slice(value);
        at += 2 + value.len();
    };
    option(OPTION_MESSAGE_TYPE, &[kind]);
    if let Some((ip, server)) = requested {
        option(OPTION_REQUESTED_IP, &ip);
        option(OPTION_SERVER, &server);
    }
    option(OPTION_HOSTNAME, HOSTNAME);
    option(
        OPTION_PARAMETERS,
        &[OPTION_MASK, OPTION_ROUTER, OPTION_LEASE_TIME],
    );
    out[at] = OPTION_END;
    MESSAGE_BYTES
}

/// A server reply in `frame` to `xid` for `mac`, if it is one.
fn parse_reply(frame: &[u8], mac: Mac, xid: u32) -> Option<Reply> {
    let ethernet = Ethernet::parse(frame)?;
    if ethernet.ethertype != packet::ETHERTYPE_IPV4 {
        return None;
    }
    let ip = Ipv4Packet::parse(ethernet.payload)?;
    if ip.protocol != packet::PROTOCOL_UDP {
        return None;
    }
    let udp = Udp::parse(ip.payload)?;
    let message = udp.data;
    let ours = udp.destination_port == CLIENT_PORT
        && message.first() == Some(&2)
        && message.get(4..8)? == xid.to_be_bytes()
        && message.get(28..34)? == mac
        && message.get(FIXED..FIXED + 4)? == MAGIC;
    if !ours {
        return None;
    }
    let mut reply = Reply {
        kind: 0,
        offered: message.get(16..20)?.try_into().ok()?,
        server: None,
        prefix: 24,
        router: None,
        seconds: 0,
    };
    let mut options = message.get(FIXED + 4..)?;
    while let [code, rest @ ..] = options {
        match *code {
            0 => {
                options = rest;
                continue;
            }
            OPTION_END => break,
            _ => {}
        }
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        let ip = || value.get(..4).and_then(|v| v.try_into().ok());
        match *code {
            OPTION_MESSAGE_TYPE => reply.kind = *value.first()?,
            OPTION_SERVER => reply.server = ip(),
            OPTION_ROUTER => reply.router = ip(),
            OPTION_MASK => reply.prefix = u32::from_be_bytes(ip()?).leading_ones() as u8,
            OPTION_LEASE_TIME => reply.seconds = u32::from_be_bytes(ip()?),
            _ => {}
        }
        options = &rest[usize::from(len)..];
    }
    Some(reply)
}
