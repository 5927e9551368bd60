//! The control socket: one JSON object per line each way. A [`Request`] is tagged by `cmd`;
//! every reply is `{"ok": true, ...}` with the command's reply fields, or
//! `{"ok": false, "error": "..."}` ([`encode_reply`], [`decode_reply`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Longest request line the VMM accepts.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// A control request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Report the VM's state ([`VmStatus`]).
    Status,
    /// Park every vCPU.
    Pause,
    /// Let the vCPUs run again.
    Resume,
    /// Press the ACPI power button (the guest decides what to do).
    PowerButton,
    /// Hard power-off: the VMM stops its vCPUs, closes its disks and TAPs and removes this
    /// socket, then replies (the VM's next VMM may start from then on) and exits, freeing its
    /// memory. An error reply: it has not let go of them in time (it still ends).
    PowerOff,
    /// Hard reset: the VMM exits with the reset status; the caller restarts it.
    Reset,
    /// Pause (if running) and save the whole VM into directory `dir` (vm.state + vm.mem);
    /// the VM stays paused: resume it (memory snapshot) or power it off (suspend).
    /// Replies with a [`SaveReport`].
    Save {
        /// Target directory (created if missing; its memory file must not exist), or with
        /// `files_sent` only the name of where the sent files are.
        dir: PathBuf,
        /// Copy memory while the guest runs (dirty-page rounds), pausing it only for the last
        /// pages and the device state.
        #[serde(default)]
        live: bool,
        /// vireod made the files and sent them open beside the request (SCM_RIGHTS): the
        /// empty memory file, then the empty state file. The VMM writes into them and opens
        /// nothing by path (a jailed VMM does not see `dir`); it does not sync them: vireod
        /// does, after the guest runs again, so that the guest's pause does not wait for the
        /// disk.
        #[serde(default)]
        files_sent: bool,
    },
    /// Close every writable disk image (VM paused: the block devices are quiesced, the images
    /// flushed and closed) so that the host may snapshot or merge them. Read-only disks
    /// (CD-ROM media) stay open.
    DetachDisks,
    /// Open these images as the writable disks, in order, and restart the block devices. Each image
    /// must be as large as the disk the guest knows, or larger with `may_grow`: the guest is
    /// then told the new size (configuration-change interrupt).
    AttachDisks {
        /// One path per disk.
        paths: Vec<PathBuf>,
        /// Each disk's format (probed when absent).
        #[serde(default)]
        formats: Vec<crate::DiskFormat>,
        /// Whether an image may be larger than its disk was (a disk grown while detached).
        #[serde(default)]
        may_grow: bool,
        /// The host paths of the open files sent with this request (SCM_RIGHTS), in order:
        /// every layer of the new chains, which the VMM opens from them and not by path.
        #[serde(default)]
        files: Vec<PathBuf>,
    },
    /// Connect or disconnect NIC `nic` (in `--net` order): the guest sees its link go up or
    /// down (virtio-net status, configuration-change interrupt); frames of a disconnected NIC
    /// are dropped both ways.
    SetLink {
        /// The NIC's index.
        nic: usize,
        /// Whether its cable is plugged in.
        connected: bool,
    },
    /// Put the medium at `path` (a raw image) into read-only disk `disk` (in `--disk` order),
    /// or take its medium out (`None`: the drive then holds zero bytes); the guest is told its
    /// new size (configuration-change interrupt), as a CD-ROM drive reports a media change.
    /// vireod sends the image open beside the request (SCM_RIGHTS); the VMM opens it from
    /// that descriptor.
    ChangeMedium {
        /// The drive's index among the disks.
        disk: usize,
        /// The new medium, if any.
        path: Option<PathBuf>,
    },
    /// Type `text` on the guest's serial console (COM1), as a user at the console would.
    SerialInput {
        /// Bytes to send.
        text: String,
    },
    /// Deliver a non-maskable interrupt to the boot vCPU, as a server's NMI button does.
    Nmi,
    /// Take a PNG of the framebuffer; replies with a [`Screenshot`] carrying its bytes (the
    /// VMM writes no file: no command names a host path it would write).
    Screenshot,
    /// Report the disks whose writes are held for lack of host space ([`IoStalls`]): at once
    /// when `seen` is absent or differs from the current generation, else once it changes (or
    /// after [`STALL_WATCH_MS`], with the same generation).
    WatchStalls {
        /// The generation the caller knows.
        #[serde(default)]
        seen: Option<u64>,
    },
    /// Report the devices' cumulative request counters ([`DeviceStats`]).
    Stats,
}

