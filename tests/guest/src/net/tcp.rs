//! A one-shot TCP client for `net get`: connect (SYN, retried), send an HTTP/1.0 GET, take the
//! in-order data the server sends (acknowledging each segment; out-of-order ones are answered
//! with the expected sequence number), until the server's FIN; then FIN in return. Keeps the
//! first bytes of the response and counts the rest. Destinations off the subnet go through the
//! router (so through vireod's NAT).

use core::fmt::Write as _;

use super::card::{NetCard, Sender};
use super::packet::{self, Ethernet, Ipv4, Ipv4Packet, Mac, Tcp};
use super::stack::{self, Interface, SendError};
use crate::io::Io;
use crate::ticks;

/// How long to wait for the SYN-ACK before sending SYN again (1 s), and how often.
const SYN_TICKS: u64 = ticks::HZ;
const SYN_ATTEMPTS: usize = 3;
/// How long the whole response may take (10 s).
const RESPONSE_TICKS: u64 = 10 * ticks::HZ;
/// How long to wait for data before sending the request again if it is not acknowledged.
const RETRANSMIT_TICKS: u64 = ticks::HZ / 2;
/// Bytes of the response kept for the caller.
pub const KEPT: usize = 512;

/// What the server answered.
pub struct Response {
    /// The first `KEPT` bytes of the response (status line, headers, start of the body).
    pub head: [u8; KEPT],
    /// How many of `head` hold data.
    pub kept: usize,
    /// Bytes received in all.
    pub total: usize,
}

/// Why the fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No route or no ARP answer.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The request does not fit one segment.
    #[error("the request does not fit one segment")]
    TooLong,
    /// The server did not answer the SYN.
    #[error("no answer to SYN")]
    NoAnswer,
    /// The server reset the connection.
    #[error("connection reset")]
    Reset,
    /// The response did not end in time.
    #[error("the response did not end in time ({0} bytes)")]
    TimedOut(usize),
}

/// The connection's addresses and sequence state.
struct Connection {
    mac: Mac,
    peer_mac: Mac,
    local: (Ipv4, u16),
    remote: (Ipv4, u16),
    /// Next sequence number we send.
    send_next: u32,
    /// Highest sequence number the server acknowledged.
    acknowledged: u32,
    /// Next sequence number we expect.
    receive_next: u32,
    reset: bool,
    finished: bool,
}

impl Connection {
    fn segment(&self, sender: &mut Sender, sequence: u32, flags: u8, data: &[u8]) {
        let segment = Tcp {
            source_port: self.local.1,
            destination_port: self.remote.1,
            sequence,
            acknowledgment: self.receive_next,
            flags,
            data,
        };
        sender.send(|out| {
            let ethernet =
                packet::write_ethernet(out, self.peer_mac, self.mac, packet::ETHERTYPE_IPV4);
            let len =
                packet::write_tcp(&mut out[ethernet + 20..], self.local, self.remote, &segment);
            packet::write_ipv4_header(
                &mut out[ethernet..],
                self.local.0,
                self.remote.0,
                packet::PROTOCOL_TCP,
                len,
            );
            ethernet + 20 + len
        });
    }

    /// The segment in `frame` if it belongs to this connection.
    fn ours<'a>(&self, frame: &'a [u8]) -> Option<Tcp<'a>> {
        let ethernet = Ethernet::parse(frame)?;
        if ethernet.ethertype != packet::ETHERTYPE_IPV4 || ethernet.destination != self.mac {
            return None;
        }
        let ip = Ipv4Packet::parse(ethernet.payload)?;
        if ip.protocol != packet::PROTOCOL_TCP || ip.source != self.remote.0 {
            return None;
        }
        let tcp = Tcp::parse(ip.payload, ip.source, ip.destination)?;
        (tcp.source_port == self.remote.1 && tcp.destination_port == self.local.1).then_some(tcp)
    }

    /// Takes one segment of the response: data in order goes to `response`, everything is
    /// acknowledged. Returns whether the connection ended (FIN or RST).
    fn take(&mut self, tcp: &Tcp, response: &mut Response, sender: &mut Sender) -> bool {
        if tcp.flags & packet::TCP_RST != 0 {
            self.reset = true;
            return true;
        }
        if tcp.flags & packet::TCP_ACK != 0
            && tcp.acknowledgment.wrapping_sub(self.acknowledged) as i32 > 0
        {
            self.acknowledged = tcp.acknowledgment;
        }
        if tcp.sequence == self.receive_next {
            let room = KEPT - response.kept;
            let keep = tcp.data.len().min(room);
            response.head[response.kept..response.kept + keep].copy_from_slice(&tcp.data[..keep]);
            response.kept += keep;
            response.total += tcp.data.len();
            self.receive_next = self.receive_next.wrapping_add(tcp.data.len() as u32);
            if tcp.flags & packet::TCP_FIN != 0 {
                self.receive_next = self.receive_next.wrapping_add(1);
                self.finished = true;
            }
        }
        if !tcp.data.is_empty() || tcp.flags & packet::TCP_FIN != 0 {
            self.segment(sender, self.send_next, packet::TCP_ACK, &[]);
        }
        self.finished
    }
}

