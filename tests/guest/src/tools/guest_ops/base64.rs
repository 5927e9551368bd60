//! Base64 (RFC 4648, padded) for file chunks, without an allocator.

use core::fmt;

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(super) fn encode(bytes: &[u8], out: &mut impl fmt::Write) -> fmt::Result {
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let mut quad = [b'='; 4];
        for (i, q) in quad.iter_mut().enumerate().take(group.len() + 1) {
            *q = BASE64[(n >> (18 - 6 * i) & 63) as usize];
        }
        out.write_str(core::str::from_utf8(&quad).map_err(|_| fmt::Error)?)?;
    }
    Ok(())
}

/// Decodes `text` into `out`; the byte count, or `None` if it is not base64 or does not fit.
pub(super) fn decode(text: &[u8], out: &mut [u8]) -> Option<usize> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut written = 0;
    for quad in text.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for &c in quad {
            let value = match c {
                b'=' => {
                    pad += 1;
                    0
                }
                _ if pad > 0 => return None,
                _ => BASE64.iter().position(|&b| b == c)? as u32,
            };
            n = n << 6 | value;
        }
        let count = 3usize.checked_sub(pad)?;
        let slot = out.get_mut(written..written + count)?;
        slot.copy_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8][..count]);
        written += count;
    }
    Some(written)
}
