//! The RFB protocol (RFC 6143) as bytes: the version and security handshake messages, ServerInit,
//! pixel formats and conversion to the client's, client-to-server message parsing, and the
//! FramebufferUpdate encoding (Raw). Pure functions over buffers; no I/O.

/// The version this server offers.
pub const SERVER_VERSION: &[u8; 12] = b"RFB 003.008\n";
/// Security type None.
pub const SECURITY_NONE: u8 = 1;
/// Raw encoding.
pub const ENCODING_RAW: i32 = 0;
/// Longest ClientCutText accepted.
const MAX_CUT_TEXT: u32 = 1 << 20;

/// The protocol minor version agreed with a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 3.3: the server picks the security type.
    V3_3,
    /// 3.7: a list of types, no SecurityResult for None.
    V3_7,
    /// 3.8 (or anything newer, answered as 3.8).
    V3_8,
}

/// Why the client's ProtocolVersion is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an RFB 3.x version message: {0:?}")]
pub struct BadVersion(pub String);

/// Reads a client's 12-byte ProtocolVersion. Unknown 3.x minors are treated as 3.3, as the
/// RFC advises; 3.8 and above as 3.8.
pub fn parse_version(message: &[u8; 12]) -> Result<Version, BadVersion> {
    let bad = || BadVersion(String::from_utf8_lossy(message).into_owned());
    let text = std::str::from_utf8(message).map_err(|_| bad())?;
    let numbers = text
        .strip_prefix("RFB ")
        .and_then(|t| t.strip_suffix('\n'))
        .ok_or_else(bad)?;
    let (major, minor) = numbers.split_once('.').ok_or_else(bad)?;
    let major: u32 = major.parse().map_err(|_| bad())?;
    let minor: u32 = minor.parse().map_err(|_| bad())?;
    match (major, minor) {
        (3, 8..) => Ok(Version::V3_8),
        (3, 7) => Ok(Version::V3_7),
        (3, _) => Ok(Version::V3_3),
        _ => Err(bad()),
    }
}

/// What the server sends after the version exchange to offer security type None.
pub fn security_offer(version: Version) -> Vec<u8> {
    match version {
        Version::V3_3 => u32::from(SECURITY_NONE).to_be_bytes().to_vec(),
        Version::V3_7 | Version::V3_8 => vec![1, SECURITY_NONE],
    }
}

/// Whether the client answers the offer with its choice (3.7 and 3.8 do).
pub fn client_chooses_security(version: Version) -> bool {
    version != Version::V3_3
}

/// The SecurityResult that follows None, if this version sends one (3.8 only).
pub fn security_ok(version: Version) -> Option<[u8; 4]> {
    (version == Version::V3_8).then_some(0u32.to_be_bytes())
}