/// Fetches `path` from `ip`:`port` over HTTP/1.0.
pub fn http_get(
    card: &mut NetCard,
    interface: &mut Interface,
    io: &mut Io,
    remote: (Ipv4, u16),
    path: &str,
) -> Result<Response, FetchError> {
    let mut request = Request {
        bytes: [0; 256],
        len: 0,
    };
    let [a, b, c, d] = remote.0;
    write!(
        request,
        "GET {path} HTTP/1.0\r\nHost: {a}.{b}.{c}.{d}\r\n\r\n"
    )
    .map_err(|_| FetchError::TooLong)?;
    let (address, hop) = interface.next_hop(remote.0)?;
    let peer_mac = stack::resolve(card, interface, io, hop)?;
    let now = ticks::now() as u32;
    let initial = now.wrapping_mul(2_654_435_761);
    let mut connection = Connection {
        mac: card.mac,
        peer_mac,
        local: (address.ip, 49152 + (now % 16384) as u16),
        remote,
        send_next: initial.wrapping_add(1),
        acknowledged: initial,
        receive_next: 0,
        reset: false,
        finished: false,
    };
    connect(card, interface, io, &mut connection, initial)?;
    let data = request.bytes();
    let mut response = Response {
        head: [0; KEPT],
        kept: 0,
        total: 0,
    };
    let deadline = ticks::now() + RESPONSE_TICKS;
    let request_start = connection.send_next;
    connection.send_next = request_start.wrapping_add(data.len() as u32);
    while !connection.finished && !connection.reset {
        if ticks::now() >= deadline {
            return Err(FetchError::TimedOut(response.total));
        }
        if connection.acknowledged != connection.send_next {
            send_with(card, io, |sender| {
                let flags = packet::TCP_ACK | packet::TCP_PSH;
                connection.segment(sender, request_start, flags, data);
            });
        }
        stack::poll(
            card,
            interface,
            io,
            RETRANSMIT_TICKS,
            |frame, sender| match connection.ours(frame) {
                Some(tcp) => connection.take(&tcp, &mut response, sender),
                None => false,
            },
        );
    }
    if connection.reset {
        return Err(FetchError::Reset);
    }
    send_with(card, io, |sender| {
        connection.segment(
            sender,
            connection.send_next,
            packet::TCP_FIN | packet::TCP_ACK,
            &[],
        );
    });
    Ok(response)
}

/// SYN until a SYN-ACK for `initial` arrives; then the connection is established.
fn connect(
    card: &mut NetCard,
    interface: &mut Interface,
    io: &mut Io,
    connection: &mut Connection,
    initial: u32,
) -> Result<(), FetchError> {
    for _ in 0..SYN_ATTEMPTS {
        send_with(card, io, |sender| {
            connection.segment(sender, initial, packet::TCP_SYN, &[]);
        });
        let mut answer = None;
        stack::poll(card, interface, io, SYN_TICKS, |frame, _| {
            if let Some(tcp) = connection.ours(frame) {
                answer = Some((tcp.flags, tcp.sequence, tcp.acknowledgment));
            }
            answer.is_some()
        });
        match answer {
            Some((flags, _, _)) if flags & packet::TCP_RST != 0 => return Err(FetchError::Reset),
            Some((flags, sequence, ack))
                if flags & (packet::TCP_SYN | packet::TCP_ACK)
                    == packet::TCP_SYN | packet::TCP_ACK
                    && ack == initial.wrapping_add(1) =>
            {
                connection.receive_next = sequence.wrapping_add(1);
                connection.acknowledged = ack;
                send_with(card, io, |sender| {
                    connection.segment(sender, connection.send_next, packet::TCP_ACK, &[]);
                });
                return Ok(());
            }
            _ => {}
        }
    }
    Err(FetchError::NoAnswer)
}

/// Runs `send` with the card's sender.
fn send_with(card: &mut NetCard, io: &mut Io, send: impl FnOnce(&mut Sender)) {
    card.with_sender(io, send);
    io.flush();
}

/// The request line and headers, built in place.
struct Request {
    bytes: [u8; 256],
    len: usize,
}

impl Request {
    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl core::fmt::Write for Request {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        let end = self.len + text.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}
