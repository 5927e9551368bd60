//! Client of a `vireo-vmm` control socket: one JSON request line out, one reply line back
//! (`{"ok":true,...}` or `{"ok":false,"error":"..."}`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

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
    /// The reply was not JSON.
    #[error("the VMM sent an unreadable reply: {0}")]
    BadReply(String),
}

/// Sends one request and returns the successful reply.
pub fn request(
    socket: &Path,
    request: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    let io = |source| ControlError::Io {
        path: socket.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    writeln!(stream, "{request}").map_err(io)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(io)?;
    if line.is_empty() {
        return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let reply: serde_json::Value =
        serde_json::from_str(&line).map_err(|_| ControlError::BadReply(line.clone()))?;
    if reply["ok"].as_bool() == Some(true) {
        return Ok(reply);
    }
    Err(ControlError::Refused {
        command: request["cmd"].as_str().unwrap_or_default().to_string(),
        message: reply["error"]
            .as_str()
            .unwrap_or("no reason given")
            .to_string(),
    })
}

/// Sends `{"cmd": command}`.
pub fn command(
    socket: &Path,
    command: &str,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    request(socket, &serde_json::json!({ "cmd": command }), timeout)
}
