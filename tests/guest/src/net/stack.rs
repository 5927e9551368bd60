//! The guest's IPv4 presence on one card: its address (`vireo.ip=A.B.C.D/N`, or leased by
//! `dhcp`) and router, a small ARP cache, answers to ARP requests and ICMP echo requests for
//! that address, UDP sending (after resolving the next hop with ARP), and [`poll`], the wait
//! loop the DHCP and TCP clients share.

use super::card::{NetCard, Sender};
use super::packet::{self, Arp, Ethernet, Ipv4, Ipv4Packet, Mac, BROADCAST};
use crate::arch;
use crate::io::Io;
use crate::ticks;

const ARP_CACHE: usize = 8;
/// How long `send_udp` waits for an ARP reply (1 s).
const ARP_TIMEOUT_TICKS: u64 = 100;
/// Source port of the datagrams `send_udp` sends.
pub const UDP_SOURCE_PORT: u16 = 40000;

/// The address and prefix length of the interface.
#[derive(Clone, Copy)]
pub struct Address {
    /// The address.
    pub ip: Ipv4,
    /// Prefix length.
    pub prefix: u8,
}

impl Address {
    /// Parses `A.B.C.D/N` (`/N` optional: 24).
    pub fn parse(text: &str) -> Option<Address> {
        let (ip, prefix) = text.split_once('/').unwrap_or((text, "24"));
        let prefix: u8 = prefix.parse().ok().filter(|&p| p <= 32)?;
        Some(Address {
            ip: parse_ip(ip)?,
            prefix,
        })
    }

    fn same_subnet(&self, other: Ipv4) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from_be_bytes(self.ip) & mask == u32::from_be_bytes(other) & mask
    }
}

/// Parses a dotted-quad IPv4 address.
pub fn parse_ip(text: &str) -> Option<Ipv4> {
    let mut ip = [0u8; 4];
    let mut parts = text.split('.');
    for byte in &mut ip {
        *byte = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(ip)
}

/// Why a datagram was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The interface has no address.
    #[error("no address: boot with vireo.ip=A.B.C.D/N")]
    NoAddress,
    /// The destination is not on the local subnet and there is no router.
    #[error("{} is not on the local subnet and there is no router", Dotted(*.0))]
    OffSubnet(Ipv4),
    /// Nobody answered the ARP request.
    #[error("no ARP reply from {}", Dotted(*.0))]
    Unresolved(Ipv4),
    /// The payload does not fit one frame.
    #[error("{0} bytes do not fit one datagram")]
    TooLong(usize),
}

/// Shows an IPv4 address as A.B.C.D.
pub struct Dotted(pub Ipv4);

impl core::fmt::Display for Dotted {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

/// The IPv4 side of the card.
pub struct Interface {
    /// Our address, if configured.
    pub address: Option<Address>,
    /// The router for destinations off the subnet (from DHCP).
    pub router: Option<Ipv4>,
    arp: [(Ipv4, Mac); ARP_CACHE],
    arp_next: usize,
    /// ICMP echo requests answered.
    pub echo_replies: u64,
}

impl Interface {
    /// An interface with `address` (None: it answers nothing).
    pub fn new(address: Option<Address>) -> Interface {
        Interface {
            address,
            router: None,
            arp: [([0; 4], [0; 6]); ARP_CACHE],
            arp_next: 0,
            echo_replies: 0,
        }
    }

    /// Handles one received frame addressed to `mac`, answering through `sender`.
    pub fn handle(&mut self, mac: Mac, frame: &[u8], sender: &mut Sender) {
        let Some(address) = self.address else { return };
        let Some(ethernet) = Ethernet::parse(frame) else {
            return;
        };
        if ethernet.destination != mac && ethernet.destination != BROADCAST {
            return;
        }
        match ethernet.ethertype {
            packet::ETHERTYPE_ARP => {
                if let Some(arp) = Arp::parse(ethernet.payload) {
                    self.handle_arp(mac, address.ip, &arp, sender);
                }
            }
            packet::ETHERTYPE_IPV4 => {
                if let Some(ip) = Ipv4Packet::parse(ethernet.payload) {
                    if ip.destination == address.ip && ip.protocol == packet::PROTOCOL_ICMP {
                        self.answer_echo(mac, ethernet.source, &ip, sender);
                    }
                }
            }
            _ => {}
        }
    }

    fn handle_arp(&mut self, mac: Mac, ip: Ipv4, arp: &Arp, sender: &mut Sender) {
        if arp.target_ip != ip {
            return;
        }
        self.learn(arp.sender_ip, arp.sender_mac);
        if arp.operation != packet::ARP_REQUEST {
            return;
        }
        let reply = Arp {
            operation: packet::ARP_REPLY,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: arp.sender_mac,
            target_ip: arp.sender_ip,
        };
        sender.send(|out| {
            let header = packet::write_ethernet(out, arp.sender_mac, mac, packet::ETHERTYPE_ARP);
            header + reply.write(&mut out[header..])
        });
    }