/// One disk's requests completed since the VMM started (reads and writes, with their bytes).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskCounters {
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub written_bytes: u64,
}

/// The reply to `stats`: each disk's counters, in `--disk` order.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceStats {
    /// Per disk.
    pub disks: Vec<DiskCounters>,
}

/// Longest a `watch-stalls` request waits for a change before answering.
pub const STALL_WATCH_MS: u64 = 20_000;

/// Why a disk's writes are held: the host file system said so (the guest is not told; the VM
/// is paused until `resume` retries them).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StallCause {
    /// ENOSPC: the file system holding the image is full.
    NoSpace,
    /// EDQUOT: the image's owner is over its quota.
    QuotaExceeded,
}

/// One disk whose requests are held.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskStall {
    /// The disk's index (the order of `--disk`).
    pub disk: usize,
    /// Why.
    pub cause: StallCause,
}

/// The reply to `watch-stalls`: every disk held now. Each change (a disk held, or the held
/// requests retried by `resume`) bumps `generation`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IoStalls {
    /// Bumped at each change.
    pub generation: u64,
    /// The disks held, by index.
    pub disks: Vec<DiskStall>,
}

impl Request {
    /// The request's `cmd` on the wire.
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v["cmd"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// The reply of a command that reports nothing but success.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ack {}

/// What the VM is doing, as `status` reports it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RunPhase {
    /// vCPUs run.
    Running,
    /// vCPUs are parked.
    Paused,
    /// The VM is ending.
    Exiting,
}

/// The reply to `status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VmStatus {
    /// Running, paused or exiting.
    pub state: RunPhase,
    /// Number of vCPUs.
    pub vcpus: usize,
    /// Milliseconds since the VMM started.
    pub uptime_ms: f64,
    /// Milliseconds from VMM start to the guest's boot marker, once seen.
    pub boot_marker_ms: Option<f64>,
    /// Port and MMIO accesses that hit no device.
    pub unclaimed_io: u64,
    /// Whether the guest listens for the power button.
    pub power_button_enabled: bool,
    /// The framebuffer's geometry and backing file.
    pub framebuffer: FramebufferStatus,
    /// Ring-0 instructions a kvm-pvm host refused and the VMM completed, per kind, plus
    /// `faulted` (those that raised an exception instead); empty on hardware KVM
    /// (docs/kvm-pvm.md).
    #[serde(default)]
    pub completed_instructions: BTreeMap<String, u64>,
    /// Whether a `save` is under way: its files are incomplete until it ends (a client that
    /// lost the reply waits for this to clear before it touches them or the VM).
    #[serde(default)]
    pub saving: bool,
}

/// The framebuffer as `status` reports it: what a reader of the backing file needs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FramebufferStatus {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes per row (pixels are 32-bit XRGB, little-endian).
    pub stride: u32,
    /// The shared file behind it (`--framebuffer-file`), if any.
    pub file: Option<PathBuf>,
}

/// The reply to `save`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SaveReport {
    /// The state file.
    pub state_file: PathBuf,
    /// The memory file.
    pub memory_file: PathBuf,
    /// Bytes of guest memory written.
    pub memory_bytes: u64,
    /// Milliseconds the save took.
    pub elapsed_ms: f64,
    /// Milliseconds of it the vCPUs were paused by the save (a VM paused before stays paused).
    #[serde(default)]
    pub paused_ms: f64,
    /// Rounds of copying memory while the guest ran (0: not a live save).
    #[serde(default)]
    pub rounds: u32,
}

/// The reply to `screenshot`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Screenshot {
    /// The PNG, hex-encoded on the wire.
    #[serde(with = "hex")]
    pub png: Vec<u8>,
}

/// Bytes as a lowercase hex string.
mod hex {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() % 2 != 0 || !text.is_ascii() {
            return Err(D::Error::custom("not a hex string"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(D::Error::custom))
            .collect()
    }
}

/// The wire form of a reply: `ok`, then the error or the command's fields beside it.
#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten)]
    body: Option<T>,
}

/// One reply line (without the newline) for a command's outcome.
pub fn encode_reply<T: Serialize>(outcome: Result<T, String>) -> String {
    let envelope = match outcome {
        Ok(body) => Envelope {
            ok: true,
            error: None,
            body: Some(body),
        },
        Err(error) => Envelope::<T> {
            ok: false,
            error: Some(error),
            body: None,
        },
    };
    serde_json::to_string(&envelope)
        .unwrap_or_else(|e| format!(r#"{{"ok":false,"error":"cannot encode the reply: {e}"}}"#))
}

/// Why a reply line could not be read as the expected reply.
#[derive(Debug)]
pub struct BadReply(pub String);

impl std::fmt::Display for BadReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unreadable VMM reply: {}", self.0)
    }
}

