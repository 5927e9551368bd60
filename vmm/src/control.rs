//! The control server on a Unix socket: reads the requests of `vireo_vmm_protocol::control`
//! (one JSON object per line) and carries them out on the running machine; vireod drives VMs
//! through it.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::Uid;
use std::sync::Arc;
use std::time::Duration;

use crate::devices::bus::lock;
use crate::devices::framebuffer::screenshot_png;
use crate::devices::irq::send_nmi;
use crate::fd_lines::{LineError, LineReader};
use crate::handle::VmHandle;
use crate::run_state::{Phase, VmExit};
use vireo_vmm_protocol::control::{
    encode_reply, Ack, DeviceStats, FramebufferStatus, Request, RunPhase, Screenshot, VmStatus,
    MAX_REQUEST_BYTES, STALL_WATCH_MS,
};

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
    /// The server thread could not start.
    #[error("cannot start the control server: {source}")]
    Thread {
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A bound control socket and the one uid whose clients it serves.
pub struct ControlListener {
    socket: UnixListener,
    owner: Uid,
}

/// Binds `path` (replacing a stale socket) as a socket only its owner may use (0600, whatever
/// the umask), for clients running as `owner`.
pub fn listen(path: &Path, owner: Uid) -> Result<ControlListener, ControlError> {
    let bind_error = |source| ControlError::Bind {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        std::fs::remove_file(path).map_err(bind_error)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
    Ok(ControlListener {
        socket: listener,
        owner,
    })
}

/// Serves requests on `listener` on a background thread, to clients running as its owner only
/// (checked with SO_PEERCRED; others get a refusal and are disconnected).
pub fn serve(listener: ControlListener, handle: VmHandle) -> Result<(), ControlError> {
    let ControlListener {
        socket: listener,
        owner,
    } = listener;
    let handle = Arc::new(handle);
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(refusal) = check_peer(&stream, owner) {
                    let mut stream = stream;
                    let _ = writeln!(stream, "{}", encode_reply::<Ack>(Err(refusal)));
                    continue;
                }
                let handle = handle.clone();
                let _ = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || serve_connection(stream, &handle));
            }
        })
        .map_err(|source| ControlError::Thread { source })?;
    Ok(())
}

/// Whether the client runs as `owner` (the uid that started the VMM: vireod's).
fn check_peer(stream: &UnixStream, owner: Uid) -> Result<(), String> {
    let credentials = getsockopt(stream, sockopt::PeerCredentials)
        .map_err(|e| format!("cannot read the client's credentials: {e}"))?;
    if credentials.uid() == owner.as_raw() {
        Ok(())
    } else {
        Err(format!(
            "permission denied: uid {} is not the VM's owner",
            credentials.uid()
        ))
    }
}