    fn answer_echo(&mut self, mac: Mac, peer: Mac, ip: &Ipv4Packet, sender: &mut Sender) {
        let mut answered = false;
        sender.send(|out| {
            let ethernet = packet::write_ethernet(out, peer, mac, packet::ETHERTYPE_IPV4);
            let icmp_at = ethernet + 20;
            let Some(icmp) = packet::write_echo_reply(&mut out[icmp_at..], ip.payload) else {
                return 0;
            };
            packet::write_ipv4_header(
                &mut out[ethernet..],
                ip.destination,
                ip.source,
                packet::PROTOCOL_ICMP,
                icmp,
            );
            answered = true;
            icmp_at + icmp
        });
        if answered {
            self.echo_replies += 1;
        }
    }

    /// Where a packet to `destination` goes first: there itself on the subnet, else the router.
    pub fn next_hop(&self, destination: Ipv4) -> Result<(Address, Ipv4), SendError> {
        let address = self.address.ok_or(SendError::NoAddress)?;
        if address.same_subnet(destination) {
            return Ok((address, destination));
        }
        let router = self.router.ok_or(SendError::OffSubnet(destination))?;
        Ok((address, router))
    }

    fn learn(&mut self, ip: Ipv4, mac: Mac) {
        if let Some(entry) = self.arp.iter_mut().find(|(known, _)| *known == ip) {
            entry.1 = mac;
            return;
        }
        self.arp[self.arp_next] = (ip, mac);
        self.arp_next = (self.arp_next + 1) % ARP_CACHE;
    }

    fn lookup(&self, ip: Ipv4) -> Option<Mac> {
        self.arp
            .iter()
            .find(|(known, mac)| *known == ip && *mac != [0; 6])
            .map(|&(_, mac)| mac)
    }
}

/// Sends `data` to `destination`:`port` over UDP from `UDP_SOURCE_PORT`, resolving the
/// next hop's MAC with ARP first (serving received frames while waiting).
pub fn send_udp(
    card: &mut NetCard,
    interface: &mut Interface,
    io: &mut Io,
    destination: Ipv4,
    port: u16,
    data: &[u8],
) -> Result<(), SendError> {
    let (address, hop) = interface.next_hop(destination)?;
    if data.len() > 1400 {
        return Err(SendError::TooLong(data.len()));
    }
    let peer = resolve(card, interface, io, hop)?;
    let mac = card.mac;
    card.send(io, |out| {
        let ethernet = packet::write_ethernet(out, peer, mac, packet::ETHERTYPE_IPV4);
        let udp = packet::write_udp(
            &mut out[ethernet + 20..],
            (address.ip, UDP_SOURCE_PORT),
            (destination, port),
            data,
        );
        packet::write_ipv4_header(
            &mut out[ethernet..],
            address.ip,
            destination,
            packet::PROTOCOL_UDP,
            udp,
        );
        ethernet + 20 + udp
    });
    io.flush();
    Ok(())
}

/// The MAC of `target` (on the subnet): from the cache, else by ARP (one request, up to a
/// second's wait).
pub fn resolve(
    card: &mut NetCard,
    interface: &mut Interface,
    io: &mut Io,
    target: Ipv4,
) -> Result<Mac, SendError> {
    if let Some(mac) = interface.lookup(target) {
        return Ok(mac);
    }
    let own_ip = interface.address.ok_or(SendError::NoAddress)?.ip;
    let mac = card.mac;
    let request = Arp {
        operation: packet::ARP_REQUEST,
        sender_mac: mac,
        sender_ip: own_ip,
        target_mac: [0; 6],
        target_ip: target,
    };
    card.send(io, |out| {
        let header = packet::write_ethernet(out, BROADCAST, mac, packet::ETHERTYPE_ARP);
        header + request.write(&mut out[header..])
    });
    poll(card, interface, io, ARP_TIMEOUT_TICKS, |frame, _| {
        Ethernet::parse(frame)
            .filter(|ethernet| ethernet.ethertype == packet::ETHERTYPE_ARP)
            .and_then(|ethernet| Arp::parse(ethernet.payload))
            .is_some_and(|arp| arp.sender_ip == target)
    });
    interface
        .lookup(target)
        .ok_or(SendError::Unresolved(target))
}

/// Serves received frames for up to `timeout` ticks: each goes to `interface` (ARP and echo
/// answers), then to `inspect` with a sender for answers. Returns true as soon as `inspect`
/// does (after the rest of that batch), false at the timeout.
pub fn poll(
    card: &mut NetCard,
    interface: &mut Interface,
    io: &mut Io,
    timeout: u64,
    mut inspect: impl FnMut(&[u8], &mut Sender) -> bool,
) -> bool {
    let mac = card.mac;
    let deadline = ticks::now() + timeout;
    let any = arch::irq_total_count();
    loop {
        let seen = any.load(core::sync::atomic::Ordering::SeqCst);
        let mut done = false;
        card.receive(io, |frame, sender| {
            interface.handle(mac, frame, sender);
            done |= inspect(frame, sender);
        });
        io.flush();
        if done {
            return true;
        }
        if ticks::now() >= deadline {
            return false;
        }
        let idle = card.prepare_sleep(io);
        io.flush();
        if idle {
            arch::wait_until_changed(any, seen);
        }
    }
}
