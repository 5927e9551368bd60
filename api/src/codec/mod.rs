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

#[cfg(test)]
mod tests;
