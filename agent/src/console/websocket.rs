//! The server side of WebSocket (RFC 6455) as the console needs it: the opening handshake's
//! checks and `Sec-WebSocket-Accept`, the frame codec (client frames masked, server frames not),
//! and [`WebSocket`], a connection that yields data bytes and answers ping and close itself.
//! Extensions (compression) are never negotiated.

use base64::Engine;
use hyper::header::{HeaderMap, CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The GUID RFC 6455 appends to the client's key.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest payload accepted in one client frame (RFB client messages are small).
pub const MAX_CLIENT_PAYLOAD: u64 = 1 << 20;
/// Longest payload of a control frame.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Why a request is not a WebSocket opening handshake this server accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// No `Upgrade: websocket` / `Connection: upgrade`.
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported WebSocket version (13 is spoken here)")]
    Version,
    /// `Sec-WebSocket-Key` is missing or not 16 bytes in base64.
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(client_key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{client_key}{ACCEPT_GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Checks an opening handshake; returns the `Sec-WebSocket-Accept` value to answer with.
pub fn check_handshake(headers: &HeaderMap) -> Result<String, HandshakeError> {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|item| item.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has_token(UPGRADE, "websocket") || !has_token(CONNECTION, "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        != Some("13")
    {
        return Err(HandshakeError::Version);
    }
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or(HandshakeError::Key)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| HandshakeError::Key)?;
    if decoded.len() != 16 {
        return Err(HandshakeError::Key);
    }
    Ok(accept_key(key))
}

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// More of a fragmented message.
    Continuation,
    /// UTF-8 text.
    Text,
    /// Bytes.
    Binary,
    /// Closing handshake.
    Close,
    /// Keep-alive probe.
    Ping,
    /// Answer to a ping.
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xa => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xa,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// One decoded client frame (payload unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Whether this is the last fragment of its message.
    pub fin: bool,
    /// What it carries.
    pub opcode: Opcode,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A client frame that breaks RFC 6455 (the connection is then closed with 1002 or 1009).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// RSV bits set without a negotiated extension.
    #[error("reserved bits set")]
    Reserved,
    /// An opcode RFC 6455 does not define.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A client frame without a mask.
    #[error("client frame not masked")]
    Unmasked,
    /// A fragmented or oversized control frame.
    #[error("malformed control frame")]
    BadControl,
    /// A payload over [`MAX_CLIENT_PAYLOAD`].
    #[error("frame payload of {0} bytes is too large")]
    TooLarge(u64),
}

impl FrameError {
    /// The close status code that reports this error to the client.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::TooLarge(_) => 1009,
            _ => 1002,
        }
    }
}

/// Decodes the first client frame in `buffer`: the frame and the bytes it used, or `None`
/// while it is incomplete.
pub fn decode_client_frame(buffer: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let [first, second, ..] = *buffer else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    let opcode = Opcode::from_bits(first & 0x0f).ok_or(FrameError::UnknownOpcode(first & 0x0f))?;
    let fin = first & 0x80 != 0;
    if second & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let (len, mut pos) = match second & 0x7f {
        126 => match buffer.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buffer.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if opcode.is_control() && (!fin || len > MAX_CONTROL_PAYLOAD as u64) {
        return Err(FrameError::BadControl);
    }
    if len > MAX_CLIENT_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    let Some(mask) = buffer.get(pos..pos + 4) else {
        return Ok(None);
    };
    let mask: [u8; 4] = mask.try_into().expect("4 bytes");
    pos += 4;
    let end = pos + len as usize;
    let Some(masked) = buffer.get(pos..end) else {
        return Ok(None);
    };
    let payload = masked
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        end,
    )))
}

/// Appends one unfragmented, unmasked server frame to `out`.
pub fn encode_server_frame(opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode.bits());
    match payload.len() {
        len @ 0..=125 => out.push(len as u8),
        len @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// What [`WebSocket::next_event`] found in the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Payload bytes of a data message (fragments arrive as they come).
    Data(Vec<u8>),
    /// The client closed the connection (the close reply is already sent).
    Closed,
}

/// Why the WebSocket connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum WebSocketError {
    /// Reading or writing the connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol (a close frame with the reason was sent).
    #[error("client broke the WebSocket protocol: {0}")]
    Protocol(#[from] FrameError),
    /// The client sent a text message; this endpoint speaks binary RFB only.
    #[error("text messages are not accepted; RFB runs in binary messages")]
    Text,
}

/// A server-side WebSocket over an upgraded connection.
pub struct WebSocket<S> {
    stream: S,
    received: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a connection whose opening handshake is done.
    pub fn new(stream: S) -> WebSocket<S> {
        WebSocket {
            stream,
            received: Vec::new(),
        }
    }

    /// Reads more bytes from the client; false when it hung up. Cancel-safe (one read), so it
    /// may race a timer in `select!`.
    pub async fn receive(&mut self) -> std::io::Result<bool> {
        Ok(self.stream.read_buf(&mut self.received).await? > 0)
    }