/// SecurityResult "failed" with a reason (3.8), sent when the client picks another type.
pub fn security_failed(reason: &str) -> Vec<u8> {
    let mut out = 1u32.to_be_bytes().to_vec();
    out.extend_from_slice(&(reason.len() as u32).to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

/// A true-colour pixel format (RFC 6143 section 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    /// Bits per pixel: 8, 16 or 32.
    pub bits_per_pixel: u8,
    /// Useful bits.
    pub depth: u8,
    /// Multi-byte pixels are big-endian.
    pub big_endian: bool,
    /// True colour (colour maps are not supported).
    pub true_colour: bool,
    /// Largest red value.
    pub red_max: u16,
    /// Largest green value.
    pub green_max: u16,
    /// Largest blue value.
    pub blue_max: u16,
    /// Bit position of red.
    pub red_shift: u8,
    /// Bit position of green.
    pub green_shift: u8,
    /// Bit position of blue.
    pub blue_shift: u8,
}

impl PixelFormat {
    /// The framebuffer's own format: 32-bit little-endian XRGB (bytes B, G, R, X).
    pub const XRGB8888: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        true_colour: true,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    /// The 16-byte wire form.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[0] = self.bits_per_pixel;
        out[1] = self.depth;
        out[2] = u8::from(self.big_endian);
        out[3] = u8::from(self.true_colour);
        out[4..6].copy_from_slice(&self.red_max.to_be_bytes());
        out[6..8].copy_from_slice(&self.green_max.to_be_bytes());
        out[8..10].copy_from_slice(&self.blue_max.to_be_bytes());
        out[10] = self.red_shift;
        out[11] = self.green_shift;
        out[12] = self.blue_shift;
        out
    }

    fn from_bytes(b: &[u8]) -> PixelFormat {
        PixelFormat {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            true_colour: b[3] != 0,
            red_max: u16::from_be_bytes([b[4], b[5]]),
            green_max: u16::from_be_bytes([b[6], b[7]]),
            blue_max: u16::from_be_bytes([b[8], b[9]]),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        }
    }

    /// Whether this server can produce pixels in this format.
    pub fn is_supported(&self) -> bool {
        let fits = |max: u16, shift: u8| {
            u32::from(shift) + (16 - max.leading_zeros()) <= u32::from(self.bits_per_pixel)
        };
        self.true_colour
            && matches!(self.bits_per_pixel, 8 | 16 | 32)
            && fits(self.red_max, self.red_shift)
            && fits(self.green_max, self.green_shift)
            && fits(self.blue_max, self.blue_shift)
    }

    /// Bytes per pixel.
    pub fn bytes_per_pixel(&self) -> usize {
        usize::from(self.bits_per_pixel / 8)
    }

    /// Appends XRGB8888 pixels (4 bytes each, B G R X) converted to this format.
    pub fn convert_from_xrgb(&self, xrgb: &[u8], out: &mut Vec<u8>) {
        if *self == PixelFormat::XRGB8888 {
            out.extend_from_slice(xrgb);
            return;
        }
        let scale = |value: u8, max: u16| (u32::from(value) * u32::from(max) + 127) / 255;
        for px in xrgb.chunks_exact(4) {
            let value = scale(px[2], self.red_max) << self.red_shift
                | scale(px[1], self.green_max) << self.green_shift
                | scale(px[0], self.blue_max) << self.blue_shift;
            match (self.bits_per_pixel, self.big_endian) {
                (8, _) => out.push(value as u8),
                (16, false) => out.extend_from_slice(&(value as u16).to_le_bytes()),
                (16, true) => out.extend_from_slice(&(value as u16).to_be_bytes()),
                (_, false) => out.extend_from_slice(&value.to_le_bytes()),
                (_, true) => out.extend_from_slice(&value.to_be_bytes()),
            }
        }
    }
}

/// ServerInit: the framebuffer size, the server's pixel format and the desktop name.
pub fn server_init(width: u16, height: u16, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + name.len());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&PixelFormat::XRGB8888.to_bytes());
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// A rectangle of the screen, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: u16,
    /// Top edge.
    pub y: u16,
    /// Width.
    pub width: u16,
    /// Height.
    pub height: u16,
}

/// A client-to-server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Pixels from now on come in this format.
    SetPixelFormat(PixelFormat),
    /// Encodings the client accepts, in order of preference.
    SetEncodings(Vec<i32>),
    /// Send (the changes in) this part of the screen.
    FramebufferUpdateRequest {
        /// Only what changed since the last update.
        incremental: bool,
        /// The part of the screen.
        area: Rect,
    },
    /// A key went down or up.
    KeyEvent {
        /// Pressed (true) or released.
        down: bool,
        /// The X11 keysym.
        keysym: u32,
    },
    /// The pointer moved or a button changed.
    PointerEvent {
        /// Buttons held.
        buttons: u8,
        /// Position.
        x: u16,
        /// Position.
        y: u16,
    },
    /// The client's clipboard (Latin-1).
    ClientCutText(Vec<u8>),
}

