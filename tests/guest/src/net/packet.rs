//! Frame formats the network stack speaks, parsed and built in place over byte slices:
//! Ethernet II, ARP for IPv4 over Ethernet, IPv4 (no options sent, none required received),
//! ICMP echo, UDP, TCP segments (no options); and the internet checksum. Pure functions, no
//! device access.

/// An Ethernet address.
pub type Mac = [u8; 6];
/// An IPv4 address.
pub type Ipv4 = [u8; 4];

/// The broadcast Ethernet address.
pub const BROADCAST: Mac = [0xff; 6];
/// Ethernet header bytes.
pub const ETHERNET_HEADER: usize = 14;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// IP protocol number of ICMP.
pub const PROTOCOL_ICMP: u8 = 1;
/// IP protocol number of UDP.
pub const PROTOCOL_UDP: u8 = 17;
/// IP protocol number of TCP.
pub const PROTOCOL_TCP: u8 = 6;
/// ARP operation: request.
pub const ARP_REQUEST: u16 = 1;
/// ARP operation: reply.
pub const ARP_REPLY: u16 = 2;
/// ICMP type: echo reply.
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP type: echo request.
pub const ICMP_ECHO_REQUEST: u8 = 8;

const ARP_BYTES: usize = 28;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
/// Bytes of a TCP header without options.
pub const TCP_HEADER: usize = 20;
const DEFAULT_TTL: u8 = 64;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// The ones'-complement sum of `bytes` (odd length padded with zero) added to `initial`,
/// folded and complemented: the internet checksum (RFC 1071).
pub fn checksum(initial: u32, bytes: &[u8]) -> u16 {
    let mut sum = initial;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame's destination, source, EtherType and payload.
pub struct Ethernet<'a> {
    /// Destination address.
    pub destination: Mac,
    /// Source address.
    pub source: Mac,
    /// EtherType.
    pub ethertype: u16,
    /// What follows the header.
    pub payload: &'a [u8],
}

impl<'a> Ethernet<'a> {
    /// Parses a frame (None if shorter than the header).
    pub fn parse(frame: &'a [u8]) -> Option<Ethernet<'a>> {
        Some(Ethernet {
            destination: frame.get(0..6)?.try_into().ok()?,
            source: frame.get(6..12)?.try_into().ok()?,
            ethertype: u16_at(frame, 12)?,
            payload: frame.get(ETHERNET_HEADER..)?,
        })
    }
}

/// Writes an Ethernet header into `out`; returns its length.
pub fn write_ethernet(out: &mut [u8], destination: Mac, source: Mac, ethertype: u16) -> usize {
    out[0..6].copy_from_slice(&destination);
    out[6..12].copy_from_slice(&source);
    put_u16(out, 12, ethertype);
    ETHERNET_HEADER
}

/// An ARP packet for IPv4 over Ethernet.
pub struct Arp {
    /// ARP_REQUEST or ARP_REPLY.
    pub operation: u16,
    /// Sender hardware address.
    pub sender_mac: Mac,
    /// Sender protocol address.
    pub sender_ip: Ipv4,
    /// Target hardware address.
    pub target_mac: Mac,
    /// Target protocol address.
    pub target_ip: Ipv4,
}

impl Arp {
    /// Parses ARP for IPv4 over Ethernet (None for anything else).
    pub fn parse(payload: &[u8]) -> Option<Arp> {
        let ethernet_ipv4 = u16_at(payload, 0)? == 1
            && u16_at(payload, 2)? == ETHERTYPE_IPV4
            && payload.get(4..6)? == [6, 4];
        ethernet_ipv4.then_some(())?;
        Some(Arp {
            operation: u16_at(payload, 6)?,
            sender_mac: payload.get(8..14)?.try_into().ok()?,
            sender_ip: payload.get(14..18)?.try_into().ok()?,
            target_mac: payload.get(18..24)?.try_into().ok()?,
            target_ip: payload.get(24..28)?.try_into().ok()?,
        })
    }

