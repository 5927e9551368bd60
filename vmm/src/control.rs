//! The control protocol on a Unix socket: one JSON object per line each way. Requests are
//! `{"cmd": "status" | "pause" | "resume" | "power-button" | "power-off" | "reset"}` and
//! `{"cmd": "screenshot", "path": "/x.png"}`, `{"cmd": "save", "dir": "/d"}`,
//! `{"cmd": "detach-disks"}`, `{"cmd": "attach-disks", "paths": [..]}`,
//! `{"cmd": "serial-input", "text": "..."}`; replies are
//! `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. vireod drives VMs through it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use kvm_ioctls::VmFd;
use vm_memory::GuestMemoryMmap;

use crate::config::VmConfig;
use crate::devices::legacy::rtc::Cmos;
use crate::devices::legacy::serial::SerialPort;
use crate::devices::virtio::block::DiskSlot;
use crate::devices::virtio::mmio::MmioTransport;

use crate::devices::bus::lock;
use crate::devices::framebuffer::{screenshot_png, FramebufferInfo, ScreenshotError};
use crate::devices::legacy::pm::PowerManagement;
use crate::machine::{Buses, VcpuKicker};
use crate::run_state::{Phase, RunState, VmExit};

/// Longest request line accepted.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// A control request.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// Report the VM's state.
    Status,
    /// Park every vCPU.
    Pause,
    /// Let the vCPUs run again.
    Resume,
    /// Press the ACPI power button (the guest decides what to do).
    PowerButton,
    /// Hard power-off: the VMM exits.
    PowerOff,
    /// Hard reset: the VMM exits with the reset status; the caller restarts it.
    Reset,
    /// Pause (if running) and save the whole VM into directory `dir` (vm.state + vm.mem);
    /// the VM stays paused: resume it (memory snapshot) or power it off (suspend).
    Save {
        /// Target directory (created if missing).
        dir: PathBuf,
    },
    /// Close every disk image (VM paused: the block devices are quiesced, the images flushed
    /// and closed) so that the host may snapshot or merge them.
    DetachDisks,
    /// Open these images as the disks, in order, and restart the block devices.
    AttachDisks {
        /// One path per disk.
        paths: Vec<PathBuf>,
    },
    /// Type `text` on the guest's serial console (COM1), as a user at the console would.
    SerialInput {
        /// Bytes to send.
        text: String,
    },
    /// Write a PNG of the framebuffer to `path`.
    Screenshot {
        /// Target file (replaced atomically).
        path: PathBuf,
    },
}

/// The VM's state as `status` reports it.
#[derive(Debug, Serialize, PartialEq)]
pub struct VmStatus {
    /// "running", "paused" or "exiting".
    pub state: &'static str,
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
    /// Ring-0 instructions kvm-pvm refused and the VMM completed, per kind (see
    /// `arch::emulate`); empty on hardware KVM.
    pub completed_instructions: std::collections::BTreeMap<&'static str, u64>,
}

/// The framebuffer as `status` reports it: what a reader of the backing file needs.
#[derive(Debug, Serialize, PartialEq)]
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

/// What the control server can act on: the running machine's shared parts.
pub struct VmHandle {
    /// The VM's run state.
    pub run_state: Arc<RunState>,
    /// The PM1 registers (power button).
    pub pm: Arc<Mutex<PowerManagement>>,
    /// COM1 (saved with the VM).
    pub serial: Arc<Mutex<SerialPort>>,
    /// The CMOS (saved with the VM).
    pub cmos: Arc<Mutex<Cmos>>,
    /// Kicks vCPUs out of KVM_RUN (pause).
    pub kicker: Arc<VcpuKicker>,
    /// The buses (statistics).
    pub buses: Arc<Buses>,
    /// The virtio transports (quiesced and saved with the VM).
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
    /// Guest memory (the framebuffer lives in it).
    pub memory: GuestMemoryMmap,
    /// Where the framebuffer is.
    pub framebuffer: FramebufferInfo,
    /// The KVM VM.
    pub vm_fd: Arc<VmFd>,
    /// Image slots of the disks (disk `i` is behind `transports[i]`).
    pub disk_slots: Vec<DiskSlot>,
    /// What the VM runs with now (disk paths change when disks are re-attached).
    pub config: Arc<Mutex<VmConfig>>,
    /// Instructions completed for kvm-pvm, per kind.
    pub completed: Arc<crate::arch::emulate::Counts>,
}

/// Errors starting the control server.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be bound.
    #[error("cannot listen on control socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Binds `path` (replacing a stale socket) and serves requests on a background thread.
pub fn serve(path: &Path, handle: VmHandle) -> Result<(), ControlError> {
    let bind_error = |source| ControlError::Bind {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        std::fs::remove_file(path).map_err(bind_error)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    let handle = Arc::new(handle);
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let handle = handle.clone();
                let _ = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || serve_connection(stream, &handle));
            }
        })
        .map_err(bind_error)?;
    Ok(())
}

fn serve_connection(stream: UnixStream, handle: &VmHandle) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_REQUEST_BYTES).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST_BYTES => {
                let _ = writeln!(writer, "{}", error_reply("request line too long"));
                return;
            }
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        let (reply, after) = match serde_json::from_str::<ControlRequest>(line.trim()) {
            Ok(request) => execute(request, handle),
            Err(e) => (error_reply(&format!("bad request: {e}")), None),
        };
        if writeln!(writer, "{reply}")
            .and_then(|_| writer.flush())
            .is_err()
        {
            return;
        }
        // Actions that end the VM happen after the reply is on its way.
        if let Some(exit) = after {
            handle.run_state.request_exit(exit);
        }
    }
}

