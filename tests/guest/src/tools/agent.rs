//! The guest side of the tools protocol (docs/tools-protocol.md), behaving like vireo-tools:
//! hello and guest-info when it starts and when the host says hello, a heartbeat every
//! second, the host's requests answered (power requests handed to the caller to carry out)
//! and its guest operations served by `guest_ops`.

use core::fmt::{self, Write as _};

use super::guest_ops;
use super::json::{Escaped, Fields, Malformed, Value, MAX_TEXT};
use crate::net::packet::Mac;
use crate::net::stack::{Address, Dotted};
use crate::ticks;

/// The protocol version both hellos carry (2: guest operations).
const PROTOCOL_VERSION: u32 = 2;
/// Our tools version (guest.toolsVersion).
const TOOLS_VERSION: &str = "0.1.0";
/// Ticks between heartbeats (the protocol's one second).
const HEARTBEAT_TICKS: u64 = ticks::HZ;
/// What guest-info reports.
const HOSTNAME: &str = "vireo-test-guest";
const OS_NAME: &str = "Vireo test guest 0.1.0";
const OS_FAMILY: &str = "other";
/// The one NIC's name in guest-info.
const NIC_NAME: &str = "eth0";
/// Longest host line kept; longer lines are skipped whole (a file chunk of
/// [`guest_ops::CHUNK_BYTES`] in base64 is the longest a host sends).
const LINE_CAPACITY: usize = 4096;
/// Longest line we send (a chunk read back, a page of a file listing).
const OUT_CAPACITY: usize = 4096;

/// A power operation the host asked for, already replied to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PowerRequest {
    /// ACPI S5.
    Off,
    /// Reset.
    Reboot,
}

/// What the agent needs from the guest around it.
pub trait Link {
    /// Sends bytes to the host.
    fn send(&mut self, bytes: &[u8]);
    /// Flushes every disk's write cache; false if a disk failed.
    fn flush_disks(&mut self) -> bool;
    /// Shows a line on the console.
    fn say(&mut self, line: fmt::Arguments);
    /// The wall clock in Unix seconds, if the guest has a valid one.
    fn wall_clock(&mut self) -> Option<u64>;
}

/// The network card guest-info describes.
#[derive(Clone, Copy)]
pub struct Nic {
    /// Its MAC address.
    pub mac: Mac,
    /// Its address from `vireo.ip=`, if any.
    pub address: Option<Address>,
}

/// What the host can ask for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Operation {
    Shutdown,
    Reboot,
    Standby,
    Freeze,
    Thaw,
    RefreshInfo,
}

impl Operation {
    fn from_name(name: &str) -> Option<Operation> {
        Some(match name {
            "shutdown" => Operation::Shutdown,
            "reboot" => Operation::Reboot,
            "standby" => Operation::Standby,
            "freeze" => Operation::Freeze,
            "thaw" => Operation::Thaw,
            "refresh-info" => Operation::RefreshInfo,
            _ => return None,
        })
    }
}

/// A message from the host.
#[derive(PartialEq, Eq, Debug)]
enum HostMessage {
    Hello,
    Request { id: u64, op: Operation },
}

/// Reads one host line; `None` for anything malformed or unknown (the protocol skips those).
fn parse(line: &[u8]) -> Option<HostMessage> {
    parse_fields(line).ok().flatten()
}

fn parse_fields(line: &[u8]) -> Result<Option<HostMessage>, Malformed> {
    let mut fields = Fields::new(line)?;
    let (mut hello, mut request, mut known) = (false, false, true);
    let (mut protocol, mut id, mut op) = (false, None, None);
    let (mut key, mut text) = ([0u8; MAX_TEXT], [0u8; MAX_TEXT]);
    while let Some((name, value)) = fields.next(&mut key, &mut text)? {
        match (name, value) {
            ("msg", Value::Text("hello")) => hello = true,
            ("msg", Value::Text("request")) => request = true,
            ("protocol", Value::Number(_)) => protocol = true,
            ("id", Value::Number(n)) => id = Some(n),
            ("op", Value::Text(name)) => {
                op = Operation::from_name(name);
                known &= op.is_some();
            }
            ("msg" | "protocol" | "id" | "op", _) => known = false,
            _ => {}
        }
    }
    Ok(match (known, hello, request, id, op) {
        (true, true, false, _, _) if protocol => Some(HostMessage::Hello),
        (true, false, true, Some(id), Some(op)) => Some(HostMessage::Request { id, op }),
        _ => None,
    })
}

/// Collects host bytes into lines.
struct LineAssembler {
    line: [u8; LINE_CAPACITY],
    len: usize,
    too_long: bool,
}

impl LineAssembler {
    /// Takes one byte; returns the finished line at `\n` (not for over-long lines).
    fn push(&mut self, byte: u8) -> Option<&[u8]> {
        if byte == b'\n' {
            let len = core::mem::take(&mut self.len);
            return (!core::mem::take(&mut self.too_long)).then(|| &self.line[..len]);
        }
        match self.line.get_mut(self.len) {
            Some(slot) => {
                *slot = byte;
                self.len += 1;
            }
            None => self.too_long = true,
        }
        None
    }
}

/// One outgoing line being formatted; over-long text is cut (our facts never come close).
struct OutLine {
    bytes: [u8; OUT_CAPACITY],
    len: usize,
}

impl OutLine {
    fn new() -> OutLine {
        OutLine {
            bytes: [0; OUT_CAPACITY],
            len: 0,
        }
    }

    /// Ends the line and sends it.
    fn send(mut self, link: &mut impl Link) {
        if self.write_str("\n").is_err() {
            // Cut short: end the line anyway so the host skips just this one.
            self.bytes[OUT_CAPACITY - 1] = b'\n';
        }
        link.send(&self.bytes[..self.len]);
    }
}