/// A client message this server cannot read (the connection ends).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientMessageError {
    /// A message type RFC 6143 does not define for clients (or an extension never enabled).
    #[error("unknown client message type {0}")]
    UnknownType(u8),
    /// ClientCutText over the limit.
    #[error("clipboard text of {0} bytes is too long")]
    CutTextTooLong(u32),
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses the first client message in `buffer`: the message and the bytes it used, or `None`
/// while it is incomplete.
pub fn parse_client_message(
    buffer: &[u8],
) -> Result<Option<(ClientMessage, usize)>, ClientMessageError> {
    let Some(&kind) = buffer.first() else {
        return Ok(None);
    };
    let fixed = match kind {
        0 => 20,
        2 => 4,
        3 => 10,
        4 => 8,
        5 => 6,
        6 => 8,
        other => return Err(ClientMessageError::UnknownType(other)),
    };
    if buffer.len() < fixed {
        return Ok(None);
    }
    let b = buffer;
    let message = match kind {
        0 => (
            ClientMessage::SetPixelFormat(PixelFormat::from_bytes(&b[4..20])),
            20,
        ),
        2 => {
            let count = usize::from(be16(b, 2));
            let end = 4 + 4 * count;
            if b.len() < end {
                return Ok(None);
            }
            let encodings = b[4..end]
                .chunks_exact(4)
                .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (ClientMessage::SetEncodings(encodings), end)
        }
        3 => (
            ClientMessage::FramebufferUpdateRequest {
                incremental: b[1] != 0,
                area: Rect {
                    x: be16(b, 2),
                    y: be16(b, 4),
                    width: be16(b, 6),
                    height: be16(b, 8),
                },
            },
            10,
        ),
        4 => (
            ClientMessage::KeyEvent {
                down: b[1] != 0,
                keysym: be32(b, 4),
            },
            8,
        ),
        5 => (
            ClientMessage::PointerEvent {
                buttons: b[1],
                x: be16(b, 2),
                y: be16(b, 4),
            },
            6,
        ),
        _ => {
            let len = be32(b, 4);
            if len > MAX_CUT_TEXT {
                return Err(ClientMessageError::CutTextTooLong(len));
            }
            let end = 8 + len as usize;
            if b.len() < end {
                return Ok(None);
            }
            (ClientMessage::ClientCutText(b[8..end].to_vec()), end)
        }
    };
    Ok(Some(message))
}

/// Builds a FramebufferUpdate of Raw rectangles, pixels in the client's format.
pub struct UpdateWriter {
    format: PixelFormat,
    bytes: Vec<u8>,
    rectangles: u16,
}

impl UpdateWriter {
    /// An empty update for a client using `format`.
    pub fn new(format: PixelFormat) -> UpdateWriter {
        UpdateWriter {
            format,
            // type 0, padding, rectangle count (filled in by `finish`)
            bytes: vec![0, 0, 0, 0],
            rectangles: 0,
        }
    }

