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
pub use import::{
    import_disk_stream, import_vmdk_stream, ImportSummary, ImportVmdkError, MAX_STREAM_METADATA,
};
pub use sparse_writer::write_monolithic_sparse;
pub use stream_writer::write_stream_optimized;

use crate::source::SourceError;
use header::{SparseHeader, FLAG_NEWLINE_TEST, MAX_CAPACITY_SECTORS, SECTOR};
use stream_writer::{DESCRIPTOR_SECTORS, GRAIN_SECTORS, GTES_PER_GT};

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

/// What every VMDK vireo writes has in its header, for a disk of `capacity` bytes: 64 KiB
/// grains, 512-entry grain tables, the descriptor right after the header, no compression;
/// each writer sets what its format changes. Capacities beyond what readers accept are refused.
fn written_header(capacity: u64) -> Result<SparseHeader, WriteVmdkError> {
    let header = SparseHeader {
        version: 1,
        flags: FLAG_NEWLINE_TEST,
        capacity: capacity.div_ceil(SECTOR),
        grain_size: GRAIN_SECTORS,
        descriptor_offset: 1,
        descriptor_size: DESCRIPTOR_SECTORS,
        gtes_per_gt: GTES_PER_GT,
        rgd_offset: 0,
        gd_offset: 0,
        overhead: 0,
        unclean_shutdown: false,
        compress_algorithm: 0,
    };
    if header.capacity > MAX_CAPACITY_SECTORS {
        return Err(WriteVmdkError::TooLarge(format!(
            "a disk of {} sectors",
            header.capacity
        )));
    }
    Ok(header)
}