impl std::error::Error for BadReply {}

/// Reads one reply line: the command's reply, or the VMM's refusal (`Err` inside `Ok`).
pub fn decode_reply<T: DeserializeOwned>(line: &str) -> Result<Result<T, String>, BadReply> {
    let envelope: Envelope<T> =
        serde_json::from_str(line).map_err(|e| BadReply(format!("{e}: {}", line.trim())))?;
    match (envelope.ok, envelope.body) {
        (true, Some(body)) => Ok(Ok(body)),
        (true, None) => Err(BadReply(format!("missing reply fields: {}", line.trim()))),
        (false, _) => Ok(Err(envelope
            .error
            .unwrap_or_else(|| "no reason given".into()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_their_wire_names_and_garbage_is_rejected() {
        let parse = |s: &str| serde_json::from_str::<Request>(s);
        assert_eq!(parse(r#"{"cmd":"status"}"#).unwrap(), Request::Status);
        assert_eq!(
            parse(r#"{"cmd":"power-button"}"#).unwrap(),
            Request::PowerButton
        );
        assert_eq!(
            serde_json::to_string(&Request::SerialInput {
                text: "ls\n".into()
            })
            .unwrap(),
            r#"{"cmd":"serial-input","text":"ls\n"}"#
        );
        assert_eq!(Request::DetachDisks.name(), "detach-disks");
        assert_eq!(
            parse(r#"{"cmd":"attach-disks","paths":["/d"]}"#).unwrap(),
            Request::AttachDisks {
                paths: vec!["/d".into()],
                formats: vec![],
                may_grow: false,
                files: vec![],
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::SetLink {
                nic: 1,
                connected: false
            })
            .unwrap(),
            r#"{"cmd":"set-link","nic":1,"connected":false}"#
        );
        assert_eq!(
            parse(r#"{"cmd":"watch-stalls"}"#).unwrap(),
            Request::WatchStalls { seen: None }
        );
        assert!(parse(r#"{"cmd":"format-disk"}"#).is_err());
        assert!(parse("not json").is_err());
    }

    #[test]
    fn replies_round_trip_through_the_envelope() {
        assert_eq!(encode_reply(Ok(Ack {})), r#"{"ok":true}"#);
        assert_eq!(decode_reply::<Ack>(r#"{"ok":true}"#).unwrap(), Ok(Ack {}));
        let refused = encode_reply::<Ack>(Err("the VM is ending".into()));
        assert_eq!(refused, r#"{"ok":false,"error":"the VM is ending"}"#);
        assert_eq!(
            decode_reply::<VmStatus>(&refused).unwrap(),
            Err("the VM is ending".into())
        );
        let status = VmStatus {
            state: RunPhase::Paused,
            vcpus: 2,
            uptime_ms: 1.5,
            boot_marker_ms: None,
            unclaimed_io: 0,
            power_button_enabled: true,
            framebuffer: FramebufferStatus {
                width: 64,
                height: 64,
                stride: 256,
                file: Some("/run/fb".into()),
            },
            completed_instructions: BTreeMap::from([("int3".into(), 3)]),
            saving: true,
        };
        let line = encode_reply(Ok(status.clone()));
        assert!(
            line.starts_with(r#"{"ok":true,"state":"paused","#),
            "{line}"
        );
        assert_eq!(decode_reply::<VmStatus>(&line).unwrap(), Ok(status));
        assert!(decode_reply::<VmStatus>(r#"{"ok":true}"#).is_err());
        assert!(decode_reply::<Ack>("garbage").is_err());
        let png = encode_reply(Ok(Screenshot {
            png: vec![0x89, b'P', 0],
        }));
        assert_eq!(png, r#"{"ok":true,"png":"895000"}"#);
        assert_eq!(
            decode_reply::<Screenshot>(&png).unwrap().unwrap().png,
            [0x89, b'P', 0]
        );
        assert!(decode_reply::<Screenshot>(r#"{"ok":true,"png":"8"}"#).is_err());
        let stalls = IoStalls {
            generation: 3,
            disks: vec![DiskStall {
                disk: 1,
                cause: StallCause::NoSpace,
            }],
        };
        let line = encode_reply(Ok(stalls.clone()));
        assert_eq!(
            line,
            r#"{"ok":true,"generation":3,"disks":[{"disk":1,"cause":"no-space"}]}"#
        );
        assert_eq!(decode_reply::<IoStalls>(&line).unwrap(), Ok(stalls));
    }
}