impl fmt::Write for OutLine {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = OUT_CAPACITY - self.len;
        let take = s.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// The protocol state.
pub struct Agent {
    nic: Option<Nic>,
    input: LineAssembler,
    next_beat: u64,
    /// Heartbeats sent.
    pub beats: u64,
    frozen: bool,
    standby: bool,
}

impl Agent {
    /// An agent reporting `nic`, accepting standby requests with `standby` (`vireo.standby=ok`
    /// on the command line: the disks are flushed and the host suspends the VM); call
    /// [`Agent::start`] to say hello.
    pub fn new(nic: Option<Nic>, standby: bool) -> Agent {
        Agent {
            nic,
            standby,
            input: LineAssembler {
                line: [0; LINE_CAPACITY],
                len: 0,
                too_long: false,
            },
            next_beat: 0,
            beats: 0,
            frozen: false,
        }
    }

    /// Announces the guest (hello, guest-info) and schedules the first beat.
    pub fn start(&mut self, link: &mut impl Link) {
        self.introduce(link);
        self.next_beat = ticks::now() + HEARTBEAT_TICKS;
    }

    /// Sends a heartbeat if one is due (the next one a second later, not a burst after a
    /// long shell command). Returns whether it did.
    pub fn beat(&mut self, link: &mut impl Link) -> bool {
        let now = ticks::now();
        if now < self.next_beat {
            return false;
        }
        self.beats += 1;
        let seq = self.beats;
        emit(link, |out| {
            write!(out, r#"{{"msg":"heartbeat","seq":{seq}}}"#)
        });
        self.next_beat = now + HEARTBEAT_TICKS;
        true
    }

    /// Takes host bytes; answers every complete message. Stops at (and returns) a power
    /// request, which has been replied to; later bytes are dropped, the guest is going away.
    pub fn receive(&mut self, bytes: &[u8], link: &mut impl Link) -> Option<PowerRequest> {
        for &byte in bytes {
            let Some(line) = self.input.push(byte) else {
                continue;
            };
            if let Some(request) = guest_ops::parse(line) {
                let mut out = OutLine::new();
                let wall_clock = link.wall_clock();
                let _ =
                    guest_ops::answer(&request, wall_clock, &mut out, &mut |text| link.say(text));
                out.send(link);
                continue;
            }
            let Some(message) = parse(line) else {
                continue;
            };
            if let Some(power) = self.handle(message, link) {
                return Some(power);
            }
        }
        None
    }

    fn handle(&mut self, message: HostMessage, link: &mut impl Link) -> Option<PowerRequest> {
        let HostMessage::Request { id, op } = message else {
            self.introduce(link);
            return None;
        };
        let (result, power) = match op {
            Operation::Shutdown => (Ok(()), Some(PowerRequest::Off)),
            Operation::Reboot => (Ok(()), Some(PowerRequest::Reboot)),
            Operation::Standby if !self.standby => {
                (Err("standby is not supported by this guest"), None)
            }
            Operation::Standby if !link.flush_disks() => (Err("flushing the disks failed"), None),
            Operation::Standby => (Ok(()), None),
            Operation::Freeze => (self.freeze(link), None),
            Operation::Thaw => {
                self.frozen = false;
                (Ok(()), None)
            }
            Operation::RefreshInfo => {
                self.guest_info(link);
                (Ok(()), None)
            }
        };
        reply(link, id, result);
        power
    }

    /// Freezing a guest without filesystems: every disk's write cache is flushed, so a
    /// snapshot taken now holds everything written so far.
    fn freeze(&mut self, link: &mut impl Link) -> Result<(), &'static str> {
        if self.frozen {
            return Err("the guest is already frozen");
        }
        if !link.flush_disks() {
            return Err("flushing the disks failed");
        }
        self.frozen = true;
        Ok(())
    }

    fn introduce(&mut self, link: &mut impl Link) {
        emit(link, |out| {
            write!(
                out,
                r#"{{"msg":"hello","protocol":{PROTOCOL_VERSION},"tools_version":"{TOOLS_VERSION}","guest_ops":{{"chunk_bytes":{}}}}}"#,
                guest_ops::CHUNK_BYTES
            )
        });
        self.guest_info(link);
    }

    fn guest_info(&self, link: &mut impl Link) {
        let nic = self.nic;
        emit(link, |out| {
            write!(
                out,
                r#"{{"msg":"guest-info","hostname":"{HOSTNAME}","os_name":"{OS_NAME}","os_family":"{OS_FAMILY}","nics":["#
            )?;
            if let Some(nic) = nic {
                let [a, b, c, d, e, f] = nic.mac;
                write!(
                    out,
                    r#"{{"name":"{NIC_NAME}","mac":"{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}","ips":["#
                )?;
                if let Some(address) = nic.address {
                    write!(out, r#""{}/{}""#, Dotted(address.ip), address.prefix)?;
                }
                out.write_str("]}")?;
            }
            out.write_str("]}")
        });
    }
}

fn reply(link: &mut impl Link, id: u64, result: Result<(), &str>) {
    emit(link, |out| match result {
        Ok(()) => write!(out, r#"{{"msg":"reply","id":{id},"ok":true}}"#),
        Err(error) => write!(
            out,
            r#"{{"msg":"reply","id":{id},"ok":false,"error":"{}"}}"#,
            Escaped(error)
        ),
    });
}

/// Formats one message and sends it as a line.
fn emit(link: &mut impl Link, format: impl FnOnce(&mut OutLine) -> fmt::Result) {
    let mut out = OutLine::new();
    let _ = format(&mut out);
    out.send(link);
}
