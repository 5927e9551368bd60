//! Networking for the shell: a virtio-net card (`card`), the frames it speaks (`packet`), and
//! the IPv4 interface on it (`stack`): ARP and ICMP echo answered while the shell is idle,
//! UDP sent on request. `net` commands are listed in README.md.

pub mod card;
pub mod packet;
pub mod stack;

use card::NetCard;
use stack::{Address, Dotted, Interface};

use crate::console;
use crate::io::Io;

/// The card and the interface on it.
pub struct Net {
    card: NetCard,
    interface: Interface,
}

impl Net {
    /// Puts the interface (`address` from `vireo.ip=`) on `card`.
    pub fn new(card: NetCard, address: Option<Address>) -> Net {
        Net {
            card,
            interface: Interface::new(address),
        }
    }

    /// The card's MAC address.
    pub fn mac(&self) -> packet::Mac {
        self.card.mac
    }

    /// The interface's address (`vireo.ip=`), if any.
    pub fn address(&self) -> Option<Address> {
        self.interface.address
    }

    /// Answers whatever arrived and announces link changes (`eth0: link up|down`). Returns
    /// whether anything happened.
    pub fn service(&mut self, io: &mut Io) -> bool {
        let link = self.card.link_change(io);
        if let Some(up) = link {
            crate::say!(io, "eth0: link {}", if up { "up" } else { "down" });
        }
        let Net { card, interface } = self;
        let mac = card.mac;
        let received = card.receive(io, |frame, sender| interface.handle(mac, frame, sender));
        io.flush();
        received || link.is_some()
    }

    /// Before the shell sleeps (see `NetCard::prepare_sleep`).
    pub fn prepare_sleep(&mut self, io: &mut Io) -> bool {
        self.card.prepare_sleep(io)
    }

    /// The shell's `net` command: `info`, or `udp DESTIP PORT TEXT`.
    pub fn command(&mut self, io: &mut Io, args: &str) {
        let mut words = args.splitn(4, ' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("info"), None, None, None) => self.info(io),
            (Some("udp"), Some(ip), Some(port), text) => {
                let (Some(ip), Ok(port)) = (stack::parse_ip(ip), port.parse::<u16>()) else {
                    return usage(io);
                };
                let text = text.unwrap_or("");
                let sent = stack::send_udp(
                    &mut self.card,
                    &mut self.interface,
                    io,
                    ip,
                    port,
                    text.as_bytes(),
                );
                match sent {
                    Ok(()) => console::line(
                        io,
                        format_args!("udp sent {} bytes to {}:{port}", text.len(), Dotted(ip)),
                    ),
                    Err(error) => console::line(io, format_args!("error: {error}")),
                }
            }
            _ => usage(io),
        }
    }

    fn info(&self, io: &mut Io) {
        let up = self.card.link_up(io);
        let [a, b, c, d, e, f] = self.card.mac;
        let mut out = console::out(io);
        use core::fmt::Write as _;
        let _ = write!(
            out,
            "net mac={a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x} ip="
        );
        let _ = match self.interface.address {
            Some(address) => write!(out, "{}/{}", Dotted(address.ip), address.prefix),
            None => write!(out, "none"),
        };
        let _ = writeln!(
            out,
            " link={} rx={} tx={} echo={}",
            if up { "up" } else { "down" },
            self.card.rx_frames,
            self.card.tx_frames,
            self.interface.echo_replies
        );
    }
}

fn usage(io: &mut Io) {
    console::line(
        io,
        format_args!("error: usage: net info | net udp DESTIP PORT TEXT"),
    );
}
