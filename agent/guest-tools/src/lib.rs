//! vireo-tools: the guest side of Vireo's tools channel (see `docs/tools-protocol.md`). The
//! [`protocol`] module is the wire format both ends share (vireod links it too); [`daemon`]
//! runs the guest side over any byte stream, using [`facts`] to describe the guest,
//! [`actions`] to carry out the host's requests, [`guest_ops`] its guest operations and
//! [`upgrade`] (over [`iso9660`]) to install new tools from the installer CD.

pub mod actions;
pub mod daemon;
pub mod facts;
pub mod guest_ops;
pub mod iso9660;
pub mod protocol;
pub mod upgrade;
