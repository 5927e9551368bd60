//! The tools protocol: UTF-8 JSON objects, one per `\n`-terminated line, each tagged by `msg`.
//! The guest says hello, describes itself and beats; the host says hello and sends numbered
//! requests that the guest answers with replies. Lines that do not parse are skipped, so either
//! side may add message kinds and fields later.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::guest_ops::wire::{GuestAuth, GuestOp, GuestOpReply, GuestOpsOffer};

/// Version of this protocol; sent in both hellos (2 added guest operations).
pub const PROTOCOL_VERSION: u32 = 2;

/// The version of these tools (guest.toolsVersion), which vireod's own copy compares a guest's with.
pub const TOOLS_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Longest line either side accepts; longer lines are skipped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How often the guest beats unless told otherwise.
pub const HEARTBEAT_INTERVAL_MS: u64 = 1000;

/// What the guest sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum GuestMessage {
    /// First message after the channel opens, and the answer to a host hello.
    Hello {
        /// The guest's [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The tools' own version (guest.toolsVersion).
        tools_version: String,
        /// What the guest offers for guest operations (absent: none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guest_ops: Option<GuestOpsOffer>,
        /// Whether the guest installs tools upgrades from the installer CD (`upgrade-tools`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        upgrades: bool,
    },
    /// The guest's identity and addresses; sent after hello and whenever they change.
    GuestInfo(GuestInfo),
    /// Proof of life, every heartbeat interval.
    Heartbeat {
        /// Increases by one per beat.
        seq: u64,
    },
    /// The outcome of a host request.
    Reply {
        /// The request's id.
        id: u64,
        /// Whether the operation was carried out (or, for shutdown/reboot/standby, started).
        ok: bool,
        /// Why not, when `ok` is false.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The outcome of a host guest-op.
    GuestOpReply(GuestOpReply),
}

/// What the host sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum HostMessage {
    /// Sent when the host (re)connects; the guest answers with hello and guest-info.
    Hello {
        /// The host's [`PROTOCOL_VERSION`].
        protocol: u32,
    },
    /// An operation for the guest to carry out; answered by a reply with the same id.
    Request {
        /// Chosen by the host, echoed in the reply.
        id: u64,
        /// What to do.
        op: Operation,
    },
    /// A guest operation, run with `auth` (checked by the guest); answered by a guest-op-reply.
    GuestOp {
        /// Chosen by the host, echoed in the reply.
        id: u64,
        /// The credentials, as flat fields.
        #[serde(flatten)]
        auth: GuestAuth,
        /// The operation, as flat fields (`op` names it).
        #[serde(flatten)]
        op: GuestOp,
    },
}

/// Operations the host may request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// Orderly power-off (replied to before it starts).
    Shutdown,
    /// Orderly reboot (replied to before it starts).
    Reboot,
    /// Suspend to RAM (replied to before it starts).
    Standby,
    /// Freeze every writable filesystem (replied to once frozen).
    Freeze,
    /// Thaw what freeze froze.
    Thaw,
    /// Send guest-info now.
    RefreshInfo,
    /// Install the tools from the installer CD (replied to once installed; the tools then
    /// restart as the new version).
    UpgradeTools,
}

/// The guest's identity and network addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInfo {
    /// Host name (guest.hostName).
    pub hostname: String,
    /// Operating system's pretty name (guest.guestFullName).
    pub os_name: String,
    /// `linux`, `windows`, ... (guest.guestFamily is derived from it).
    pub os_family: String,
    /// Network interfaces other than loopback.
    pub nics: Vec<NicInfo>,
}

/// One network interface of the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    /// Interface name (`eth0`).
    pub name: String,
    /// MAC address, lower-case `52:54:00:12:34:56` (matches the host's NIC by it).
    pub mac: String,
    /// Addresses with prefix length, `10.0.0.2/24`, `fe80::1/64`.
    pub ips: Vec<String>,
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadMessageError {
    /// The stream failed.
    #[error("tools channel read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the next message of type `M`, skipping lines that are too long or do not parse;
/// `None` at end of stream.
pub fn read_message<M: for<'de> Deserialize<'de>>(
    reader: &mut impl BufRead,
) -> Result<Option<M>, ReadMessageError> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut too_long = false;
        loop {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(at) => (&buf[..=at], true),
                None => (buf, false),
            };
            let used = chunk.len();
            if line.len() + used <= MAX_LINE_BYTES {
                line.extend_from_slice(chunk);
            } else {
                too_long = true;
            }
            reader.consume(used);
            if done {
                break;
            }
        }
        if too_long {
            continue;
        }
        if let Ok(message) = serde_json::from_slice(&line) {
            return Ok(Some(message));
        }
    }
}

/// Writes one message as a line and flushes.
pub fn write_message(writer: &mut impl Write, message: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_junk_is_skipped() {
        let request = HostMessage::Request {
            id: 7,
            op: Operation::RefreshInfo,
        };
        let mut wire = Vec::new();
        write_message(&mut wire, &request).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&wire),
            "{\"msg\":\"request\",\"id\":7,\"op\":\"refresh-info\"}\n"
        );
        let mut stream = Vec::new();
        stream.extend_from_slice(b"not json\n{\"msg\":\"future-thing\",\"x\":1}\n");
        stream.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        stream.push(b'\n');
        stream.extend_from_slice(&wire);
        let mut reader = std::io::BufReader::new(&stream[..]);
        assert_eq!(
            read_message::<HostMessage>(&mut reader).unwrap(),
            Some(request)
        );
        assert_eq!(read_message::<HostMessage>(&mut reader).unwrap(), None);
    }

    #[test]
    fn reply_without_error_omits_the_field() {
        let mut wire = Vec::new();
        write_message(
            &mut wire,
            &GuestMessage::Reply {
                id: 1,
                ok: true,
                error: None,
            },
        )
        .unwrap();
        assert_eq!(wire, b"{\"msg\":\"reply\",\"id\":1,\"ok\":true}\n");
    }
}
