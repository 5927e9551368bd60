//! `mark set TEXT` / `mark get`: a line of text kept only in guest RAM (like a file on a
//! tmpfs), so that tests can tell a resumed memory image from a fresh boot or a later state.

use crate::cell::BootCpuCell;

/// Longest marker kept (longer text is cut at a character boundary).
const CAPACITY: usize = 128;

struct Marker {
    text: [u8; CAPACITY],
    len: usize,
}

static MARKER: BootCpuCell<Marker> = BootCpuCell::new(Marker {
    text: [0; CAPACITY],
    len: 0,
});

/// Replaces the marker with `text`.
pub fn set(text: &str) {
    let mut len = text.len().min(CAPACITY);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    MARKER.with(|m| {
        m.text[..len].copy_from_slice(&text.as_bytes()[..len]);
        m.len = len;
    });
}

/// Runs `f` on the marker (empty until the first `set`).
pub fn with<R>(f: impl FnOnce(&str) -> R) -> R {
    MARKER.with(|m| f(core::str::from_utf8(&m.text[..m.len]).unwrap_or("")))
}
