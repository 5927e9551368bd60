//! Reading the control socket's request lines together with the descriptors a client sends
//! beside them (SCM_RIGHTS): vireod sends each request line in one message, with the open
//! files it hands over (the layers of reattached disk chains) attached.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// Most descriptors one message may carry (the kernel's SCM_MAX_FD).
pub const MAX_FDS: usize = 253;

/// One request line and the descriptors that came with it.
pub struct Line {
    /// The line, without its newline.
    pub text: String,
    /// Descriptors received since the previous line, in order.
    pub fds: Vec<OwnedFd>,
}

/// Why no line could be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The client went away (or the read failed).
    #[error("the connection ended: {0}")]
    Closed(nix::Error),
    /// The line is longer than allowed.
    #[error("request line too long")]
    TooLong,
    /// The line is not UTF-8.
    #[error("request line is not UTF-8")]
    NotText,
}

/// Reads lines of at most `max` bytes from a stream socket, keeping the bytes after a line for
/// the next one.
pub struct LineReader {
    stream: UnixStream,
    buffer: Vec<u8>,
    fds: Vec<OwnedFd>,
    max: usize,
}

impl LineReader {
    /// A reader of `stream`.
    pub fn new(stream: UnixStream, max: usize) -> LineReader {
        LineReader {
            stream,
            buffer: Vec::new(),
            fds: Vec::new(),
            max,
        }
    }

    /// The next line; `Ok(None)` at the end of the stream.
    pub fn next_line(&mut self) -> Result<Option<Line>, LineError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let rest = self.buffer.split_off(end + 1);
                let mut text = std::mem::replace(&mut self.buffer, rest);
                text.pop();
                let text = String::from_utf8(text).map_err(|_| LineError::NotText)?;
                let fds = std::mem::take(&mut self.fds);
                return Ok(Some(Line { text, fds }));
            }
            if self.buffer.len() >= self.max {
                return Err(LineError::TooLong);
            }
            if !self.receive()? {
                return Ok(None);
            }
        }
    }

    /// Receives one message's bytes and descriptors; false at the end of the stream.
    fn receive(&mut self) -> Result<bool, LineError> {
        let mut chunk = [0u8; 8192];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS]);
        let (bytes, fds) = {
            let mut iov = [IoSliceMut::new(&mut chunk)];
            let message = recvmsg::<()>(
                self.stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(LineError::Closed)?;
            let mut fds = Vec::new();
            for control in message.cmsgs().map_err(LineError::Closed)? {
                if let ControlMessageOwned::ScmRights(received) = control {
                    // SAFETY: the kernel just installed these descriptors in this process for
                    // this message; nothing else owns them.
                    fds.extend(
                        received
                            .into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            (message.bytes, fds)
        };
        self.fds.extend(fds);
        self.buffer.extend_from_slice(&chunk[..bytes]);
        Ok(bytes > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage};
    use std::io::{IoSlice, Read, Write};

    #[test]
    fn lines_come_with_the_descriptors_sent_beside_them() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let mut reader = LineReader::new(server, 1024);
        let file = std::fs::File::open("/dev/null").unwrap();
        let fds = [file.as_raw_fd()];
        let message = b"{\"cmd\":\"a\"}\n{\"cmd\":";
        sendmsg::<()>(
            client.as_raw_fd(),
            &[IoSlice::new(message)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let line = reader.next_line().unwrap().unwrap();
        assert_eq!(line.text, "{\"cmd\":\"a\"}");
        assert_eq!(line.fds.len(), 1);
        let mut received = std::fs::File::from(line.fds.into_iter().next().unwrap());
        assert_eq!(received.read(&mut [0u8; 4]).unwrap(), 0);
        client.write_all(b"\"b\"}\n").unwrap();
        let line = reader.next_line().unwrap().unwrap();
        assert_eq!(line.text, "{\"cmd\":\"b\"}");
        assert!(line.fds.is_empty());
        client.write_all(&[b'x'; 2048]).unwrap();
        assert!(matches!(reader.next_line(), Err(LineError::TooLong)));
        drop(client);
    }
}