    /// Writes the packet into `out`; returns its length.
    pub fn write(&self, out: &mut [u8]) -> usize {
        put_u16(out, 0, 1);
        put_u16(out, 2, ETHERTYPE_IPV4);
        out[4] = 6;
        out[5] = 4;
        put_u16(out, 6, self.operation);
        out[8..14].copy_from_slice(&self.sender_mac);
        out[14..18].copy_from_slice(&self.sender_ip);
        out[18..24].copy_from_slice(&self.target_mac);
        out[24..28].copy_from_slice(&self.target_ip);
        ARP_BYTES
    }
}

/// An IPv4 packet's addresses, protocol and payload (header checksum verified).
pub struct Ipv4Packet<'a> {
    /// Source address.
    pub source: Ipv4,
    /// Destination address.
    pub destination: Ipv4,
    /// Protocol number.
    pub protocol: u8,
    /// What follows the header (total length honoured).
    pub payload: &'a [u8],
}

impl<'a> Ipv4Packet<'a> {
    /// Parses an unfragmented IPv4 packet with a valid header checksum.
    pub fn parse(packet: &'a [u8]) -> Option<Ipv4Packet<'a>> {
        let version_ihl = *packet.first()?;
        let header = usize::from(version_ihl & 0x0f) * 4;
        if version_ihl >> 4 != 4 || header < IPV4_HEADER {
            return None;
        }
        let total = usize::from(u16_at(packet, 2)?);
        let fragmented = u16_at(packet, 6)? & 0x3fff != 0;
        if fragmented || total < header || checksum(0, packet.get(..header)?) != 0 {
            return None;
        }
        Some(Ipv4Packet {
            source: packet.get(12..16)?.try_into().ok()?,
            destination: packet.get(16..20)?.try_into().ok()?,
            protocol: packet[9],
            payload: packet.get(header..total)?,
        })
    }
}

/// Writes a 20-byte IPv4 header for `payload_len` bytes of `protocol`; returns its length.
pub fn write_ipv4_header(
    out: &mut [u8],
    source: Ipv4,
    destination: Ipv4,
    protocol: u8,
    payload_len: usize,
) -> usize {
    out[0] = 0x45;
    out[1] = 0;
    put_u16(out, 2, (IPV4_HEADER + payload_len) as u16);
    put_u16(out, 4, 0); // identification
    put_u16(out, 6, 0x4000); // don't fragment
    out[8] = DEFAULT_TTL;
    out[9] = protocol;
    put_u16(out, 10, 0);
    out[12..16].copy_from_slice(&source);
    out[16..20].copy_from_slice(&destination);
    let sum = checksum(0, &out[..IPV4_HEADER]);
    put_u16(out, 10, sum);
    IPV4_HEADER
}

/// Writes the echo reply to the ICMP echo request `request` into `out`; returns its length
/// (None if `request` is not an echo request or does not fit).
pub fn write_echo_reply(out: &mut [u8], request: &[u8]) -> Option<usize> {
    if request.len() < 8 || request[0] != ICMP_ECHO_REQUEST || checksum(0, request) != 0 {
        return None;
    }
    let reply = out.get_mut(..request.len())?;
    reply.copy_from_slice(request);
    reply[0] = ICMP_ECHO_REPLY;
    put_u16(reply, 2, 0);
    let sum = checksum(0, reply);
    put_u16(reply, 2, sum);
    Some(request.len())
}

/// Writes a UDP datagram (header with checksum, then `data`) into `out`; returns its length.
pub fn write_udp(
    out: &mut [u8],
    source: (Ipv4, u16),
    destination: (Ipv4, u16),
    data: &[u8],
) -> usize {
    let len = UDP_HEADER + data.len();
    put_u16(out, 0, source.1);
    put_u16(out, 2, destination.1);
    put_u16(out, 4, len as u16);
    put_u16(out, 6, 0);
    out[UDP_HEADER..len].copy_from_slice(data);
    let pseudo = pseudo_header_sum(source.0, destination.0, PROTOCOL_UDP, len);
    let sum = match checksum(pseudo, &out[..len]) {
        0 => 0xffff, // 0 means "no checksum" in UDP
        sum => sum,
    };
    put_u16(out, 6, sum);
    len
}

fn pseudo_header_sum(source: Ipv4, destination: Ipv4, protocol: u8, len: usize) -> u32 {
    let words = [
        u16::from_be_bytes([source[0], source[1]]),
        u16::from_be_bytes([source[2], source[3]]),
        u16::from_be_bytes([destination[0], destination[1]]),
        u16::from_be_bytes([destination[2], destination[3]]),
        u16::from(protocol),
        len as u16,
    ];
    words.iter().map(|&w| u32::from(w)).sum()
}

/// A UDP datagram's destination port and data (the checksum is not checked).
pub struct Udp<'a> {
    /// Destination port.
    pub destination_port: u16,
    /// The data.
    pub data: &'a [u8],
}

