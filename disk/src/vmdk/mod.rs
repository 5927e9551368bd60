//! VMware VMDK disks (facts from VMware's "Virtual Disk Format 5.0"): reading monolithicSparse,
//! streamOptimized and descriptor + flat/sparse/zero extents (`VmdkDisk`, read-only), writing
//! monolithicSparse into a file and streamOptimized into any `Write`, and importing a VMDK
//! that arrives on a `Read` into a new qcow2. Extent files named by a descriptor are opened
//! only inside the descriptor's folder.

pub mod descriptor;
mod disk;
pub mod header;
mod import;
mod sparse;
mod sparse_writer;
mod stream_writer;

pub use disk::{is_vmdk, VmdkDisk, VmdkOpenError};
pub use import::{import_vmdk_stream, ImportSummary, ImportVmdkError, MAX_STREAM_METADATA};
pub use sparse_writer::write_monolithic_sparse;
pub use stream_writer::write_stream_optimized;

use crate::source::SourceError;
use header::{SparseHeader, MAX_CAPACITY_SECTORS};

/// Why a VMDK could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteVmdkError {
    /// Reading the source disk failed or was cancelled
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Writing the output failed
    #[error("writing the VMDK: {0}")]
    Write(#[source] std::io::Error),
    /// Compressing a grain failed
    #[error("compressing a grain: {0}")]
    Compress(String),
    /// Something does not fit the format's limits
    #[error("{0} does not fit in a sparse VMDK")]
    TooLarge(String),
}

/// Refuses capacities beyond what readers accept.
fn check_capacity(header: &SparseHeader) -> Result<(), WriteVmdkError> {
    if header.capacity > MAX_CAPACITY_SECTORS {
        return Err(WriteVmdkError::TooLarge(format!(
            "a disk of {} sectors",
            header.capacity
        )));
    }
    Ok(())
}
