//! What a virtio-blk device needs of its image: requests from several I/O threads at once.
//! Images are opened as `vireo_disk::SharedDisk` (raw or qcow2: plain data I/O runs in parallel,
//! metadata changes one at a time); any `BlockDevice` behind a mutex serves too, one request at
//! a time (tests, fuzzing). Reads are tried from the host's page cache first (`read_cached`),
//! so that only reads that must wait for storage are handed to another thread. A removable-media
//! drive without a medium serves [`NoMedium`].

use std::path::Path;
use std::sync::{Arc, Mutex};

use vireo_disk::block::{BlockDevice, BlockError};
use vireo_disk::open::{probe_file, ImageFormat, OpenError};
use vireo_disk::SharedDisk;
use vireo_vmm_protocol::{CacheMode, DiskConfig, DiskFormat};

use crate::devices::bus::lock;

/// A disk several threads may send requests to at once.
pub trait ConcurrentDisk: Send + Sync {
    /// Size of the disk in bytes.
    fn capacity(&self) -> u64;
    /// Fills `buf` with the disk's contents at byte `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError>;
    /// Like `read_at`, but `Ok(false)` (with `buf` partly filled) instead of waiting for
    /// storage, or when the disk cannot tell cheaply.
    fn read_cached(&self, buf: &mut [u8], offset: u64) -> Result<bool, BlockError>;
    /// Writes `buf` at byte `offset`; durable after `flush`.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BlockError>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), BlockError>;
    /// Discards the range (it then reads as zeros).
    fn discard(&self, offset: u64, len: u64) -> Result<(), BlockError>;
    /// Makes the range read as zeros.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BlockError>;
    /// The disk as a `SharedDisk`, whose routes the device's io_uring can follow.
    fn shared(&self) -> Option<&SharedDisk> {
        None
    }
}

/// An open image as the block device holds it.
pub type SharedImage = Arc<dyn ConcurrentDisk>;

/// Opens an image for the block device as `format` (chosen by magic when vireod gave none;
/// a raw disk is never probed), from the file vireod handed over for `path` if there is one;
/// with cache=none the file is switched to direct I/O (`O_DIRECT`).
pub fn open_image(
    path: &Path,
    format: Option<DiskFormat>,
    read_only: bool,
    cache: CacheMode,
) -> Result<SharedImage, OpenError> {
    let io_error = |source| OpenError::Io {
        path: path.to_owned(),
        source,
    };
    let file = crate::handed::open(path, read_only).map_err(io_error)?;
    let format = match format {
        Some(DiskFormat::Raw) => ImageFormat::Raw,
        Some(DiskFormat::Qcow2) => ImageFormat::Qcow2,
        None => probe_file(&file, path)?,
    };
    // After the probe's small read; from here on the disk crate aligns or bounces every request.
    if cache == CacheMode::None {
        vireo_disk::direct::set_direct(&file).map_err(io_error)?;
    }
    Ok(Arc::new(SharedDisk::from_file_as(
        file, path, format, read_only,
    )?))
}

/// The medium of a disk as its configuration gives it: the image at its path, or
/// [`NoMedium`] for a drive without one.
pub fn open_medium(disk: &DiskConfig) -> Result<SharedImage, OpenError> {
    if disk.no_medium {
        return Ok(Arc::new(NoMedium));
    }
    open_image(&disk.path, disk.format, disk.read_only, disk.cache)
}

/// An empty removable-media drive: zero bytes; every request is out of range.
pub struct NoMedium;

impl NoMedium {
    fn out_of_range(offset: u64, len: usize) -> BlockError {
        BlockError::OutOfRange {
            offset,
            len: len as u64,
            capacity: 0,
        }
    }
}

impl ConcurrentDisk for NoMedium {
    fn capacity(&self) -> u64 {
        0
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        Err(Self::out_of_range(offset, buf.len()))
    }
    fn read_cached(&self, buf: &mut [u8], offset: u64) -> Result<bool, BlockError> {
        Err(Self::out_of_range(offset, buf.len()))
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> Result<(), BlockError> {
        Err(BlockError::ReadOnly)
    }
    fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }
    fn discard(&self, _offset: u64, _len: u64) -> Result<(), BlockError> {
        Err(BlockError::ReadOnly)
    }
    fn write_zeroes(&self, _offset: u64, _len: u64) -> Result<(), BlockError> {
        Err(BlockError::ReadOnly)
    }
}

impl ConcurrentDisk for SharedDisk {
    fn capacity(&self) -> u64 {
        SharedDisk::capacity(self)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        SharedDisk::read_at(self, buf, offset)
    }
    fn read_cached(&self, buf: &mut [u8], offset: u64) -> Result<bool, BlockError> {
        SharedDisk::read_cached(self, buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BlockError> {
        SharedDisk::write_at(self, buf, offset)
    }
    fn flush(&self) -> Result<(), BlockError> {
        SharedDisk::flush(self)
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        SharedDisk::discard(self, offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        SharedDisk::write_zeroes(self, offset, len)
    }
    fn shared(&self) -> Option<&SharedDisk> {
        Some(self)
    }
}

impl ConcurrentDisk for Mutex<Box<dyn BlockDevice>> {
    fn capacity(&self) -> u64 {
        lock(self).capacity()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        lock(self).read_at(buf, offset)
    }
    fn read_cached(&self, _buf: &mut [u8], _offset: u64) -> Result<bool, BlockError> {
        Ok(false)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BlockError> {
        lock(self).write_at(buf, offset)
    }
    fn flush(&self) -> Result<(), BlockError> {
        lock(self).flush()
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        lock(self).discard(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        lock(self).write_zeroes(offset, len)
    }
}