impl<'a> Udp<'a> {
    /// Parses a datagram (None if its length field does not fit).
    pub fn parse(payload: &'a [u8]) -> Option<Udp<'a>> {
        let len = usize::from(u16_at(payload, 4)?);
        Some(Udp {
            destination_port: u16_at(payload, 2)?,
            data: payload.get(UDP_HEADER..len)?,
        })
    }
}

/// TCP flag: no more data from the sender.
pub const TCP_FIN: u8 = 0x01;
/// TCP flag: synchronize sequence numbers.
pub const TCP_SYN: u8 = 0x02;
/// TCP flag: reset the connection.
pub const TCP_RST: u8 = 0x04;
/// TCP flag: push.
pub const TCP_PSH: u8 = 0x08;
/// TCP flag: the acknowledgment field is valid.
pub const TCP_ACK: u8 = 0x10;

/// A TCP segment's header fields and data.
pub struct Tcp<'a> {
    /// Source port.
    pub source_port: u16,
    /// Destination port.
    pub destination_port: u16,
    /// Sequence number.
    pub sequence: u32,
    /// Acknowledgment number.
    pub acknowledgment: u32,
    /// TCP_* flags.
    pub flags: u8,
    /// The data after the header and its options.
    pub data: &'a [u8],
}

impl<'a> Tcp<'a> {
    /// Parses a segment sent from `source` to `destination`, checking its checksum.
    pub fn parse(segment: &'a [u8], source: Ipv4, destination: Ipv4) -> Option<Tcp<'a>> {
        let header = usize::from(segment.get(12)? >> 4) * 4;
        let pseudo = pseudo_header_sum(source, destination, PROTOCOL_TCP, segment.len());
        if header < TCP_HEADER || checksum(pseudo, segment) != 0 {
            return None;
        }
        let word = |at| {
            Some(u32::from_be_bytes(
                segment.get(at..at + 4)?.try_into().ok()?,
            ))
        };
        Some(Tcp {
            source_port: u16_at(segment, 0)?,
            destination_port: u16_at(segment, 2)?,
            sequence: word(4)?,
            acknowledgment: word(8)?,
            flags: segment[13],
            data: segment.get(header..)?,
        })
    }
}

/// Writes a TCP segment without options (window 8 KiB) carrying `data` into `out`; returns
/// its length.
pub fn write_tcp(out: &mut [u8], from: (Ipv4, u16), to: (Ipv4, u16), segment: &Tcp) -> usize {
    let len = TCP_HEADER + segment.data.len();
    put_u16(out, 0, from.1);
    put_u16(out, 2, to.1);
    out[4..8].copy_from_slice(&segment.sequence.to_be_bytes());
    out[8..12].copy_from_slice(&segment.acknowledgment.to_be_bytes());
    out[12] = (TCP_HEADER as u8 / 4) << 4;
    out[13] = segment.flags;
    put_u16(out, 14, 8192);
    put_u16(out, 16, 0);
    put_u16(out, 18, 0);
    out[TCP_HEADER..len].copy_from_slice(segment.data);
    let sum = checksum(
        pseudo_header_sum(from.0, to.0, PROTOCOL_TCP, len),
        &out[..len],
    );
    put_u16(out, 16, sum);
    len
}
