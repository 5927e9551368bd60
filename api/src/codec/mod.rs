//! The SOAP codec: [`decode`] reads request envelopes into value trees, [`encode`] writes
//! responses and faults; both follow the schema. [`datetime`] holds the xsd:dateTime text form.

pub mod datetime;
pub mod decode;
pub mod encode;

pub use decode::{decode_request, DecodeRequestError, Request};
pub use encode::{encode_element, encode_fault, encode_response};

#[cfg(test)]
mod tests;
