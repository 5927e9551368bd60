//! The qcow2 format (v3 read/write, v2 read): header, tables, refcounts, the image engine
//! and image creation. See QEMU's docs/interop/qcow2.rst for the on-disk specification.

mod allocation;
pub mod bitmap_store;
pub mod bitmaps;
mod cache;
pub mod check;
pub mod create;
pub mod header;
mod image;
mod io;
pub mod l2;
pub mod refcount;
mod resize;
mod routes;

pub use allocation::{AllocationMap, ClusterState, TableState};
pub use create::{create, BackingSpec, CreateError, CreateOptions};
pub(crate) use image::{backing_name, file_id};
pub use image::{
    format_name, resolve_backing, ExtentKind, LayerExtent, Qcow2Image, Qcow2OpenError, Qcow2Options,
};
pub use resize::Qcow2GrowError;