fn error_reply(message: &str) -> serde_json::Value {
    serde_json::json!({ "ok": false, "error": message })
}

fn ok_reply() -> serde_json::Value {
    serde_json::json!({ "ok": true })
}

/// Carries out `request`; returns the reply and an exit to request once it is sent.
fn execute(request: ControlRequest, handle: &VmHandle) -> (serde_json::Value, Option<VmExit>) {
    match request {
        ControlRequest::Status => {
            let mut reply = serde_json::to_value(status(handle)).unwrap_or_default();
            reply["ok"] = true.into();
            (reply, None)
        }
        ControlRequest::Pause if handle.kicker.pause(&handle.run_state) => (ok_reply(), None),
        ControlRequest::Pause => {
            // Do not leave the VM half-paused.
            handle.run_state.resume();
            (
                error_reply("the vCPUs did not all stop (the VM may be ending)"),
                None,
            )
        }
        ControlRequest::Resume if handle.run_state.resume() => (ok_reply(), None),
        ControlRequest::Resume => (error_reply("the VM is ending"), None),
        ControlRequest::PowerButton => {
            lock(&handle.pm).press_power_button();
            (ok_reply(), None)
        }
        ControlRequest::PowerOff => (ok_reply(), Some(VmExit::HostPowerOff)),
        ControlRequest::Reset => (ok_reply(), Some(VmExit::HostReset)),
        ControlRequest::Save { dir } => match crate::persist::save::save_vm(handle, &dir) {
            Ok(report) => {
                let mut reply = serde_json::to_value(report).unwrap_or_default();
                reply["ok"] = true.into();
                (reply, None)
            }
            Err(e) => (error_reply(&e.to_string()), None),
        },
        ControlRequest::DetachDisks => match crate::disk_swap::detach_disks(handle) {
            Ok(()) => (ok_reply(), None),
            Err(e) => (error_reply(&e.to_string()), None),
        },
        ControlRequest::AttachDisks { paths } => {
            match crate::disk_swap::attach_disks(handle, &paths) {
                Ok(()) => (ok_reply(), None),
                Err(e) => (error_reply(&e.to_string()), None),
            }
        }
        ControlRequest::SerialInput { text } => match type_on_serial(handle, text.as_bytes()) {
            Ok(()) => (ok_reply(), None),
            Err(e) => (error_reply(&e), None),
        },
        ControlRequest::Screenshot { path } => match write_screenshot(handle, &path) {
            Ok(bytes) => (
                serde_json::json!({ "ok": true, "path": path, "bytes": bytes }),
                None,
            ),
            Err(e) => (error_reply(&e.to_string()), None),
        },
    }
}

/// How long typing may wait for the guest to drain its receive FIFO.
const SERIAL_INPUT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Feeds `bytes` into COM1's receive FIFO as the guest drains it.
fn type_on_serial(handle: &VmHandle, mut bytes: &[u8]) -> Result<(), String> {
    let deadline = std::time::Instant::now() + SERIAL_INPUT_TIMEOUT;
    while !bytes.is_empty() {
        let taken = lock(&handle.serial).enqueue_input(bytes);
        bytes = &bytes[taken..];
        if taken == 0 {
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "the guest did not read its console; {} bytes not typed",
                    bytes.len()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    Ok(())
}

/// Writes the PNG next to `path` and renames it into place; returns its size.
fn write_screenshot(handle: &VmHandle, path: &Path) -> Result<usize, ScreenshotError> {
    let png = screenshot_png(&handle.memory, &handle.framebuffer)?;
    let partial = path.with_extension("png.partial");
    std::fs::write(&partial, &png)
        .and_then(|_| std::fs::rename(&partial, path))
        .map_err(|source| ScreenshotError::Write {
            path: path.to_owned(),
            source,
        })?;
    Ok(png.len())
}

fn status(handle: &VmHandle) -> VmStatus {
    let state = match handle.run_state.phase() {
        Phase::Running => "running",
        Phase::Paused => "paused",
        Phase::Exiting(_) => "exiting",
    };
    VmStatus {
        state,
        vcpus: handle.kicker.count(),
        uptime_ms: handle.run_state.uptime().as_secs_f64() * 1e3,
        boot_marker_ms: handle
            .run_state
            .boot_marker()
            .map(|d| d.as_secs_f64() * 1e3),
        unclaimed_io: handle.buses.pio.unclaimed_accesses()
            + handle.buses.mmio.unclaimed_accesses(),
        power_button_enabled: lock(&handle.pm).power_button_enabled(),
        framebuffer: FramebufferStatus {
            width: handle.framebuffer.width,
            height: handle.framebuffer.height,
            stride: handle.framebuffer.stride,
            file: lock(&handle.config).framebuffer_file.clone(),
        },
        completed_instructions: handle.completed.snapshot(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_garbage_is_rejected() {
        let parse = |s: &str| serde_json::from_str::<ControlRequest>(s);
        assert_eq!(
            parse(r#"{"cmd":"status"}"#).unwrap(),
            ControlRequest::Status
        );
        assert_eq!(
            parse(r#"{"cmd":"power-button"}"#).unwrap(),
            ControlRequest::PowerButton
        );
        assert!(parse(r#"{"cmd":"format-disk"}"#).is_err());
        assert!(parse("not json").is_err());
    }
}