    /// Handles the complete frames received so far: answers pings and closes, and returns the
    /// next data or close event, or `None` when more bytes are needed.
    pub async fn next_event(&mut self) -> Result<Option<Event>, WebSocketError> {
        loop {
            let (frame, used) = match decode_client_frame(&self.received) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => return Ok(None),
                Err(error) => {
                    self.close(error.close_code(), &error.to_string()).await?;
                    return Err(error.into());
                }
            };
            self.received.drain(..used);
            match frame.opcode {
                Opcode::Binary | Opcode::Continuation => {
                    return Ok(Some(Event::Data(frame.payload)))
                }
                Opcode::Text => {
                    self.close(1003, "binary messages only").await?;
                    return Err(WebSocketError::Text);
                }
                Opcode::Ping => self.send(Opcode::Pong, &frame.payload).await?,
                Opcode::Pong => {}
                Opcode::Close => {
                    // Echo the status code, as RFC 6455 section 5.5.1 asks.
                    let code = frame.payload.get(..2).unwrap_or_default();
                    self.send(Opcode::Close, code).await?;
                    return Ok(Some(Event::Closed));
                }
            }
        }
    }

    /// Sends one binary message.
    pub async fn send_binary(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.send(Opcode::Binary, payload).await
    }

    /// Sends a close frame with a status code and reason.
    pub async fn close(&mut self, code: u16, reason: &str) -> std::io::Result<()> {
        let mut payload = code.to_be_bytes().to_vec();
        let reason = reason.as_bytes();
        payload.extend_from_slice(&reason[..reason.len().min(MAX_CONTROL_PAYLOAD - 2)]);
        self.send(Opcode::Close, &payload).await
    }

    async fn send(&mut self, opcode: Opcode, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 10);
        encode_server_frame(opcode, payload, &mut frame);
        self.stream.write_all(&frame).await?;
        self.stream.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a browser would send it.
    fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            len @ 0..=125 => out.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn handshakes_are_checked() {
        let mut headers = HeaderMap::new();
        assert_eq!(check_handshake(&headers), Err(HandshakeError::NotUpgrade));
        headers.insert(UPGRADE, "WebSocket".parse().unwrap());
        headers.insert(CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert_eq!(check_handshake(&headers), Err(HandshakeError::Version));
        headers.insert(SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        assert_eq!(check_handshake(&headers), Err(HandshakeError::Key));
        headers.insert(SEC_WEBSOCKET_KEY, "c2hvcnQ=".parse().unwrap());
        assert_eq!(check_handshake(&headers), Err(HandshakeError::Key));
        headers.insert(
            SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        assert_eq!(
            check_handshake(&headers).as_deref(),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }

    #[test]
    fn masked_frames_of_every_length_form_decode() {
        for len in [0usize, 5, 125, 126, 300, 0x10000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let bytes = client_frame(0x82, &payload, [1, 2, 3, 4]);
            for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
                assert_eq!(
                    decode_client_frame(&bytes[..cut]),
                    Ok(None),
                    "len {len} cut {cut}"
                );
            }
            let mut with_more = bytes.clone();
            with_more.extend_from_slice(b"next");
            let (frame, used) = decode_client_frame(&with_more).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(
                frame,
                Frame {
                    fin: true,
                    opcode: Opcode::Binary,
                    payload
                }
            );
        }
    }

    #[test]
    fn protocol_violations_are_errors() {
        let unmasked = [0x82, 0x01, 0xaa];
        assert_eq!(decode_client_frame(&unmasked), Err(FrameError::Unmasked));
        let rsv = client_frame(0xc2, b"x", [0; 4]);
        assert_eq!(decode_client_frame(&rsv), Err(FrameError::Reserved));
        let opcode = client_frame(0x83, b"x", [0; 4]);
        assert_eq!(
            decode_client_frame(&opcode),
            Err(FrameError::UnknownOpcode(3))
        );
        let fragmented_ping = client_frame(0x09, b"x", [0; 4]);
        assert_eq!(
            decode_client_frame(&fragmented_ping),
            Err(FrameError::BadControl)
        );
        let long_close = client_frame(0x88, &[0; 126], [0; 4]);
        assert_eq!(
            decode_client_frame(&long_close),
            Err(FrameError::BadControl)
        );
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(MAX_CLIENT_PAYLOAD + 1).to_be_bytes());
        assert_eq!(
            decode_client_frame(&huge),
            Err(FrameError::TooLarge(MAX_CLIENT_PAYLOAD + 1))
        );
        assert_eq!(FrameError::TooLarge(0).close_code(), 1009);
    }

    #[test]
    fn server_frames_are_unmasked_with_the_shortest_length() {
        for (len, header) in [(3usize, 2usize), (200, 4), (70000, 10)] {
            let mut out = Vec::new();
            encode_server_frame(Opcode::Binary, &vec![7; len], &mut out);
            assert_eq!(out[0], 0x82);
            assert_eq!(out[1] & 0x80, 0, "server frames are not masked");
            assert_eq!(out.len(), header + len);
        }
    }

    #[tokio::test]
    async fn pings_are_answered_and_closes_echoed() {
        let (client, server) = tokio::io::duplex(4096);
        let mut ws = WebSocket::new(server);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let mut sent = client_frame(0x89, b"hi", [9, 8, 7, 6]);
        sent.extend(client_frame(0x02, b"ab", [1, 1, 1, 1]));
        sent.extend(client_frame(0x80, b"cd", [2, 2, 2, 2]));
        sent.extend(client_frame(0x88, &1000u16.to_be_bytes(), [3, 3, 3, 3]));
        client_write.write_all(&sent).await.unwrap();
        assert!(ws.receive().await.unwrap());
        assert_eq!(
            ws.next_event().await.unwrap(),
            Some(Event::Data(b"ab".to_vec()))
        );
        assert_eq!(
            ws.next_event().await.unwrap(),
            Some(Event::Data(b"cd".to_vec()))
        );
        assert_eq!(ws.next_event().await.unwrap(), Some(Event::Closed));
        assert_eq!(ws.next_event().await.unwrap(), None);
        drop(ws);
        let mut replies = Vec::new();
        client_read.read_to_end(&mut replies).await.unwrap();
        assert_eq!(replies, [0x8a, 2, b'h', b'i', 0x88, 2, 0x03, 0xe8]);
    }
}
