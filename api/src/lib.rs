//! vireo-api: the vim25 wire model. The schema (generated from a published source), the SOAP
//! codec that follows it, faults, and the PropertyCollector's retrieval and update logic.
//! Knows nothing of KVM, disks or sockets.

pub mod codec;
pub mod collector;
pub mod fast_hash;
pub mod fault;
pub mod limits;
pub mod schema;
pub mod value;

pub use fault::Fault;
pub use schema::{vim25, Schema};
pub use value::{DataObject, MoRef, Value};
