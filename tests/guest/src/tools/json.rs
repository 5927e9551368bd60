//! Just enough JSON for the tools protocol without an allocator: reading the top-level fields
//! of one flat object (strings, booleans and unsigned integers decoded, long escape-free
//! strings handed over raw, anything else only skipped) and writing string values with the
//! escapes JSON requires.

use core::fmt;

/// Longest key or string value decoded; longer ones read as [`Value::Raw`] or unknown.
pub const MAX_TEXT: usize = 128;

/// A field value, as far as the protocol cares (`'b` the decode buffers, `'l` the line).
pub enum Value<'b, 'l> {
    /// A string (decoded).
    Text(&'b str),
    /// An integer that fits a u64.
    Number(u64),
    /// `true` or `false`.
    Bool(bool),
    /// A string too long to decode that holds no escapes: its bytes between the quotes.
    Raw(&'l [u8]),
    /// Anything else: other numbers, literals, arrays, objects, over-long strings.
    Other,
}

/// The line is not one JSON object.
#[derive(Debug)]
pub struct Malformed;

/// Walks the fields of one JSON object, in order.
pub struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
    first: bool,
}

impl<'a> Fields<'a> {
    /// Starts at the object's `{` (whitespace around it allowed).
    pub fn new(bytes: &'a [u8]) -> Result<Fields<'a>, Malformed> {
        let mut fields = Fields {
            bytes,
            pos: 0,
            first: true,
        };
        fields.expect(b'{')?;
        Ok(fields)
    }

    /// The next field, its key and text decoded into the given buffers; `None` after the
    /// closing `}` (only whitespace may follow it).
    pub fn next<'b>(
        &mut self,
        key: &'b mut [u8; MAX_TEXT],
        text: &'b mut [u8; MAX_TEXT],
    ) -> Result<Option<(&'b str, Value<'b, 'a>)>, Malformed> {
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.skip_space();
            return if self.pos == self.bytes.len() {
                Ok(None)
            } else {
                Err(Malformed)
            };
        }
        if !self.first {
            self.expect(b',')?;
        }
        self.first = false;
        self.skip_space();
        let key = self.string(key)?.unwrap_or("");
        self.expect(b':')?;
        self.skip_space();
        let value = match self.peek() {
            Some(b'"') => {
                let start = self.pos + 1;
                match self.string(text)? {
                    Some(decoded) => Value::Text(decoded),
                    None => {
                        let raw = &self.bytes[start..self.pos - 1];
                        if raw.contains(&b'\\') {
                            Value::Other
                        } else {
                            Value::Raw(raw)
                        }
                    }
                }
            }
            Some(b'0'..=b'9') => self.number()?,
            Some(b't') if self.bytes[self.pos..].starts_with(b"true") => {
                self.pos += 4;
                Value::Bool(true)
            }
            Some(b'f') if self.bytes[self.pos..].starts_with(b"false") => {
                self.pos += 5;
                Value::Bool(false)
            }
            _ => {
                self.skip_value()?;
                Value::Other
            }
        };
        Ok(Some((key, value)))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn bump(&mut self) -> Result<u8, Malformed> {
        let byte = self.peek().ok_or(Malformed)?;
        self.pos += 1;
        Ok(byte)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Malformed> {
        self.skip_space();
        (self.bump()? == byte).then_some(()).ok_or(Malformed)
    }

    /// A string at `"`, decoded into `out`; `None` if it does not fit (or is not UTF-8).
    fn string<'b>(&mut self, out: &'b mut [u8; MAX_TEXT]) -> Result<Option<&'b str>, Malformed> {
        self.expect(b'"')?;
        let mut len = 0;
        let mut fits = true;
        let mut utf8 = [0u8; 4];
        loop {
            let count = match self.bump()? {
                b'"' => break,
                b'\\' => match self.bump()? {
                    b'u' => self.unicode_escape()?.encode_utf8(&mut utf8).len(),
                    escape => {
                        utf8[0] = unescape(escape)?;
                        1
                    }
                },
                byte if byte < 0x20 => return Err(Malformed),
                byte => {
                    utf8[0] = byte;
                    1
                }
            };
            match out.get_mut(len..len + count) {
                Some(slot) if fits => {
                    slot.copy_from_slice(&utf8[..count]);
                    len += count;
                }
                _ => fits = false,
            }
        }
        Ok(fits
            .then(|| core::str::from_utf8(&out[..len]).ok())
            .flatten())
    }

    /// The four hex digits after `\u` (a surrogate pair reads as U+FFFD: never a known value).
    fn unicode_escape(&mut self) -> Result<char, Malformed> {
        let mut code = 0u32;
        for _ in 0..4 {
            let digit = char::from(self.bump()?).to_digit(16).ok_or(Malformed)?;
            code = code << 4 | digit;
        }
        Ok(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    /// A number: an integer fitting a u64 is a `Number`, any other valid number `Other`.
    fn number(&mut self) -> Result<Value<'static, 'static>, Malformed> {
        let start = self.pos;
        let mut integer: Option<u64> = Some(0);
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            self.pos += 1;
            integer = integer
                .and_then(|n| n.checked_mul(10))
                .and_then(|n| n.checked_add(u64::from(digit - b'0')));
        }
        let whole = self.pos;
        while matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
        ) {
            self.pos += 1;
        }
        if self.bytes[start] == b'0' && whole - start > 1 {
            return Err(Malformed);
        }
        Ok(match integer {
            Some(n) if self.pos == whole => Value::Number(n),
            _ => Value::Other,
        })
    }

    /// Skips a literal, a negative number, an array or an object (strings inside respected).
    fn skip_value(&mut self) -> Result<(), Malformed> {
        let mut depth = 0usize;
        loop {
            match self.peek().ok_or(Malformed)? {
                b'"' => {
                    let mut scratch = [0u8; MAX_TEXT];
                    self.string(&mut scratch)?;
                }
                b'[' | b'{' => {
                    depth += 1;
                    self.pos += 1;
                }
                b']' | b'}' if depth > 0 => {
                    depth -= 1;
                    self.pos += 1;
                }
                b',' | b'}' | b']' => return Ok(()),
                _ => self.pos += 1,
            }
        }
    }
}

/// The byte a one-letter escape stands for.
fn unescape(escape: u8) -> Result<u8, Malformed> {
    Ok(match escape {
        b'"' | b'\\' | b'/' => escape,
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        _ => return Err(Malformed),
    })
}

/// Displays a string as JSON string contents (quotes not included).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}
