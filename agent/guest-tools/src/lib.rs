//! vireo-tools: the guest side of Vireo's tools channel (see `docs/tools-protocol.md`). The
//! [`protocol`] module is the wire format both ends share (vireod links it too); [`daemon`]
//! runs the guest side over any byte stream, using [`facts`] to describe the guest,
//! [`actions`] to carry out the host's requests and [`guest_ops`] its guest operations.

pub mod actions;
pub mod daemon;
pub mod facts;
pub mod guest_ops;
pub mod protocol;
