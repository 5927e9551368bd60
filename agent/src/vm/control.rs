//! Client of a `vireo-vmm` control socket: one [`Request`] line out, one reply line back, read
//! as the reply type the command has (the protocol is `vireo_vmm_protocol::control`).

use std::io::{BufRead, BufReader, IoSlice, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde::de::DeserializeOwned;
use vireo_vmm_protocol::control::{decode_reply, Ack, Request, VmStatus};

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be reached or the exchange broke off.
    #[error("VMM control socket {path}: {source}")]
    Io {
        /// The socket.
        path: String,
        /// What happened.
        source: std::io::Error,
    },
    /// The VMM answered with an error.
    #[error("the VMM refused '{command}': {message}")]
    Refused {
        /// The request's `cmd`.
        command: String,
        /// The VMM's message.
        message: String,
    },
    /// The files of a request could not be given to the jailed VMM.
    #[error("cannot give the VMM its files: {0}")]
    Grant(std::io::Error),
    /// The reply was not the one the command has.
    #[error(transparent)]
    BadReply(#[from] vireo_vmm_protocol::BadReply),
}

/// Sends `request` and returns its reply, read as `T`.
pub fn call<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T, ControlError> {
    call_with_files(socket, request, &[], timeout)
}

/// Sends `request` with the open files `fds` beside it (SCM_RIGHTS, in the same message as
/// the request line) and returns its reply, read as `T`.
pub fn call_with_files<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
    fds: &[RawFd],
    timeout: Duration,
) -> Result<T, ControlError> {
    let io = |source| ControlError::Io {
        path: socket.display().to_string(),
        source,
    };
    let line = serde_json::to_string(request).map_err(|e| io(e.into()))?;
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    send_line(&mut stream, format!("{line}\n").as_bytes(), fds).map_err(io)?;
    // `vmm:save` dies with a save under way (the VMM goes on writing it).
    crate::crash::point(&format!("vmm:{}", request.name()));
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(io)?;
    if line.is_empty() {
        return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    decode_reply(&line)?.map_err(|message| ControlError::Refused {
        command: request.name(),
        message,
    })
}

/// Writes `line`, its first bytes in one message with `fds` attached.
pub(super) fn send_line(
    stream: &mut UnixStream,
    line: &[u8],
    fds: &[RawFd],
) -> std::io::Result<()> {
    if fds.is_empty() {
        return stream.write_all(line);
    }
    let rights = [ControlMessage::ScmRights(fds)];
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(line)],
        &rights,
        MsgFlags::empty(),
        None,
    )?;
    stream.write_all(&line[sent..])
}

/// Sends a request whose reply is a bare acknowledgement.
pub fn command(socket: &Path, request: Request, timeout: Duration) -> Result<(), ControlError> {
    call::<Ack>(socket, &request, timeout).map(drop)
}

/// Asks for the VM's status.
pub fn status(socket: &Path, timeout: Duration) -> Result<VmStatus, ControlError> {
    call(socket, &Request::Status, timeout)
}