fn serve_connection(stream: UnixStream, handle: &VmHandle) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = LineReader::new(stream, MAX_REQUEST_BYTES as usize);
    loop {
        let (line, fds) = match reader.next_line() {
            Ok(Some(line)) => (line.text, line.fds),
            Ok(None) | Err(LineError::Closed(_)) => return,
            Err(refused) => {
                let _ = writeln!(writer, "{}", encode_reply::<Ack>(Err(refused.to_string())));
                return;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let (reply, after) = match serde_json::from_str::<Request>(line.trim()) {
            Ok(request) => execute(request, fds, handle),
            Err(e) => (encode_reply::<Ack>(Err(format!("bad request: {e}"))), None),
        };
        let sent = match after {
            // A power-off is answered once the VM has let go of its disks, TAPs and control
            // socket: its next VMM may start then, while this one frees its memory.
            Some(exit @ VmExit::HostPowerOff) => {
                let run_state = &handle.run_state;
                run_state.exit_answering_on_release(exit, RELEASE_WAIT, |released| {
                    let reply = match released {
                        true => reply,
                        false => encode_reply::<Ack>(Err(NOT_RELEASED.into())),
                    };
                    send_line(&mut writer, &reply)
                })
            }
            // Other actions that end the VM happen after the reply is on its way.
            after => {
                let sent = send_line(&mut writer, &reply);
                if let (true, Some(exit)) = (sent, after) {
                    handle.run_state.request_exit(exit);
                }
                sent
            }
        };
        if !sent {
            return;
        }
    }
}

/// Longest a power-off waits for the VM to let go of its host resources before answering.
const RELEASE_WAIT: Duration = Duration::from_secs(5);
const NOT_RELEASED: &str = "the VM is ending but has not let go of its disks and TAPs yet";

/// Writes `line` and a newline; false when the client is gone.
fn send_line(writer: &mut UnixStream, line: &str) -> bool {
    writeln!(writer, "{line}")
        .and_then(|_| writer.flush())
        .is_ok()
}

/// The reply line of a command whose failure is any displayable error.
fn reply<T: serde::Serialize, E: std::fmt::Display>(outcome: Result<T, E>) -> String {
    encode_reply(outcome.map_err(|e| e.to_string()))
}

/// Carries out `request` (with the descriptors sent beside it); returns the reply line and an
/// exit to request once it is sent.
fn execute(request: Request, fds: Vec<OwnedFd>, handle: &VmHandle) -> (String, Option<VmExit>) {
    let acked = |outcome: Result<(), String>| reply(outcome.map(|()| Ack {}));
    match request {
        Request::Status => (reply::<_, String>(Ok(status(handle))), None),
        Request::Pause if handle.kicker.pause(&handle.run_state) => (acked(Ok(())), None),
        Request::Pause => {
            // Do not leave the VM half-paused.
            handle.run_state.resume();
            let why = "the vCPUs did not all stop (the VM may be ending)";
            (acked(Err(why.into())), None)
        }
        Request::Resume if handle.run_state.resume() => {
            retry_held_requests(handle);
            (acked(Ok(())), None)
        }
        Request::Resume => (acked(Err("the VM is ending".into())), None),
        Request::PowerButton => {
            lock(&handle.pm).press_power_button();
            (acked(Ok(())), None)
        }
        Request::PowerOff => (acked(Ok(())), Some(VmExit::HostPowerOff)),
        Request::Reset => (acked(Ok(())), Some(VmExit::HostReset)),
        Request::Save {
            dir,
            live,
            files_sent,
        } => {
            let saved = sent_save_files(files_sent, fds).and_then(|sent| {
                handle
                    .saving
                    .during(|| crate::persist::save::save_vm(handle, &dir, live, sent))
                    .map_err(|e| e.to_string())
            });
            (reply(saved), None)
        }
        Request::DetachDisks => {
            let detached = crate::disk_swap::detach_disks(handle).map_err(|e| e.to_string());
            (acked(detached), None)
        }
        Request::AttachDisks {
            paths,
            formats,
            may_grow,
            files,
        } => {
            let attached = crate::handed::take_sent(&files, fds)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    crate::disk_swap::attach_disks(handle, &paths, &formats, may_grow)
                        .map_err(|e| e.to_string())
                });
            (acked(attached), None)
        }
        Request::SetLink { nic, connected } => (acked(set_link(handle, nic, connected)), None),
        Request::ChangeMedium { disk, path } => {
            let changed = crate::handed::add_sent(path.as_slice(), fds)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    crate::disk_swap::change_medium(handle, disk, path).map_err(|e| e.to_string())
                });
            (acked(changed), None)
        }
        Request::Nmi => (reply(send_nmi(&handle.vm_fd).map(|()| Ack {})), None),
        Request::SerialInput { text } => (acked(type_on_serial(handle, text.as_bytes())), None),
        Request::Screenshot => {
            let taken = screenshot_png(&handle.memory, &handle.framebuffer);
            (reply(taken.map(|png| Screenshot { png })), None)
        }
        Request::Stats => {
            let disks = handle
                .disk_slots
                .iter()
                .map(|slot| slot.counters.read())
                .collect();
            (reply::<_, String>(Ok(DeviceStats { disks })), None)
        }
        Request::WatchStalls { seen } => {
            let wait = Duration::from_millis(STALL_WATCH_MS);
            (
                reply::<_, String>(Ok(handle.stalls.watch(seen, wait))),
                None,
            )
        }
    }
}

/// The memory and state files a `save` request carried, when it says it carries them.
fn sent_save_files(
    files_sent: bool,
    fds: Vec<OwnedFd>,
) -> Result<Option<crate::persist::save::SentFiles>, String> {
    if !files_sent {
        return match fds.is_empty() {
            true => Ok(None),
            false => Err("save: files were sent but the request names none".into()),
        };
    }
    let [memory, state] = <[OwnedFd; 2]>::try_from(fds).map_err(|fds| {
        format!(
            "save: the memory and state files must come with the request ({} sent)",
            fds.len()
        )
    })?;
    Ok(Some(crate::persist::save::SentFiles {
        memory: memory.into(),
        state: state.into(),
    }))
}

/// Restarts every disk that holds requests for lack of space, so that it takes them off its
/// queue again and retries them (after the vCPUs were let go: a disk still out of space
/// pauses the VM again).
fn retry_held_requests(handle: &VmHandle) {
    for disk in handle.stalls.take() {
        if let Some(transport) = handle.transports.get(disk) {
            lock(transport).restart();
        }
    }
}

/// Plugs NIC `nic`'s cable in or out; the driver is told when that changes the link.
fn set_link(handle: &VmHandle, nic: usize, connected: bool) -> Result<(), String> {
    let nics = handle.nic_links.len();
    let link = handle
        .nic_links
        .get(nic)
        .ok_or_else(|| format!("no NIC {nic}: the VM has {nics}"))?;
    if link.set(connected) {
        let transport = &handle.transports[handle.transports.len() - nics + nic];
        lock(transport).config_changed();
    }
    Ok(())
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

fn status(handle: &VmHandle) -> VmStatus {
    let state = match handle.run_state.phase() {
        Phase::Running => RunPhase::Running,
        Phase::Paused => RunPhase::Paused,
        Phase::Exiting(_) => RunPhase::Exiting,
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
        saving: handle.saving.is_set(),
    }
}