    /// Adds one Raw rectangle; `rows` yields its rows as XRGB8888 bytes, top to bottom.
    pub fn add_raw<'a>(&mut self, area: Rect, rows: impl Iterator<Item = &'a [u8]>) {
        self.bytes.extend_from_slice(&area.x.to_be_bytes());
        self.bytes.extend_from_slice(&area.y.to_be_bytes());
        self.bytes.extend_from_slice(&area.width.to_be_bytes());
        self.bytes.extend_from_slice(&area.height.to_be_bytes());
        self.bytes.extend_from_slice(&ENCODING_RAW.to_be_bytes());
        for row in rows {
            self.format.convert_from_xrgb(row, &mut self.bytes);
        }
        self.rectangles += 1;
    }

    /// Rectangles added so far.
    pub fn rectangles(&self) -> u16 {
        self.rectangles
    }

    /// The finished message.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes[2..4].copy_from_slice(&self.rectangles.to_be_bytes());
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_negotiated_down_to_what_we_speak() {
        assert_eq!(parse_version(b"RFB 003.008\n"), Ok(Version::V3_8));
        assert_eq!(parse_version(b"RFB 003.889\n"), Ok(Version::V3_8));
        assert_eq!(parse_version(b"RFB 003.007\n"), Ok(Version::V3_7));
        assert_eq!(parse_version(b"RFB 003.005\n"), Ok(Version::V3_3));
        assert!(parse_version(b"GET / HTTP/1").is_err());
        assert!(parse_version(b"RFB 004.000\n").is_err());
        assert_eq!(security_offer(Version::V3_3), [0, 0, 0, 1]);
        assert_eq!(security_offer(Version::V3_8), [1, 1]);
        assert_eq!(security_ok(Version::V3_7), None);
        assert_eq!(security_ok(Version::V3_8), Some([0; 4]));
    }

    #[test]
    fn server_init_describes_the_framebuffer() {
        let init = server_init(1024, 768, "vm");
        assert_eq!(&init[..4], &[4, 0, 3, 0]);
        assert_eq!(
            &init[4..20],
            &[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]
        );
        assert_eq!(&init[20..], &[0, 0, 0, 2, b'v', b'm']);
    }

    #[test]
    fn client_messages_parse_and_wait_for_their_bytes() {
        let mut stream = Vec::new();
        let rgbx = PixelFormat {
            red_shift: 0,
            blue_shift: 16,
            ..PixelFormat::XRGB8888
        };
        stream.extend_from_slice(&[0, 0, 0, 0]);
        stream.extend_from_slice(&rgbx.to_bytes());
        stream.extend_from_slice(&[2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21]);
        stream.extend_from_slice(&[3, 1, 0, 1, 0, 2, 0, 3, 0, 4]);
        stream.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 0x0d]);
        stream.extend_from_slice(&[5, 1, 0, 9, 0, 10]);
        stream.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
        let expected = [
            ClientMessage::SetPixelFormat(rgbx),
            ClientMessage::SetEncodings(vec![0, -223]),
            ClientMessage::FramebufferUpdateRequest {
                incremental: true,
                area: Rect {
                    x: 1,
                    y: 2,
                    width: 3,
                    height: 4,
                },
            },
            ClientMessage::KeyEvent {
                down: true,
                keysym: 0xff0d,
            },
            ClientMessage::PointerEvent {
                buttons: 1,
                x: 9,
                y: 10,
            },
            ClientMessage::ClientCutText(b"hi".to_vec()),
        ];
        let mut pos = 0;
        for message in expected {
            let rest = &stream[pos..];
            let (parsed, used) = parse_client_message(rest).unwrap().unwrap();
            assert_eq!(parsed, message);
            for cut in 0..used {
                assert_eq!(
                    parse_client_message(&rest[..cut]),
                    Ok(None),
                    "{cut} of {used}"
                );
            }
            pos += used;
        }
        assert_eq!(pos, stream.len());
        assert_eq!(
            parse_client_message(&[7, 0]),
            Err(ClientMessageError::UnknownType(7))
        );
        assert_eq!(
            parse_client_message(&[6, 0, 0, 0, 0xff, 0, 0, 0]),
            Err(ClientMessageError::CutTextTooLong(0xff00_0000))
        );
    }

    #[test]
    fn pixels_convert_to_the_clients_format() {
        let xrgb = [0x30, 0x20, 0x10, 0x00]; // r=0x10 g=0x20 b=0x30
        let mut out = Vec::new();
        PixelFormat::XRGB8888.convert_from_xrgb(&xrgb, &mut out);
        assert_eq!(out, xrgb);

        let rgbx = PixelFormat {
            red_shift: 0,
            blue_shift: 16,
            ..PixelFormat::XRGB8888
        };
        out.clear();
        rgbx.convert_from_xrgb(&xrgb, &mut out);
        assert_eq!(out, [0x10, 0x20, 0x30, 0]);

        let rgb565_be = PixelFormat {
            bits_per_pixel: 16,
            depth: 16,
            big_endian: true,
            red_max: 31,
            green_max: 63,
            blue_max: 31,
            red_shift: 11,
            green_shift: 5,
            blue_shift: 0,
            ..PixelFormat::XRGB8888
        };
        assert!(rgb565_be.is_supported());
        out.clear();
        rgb565_be.convert_from_xrgb(&[0xff, 0xff, 0xff, 0], &mut out);
        assert_eq!(out, [0xff, 0xff]);

        let colour_map = PixelFormat {
            true_colour: false,
            ..PixelFormat::XRGB8888
        };
        assert!(!colour_map.is_supported());
        let overflowing = PixelFormat {
            bits_per_pixel: 8,
            ..PixelFormat::XRGB8888
        };
        assert!(!overflowing.is_supported());
    }

    #[test]
    fn updates_carry_raw_rectangles() {
        let mut update = UpdateWriter::new(PixelFormat::XRGB8888);
        let row = [1u8, 2, 3, 0, 4, 5, 6, 0];
        update.add_raw(
            Rect {
                x: 3,
                y: 4,
                width: 2,
                height: 1,
            },
            std::iter::once(&row[..]),
        );
        let bytes = update.finish();
        assert_eq!(&bytes[..4], &[0, 0, 0, 1]);
        assert_eq!(&bytes[4..16], &[0, 3, 0, 4, 0, 2, 0, 1, 0, 0, 0, 0]);
        assert_eq!(&bytes[16..], &row);
    }
}
