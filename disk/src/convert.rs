//! Converting a disk between formats (`vdisk convert`): any readable source (raw, a qcow2
//! chain, a VMDK) into a new qcow2, raw, monolithicSparse or streamOptimized VMDK file,
//! copying only chunks that hold data. A failed conversion removes the new file.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::block::{BlockDevice, BlockError};
use crate::chain::Progress;
use crate::qcow2::{create, CreateError, CreateOptions, Qcow2Image, Qcow2OpenError, Qcow2Options};
use crate::source::{CopySource, SourceError, SourceOpenError};
use crate::vmdk::{
    is_vmdk, write_monolithic_sparse, write_stream_optimized, VmdkDisk, VmdkOpenError,
    WriteVmdkError,
};

/// Bytes copied per request when converting to qcow2 or raw (a cluster: zero clusters stay holes).
const CHUNK: u64 = 64 << 10;

/// The format `convert` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetFormat {
    /// qcow2 v3 with 64 KiB clusters.
    Qcow2,
    /// A flat file (zero chunks left as holes).
    Raw,
    /// A monolithicSparse VMDK.
    VmdkSparse,
    /// A streamOptimized VMDK (compressed grains, as OVF packages carry).
    VmdkStream,
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The source (raw or qcow2 chain) could not be opened
    #[error(transparent)]
    Source(#[from] SourceOpenError),
    /// The VMDK source could not be opened
    #[error(transparent)]
    Vmdk(#[from] VmdkOpenError),
    /// The destination could not be created
    #[error("cannot create {path}: {source}")]
    Create {
        /// The destination.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The qcow2 destination could not be created or opened
    #[error(transparent)]
    Qcow2Create(#[from] CreateError),
    /// The qcow2 destination could not be opened
    #[error(transparent)]
    Qcow2Open(#[from] Qcow2OpenError),
    /// Reading the source or writing the destination failed
    #[error(transparent)]
    Block(#[from] BlockError),
    /// Reading the source failed or was cancelled
    #[error(transparent)]
    Copy(#[from] SourceError),
    /// Writing the VMDK failed
    #[error(transparent)]
    WriteVmdk(#[from] WriteVmdkError),
}

/// Opens `path` for copying: a VMDK (sparse, stream or descriptor) when it looks like one,
/// otherwise a raw image or qcow2 chain by magic (trusted images only).
pub fn open_source(path: &Path) -> Result<CopySource, ConvertError> {
    let vmdk = is_vmdk(path).map_err(|source| VmdkOpenError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if vmdk {
        let mut disk = VmdkDisk::open(path)?;
        let data = disk.data_ranges()?;
        return Ok(CopySource::new(Box::new(disk), data));
    }
    Ok(CopySource::open_chain(path)?)
}

/// Writes `source` into a new file `dest` in `format`; returns the new file's length.
pub fn convert(
    source: &mut CopySource,
    dest: &Path,
    format: TargetFormat,
    progress: Progress,
) -> Result<u64, ConvertError> {
    let result = write_target(source, dest, format, progress);
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

fn write_target(
    source: &mut CopySource,
    dest: &Path,
    format: TargetFormat,
    progress: Progress,
) -> Result<u64, ConvertError> {
    let name = dest
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    match format {
        TargetFormat::Qcow2 => {
            create(dest, &CreateOptions::new(source.capacity()))?;
            let mut image = Qcow2Image::open(dest, &Qcow2Options::default())?;
            source.for_each_data_chunk(CHUNK, progress, |offset, data| {
                image.write_at(data, offset).map_err(ConvertError::from)
            })?;
            image.close()?;
        }
        TargetFormat::Raw => {
            let file = create_new(dest)?;
            file.set_len(source.capacity())
                .map_err(|e| create_error(dest, e))?;
            source.for_each_data_chunk(CHUNK, progress, |offset, data| {
                file.write_all_at(data, offset)
                    .map_err(|e| create_error(dest, e))
            })?;
            file.sync_all().map_err(|e| create_error(dest, e))?;
        }
        TargetFormat::VmdkSparse => {
            let file = create_new(dest)?;
            write_monolithic_sparse(source, &name, &file, progress)?;
        }
        TargetFormat::VmdkStream => {
            let file = create_new(dest)?;
            write_stream_optimized(
                source,
                &name,
                BufWriter::with_capacity(1 << 20, &file),
                progress,
            )?;
            file.sync_all().map_err(|e| create_error(dest, e))?;
        }
    }
    let len = std::fs::metadata(dest)
        .map_err(|e| create_error(dest, e))?
        .len();
    Ok(len)
}

fn create_new(path: &Path) -> Result<File, ConvertError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| create_error(path, e))
}

fn create_error(path: &Path, source: std::io::Error) -> ConvertError {
    ConvertError::Create {
        path: path.to_path_buf(),
        source,
    }
}
