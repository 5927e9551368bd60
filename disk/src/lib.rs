//! vireo-disk: virtual disks for Vireo — the block-device trait, raw and qcow2 images,
//! redo-log chains, snapshot trees, changed-block tracking, VMDK import/export and format
//! conversion. Knows nothing of KVM or SOAP.

pub mod backing;
pub mod block;
pub mod chain;
pub mod convert;
pub mod direct;
pub mod grow;
pub mod layers;
pub mod open;
pub mod qcow2;
pub mod raw;
pub mod shared;
pub mod source;
pub mod tree;
pub mod vmdk;

pub use block::{BlockDevice, BlockError};
pub use open::{open_disk, open_disk_as, OpenError};
pub use shared::SharedDisk;
