//! The SOAP codec: [`decode`] reads request envelopes into value trees, [`encode`] writes
//! responses and faults; both follow the schema. [`datetime`] holds the xsd:dateTime text form.

pub mod datetime;
pub mod decode;
pub mod encode;

pub use decode::{decode_request, DecodeRequestError, Request};
pub use encode::{encode_element, encode_fault, encode_response};

/// Whether XML 1.0 allows `c` in a document (its `Char` production): tab, newline, carriage
/// return and everything from U+0020 except U+FFFE and U+FFFF (a `char` is never a surrogate).
pub(crate) fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// Whether UTF-8 text whose byte at some position is `b` may hold a character [`xml_char`]
/// refuses there: a C0 control other than tab, newline and carriage return, or 0xEF (the
/// first byte of U+FFFE and U+FFFF, and of other characters). Text without such a byte is all
/// XML characters.
pub(crate) const fn may_start_non_xml_char(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0xEF
}

#[cfg(test)]
mod tests;
