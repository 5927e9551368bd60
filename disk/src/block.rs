//! The block-device contract between virtual disks and their users (the VMM's virtio-blk, `vdisk`).
//! Owns the `BlockDevice` trait, its error type and `open_disk`, which picks the format by magic.
//! Knows nothing of any particular format beyond the magic bytes.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::qcow2::{Qcow2Image, Qcow2OpenError, Qcow2Options};
use crate::raw::RawDisk;

/// A virtual disk as the VMM's block device sees it (byte-addressed, sector-aligned by callers).
pub trait BlockDevice: Send {
    /// Size of the disk in bytes.
    fn capacity(&self) -> u64;
    /// True when writes, discards and zero-writes are refused.
    fn is_read_only(&self) -> bool;
    /// Fills `buf` with the disk's contents starting at byte `offset`.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), BlockError>;
    /// Writes `buf` at byte `offset`; durable only after `flush`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), BlockError>;
    /// Makes every completed write durable; metadata is written back in crash-safe order.
    fn flush(&mut self) -> Result<(), BlockError>;
    /// Tells the disk the range's contents are no longer needed; it then reads as zeros.
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), BlockError>;
    /// Makes the range read as zeros, freeing storage where the format allows.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), BlockError>;
}

/// Why a block request failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// I/O error on the image file
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Request outside the disk
    #[error("request at {offset} of {len} bytes is beyond the disk's {capacity} bytes")]
    OutOfRange {
        /// Start of the request in bytes.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
        /// Disk size in bytes.
        capacity: u64,
    },
    /// Write to a read-only disk
    #[error("the disk is read-only")]
    ReadOnly,
    /// The image's metadata is inconsistent; the image has been marked corrupt where possible
    #[error("corrupt image {path}: {reason}")]
    Corrupt {
        /// The image file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
}

/// Why a disk image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be opened or read
    #[error("cannot open {path}: {source}")]
    Io {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The qcow2 image was refused
    #[error(transparent)]
    Qcow2(#[from] Qcow2OpenError),
}

/// Checks that `[offset, offset + len)` lies within a disk of `capacity` bytes.
pub fn check_range(offset: u64, len: u64, capacity: u64) -> Result<(), BlockError> {
    match offset.checked_add(len) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(BlockError::OutOfRange {
            offset,
            len,
            capacity,
        }),
    }
}

/// The on-disk formats `open_disk` recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// A flat file holding the disk's bytes.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
}

impl ImageFormat {
    /// The format's name (`raw`, `qcow2`), as qemu-img and the `.vmx` write it.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }

    /// The format a name means.
    pub fn from_name(name: &str) -> Option<ImageFormat> {
        match name.trim() {
            n if n.eq_ignore_ascii_case("raw") => Some(ImageFormat::Raw),
            n if n.eq_ignore_ascii_case("qcow2") => Some(ImageFormat::Qcow2),
            _ => None,
        }
    }
}

/// Detects the format of the image at `path` by its magic bytes (anything not qcow2 is raw).
/// Only for images whose owner is trusted: a guest can write any magic into a raw disk.
pub fn probe_format(path: &Path) -> Result<ImageFormat, OpenError> {
    let file = File::open(path).map_err(|source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    probe_file(&file, path)
}

/// Detects the format of the open image `file` (found at `path`) by its magic bytes.
pub fn probe_file(file: &File, path: &Path) -> Result<ImageFormat, OpenError> {
    let io_err = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut magic = [0u8; 4];
    let mut file = file;
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]).map_err(io_err)? {
            0 => break,
            n => got += n,
        }
    }
    if got == 4 && magic == crate::qcow2::header::MAGIC {
        Ok(ImageFormat::Qcow2)
    } else {
        Ok(ImageFormat::Raw)
    }
}

/// Opens a raw or qcow2 image (chosen by magic) with default options.
pub fn open_disk(path: &Path, read_only: bool) -> Result<Box<dyn BlockDevice>, OpenError> {
    open_disk_as(path, probe_format(path)?, read_only)
}

/// Opens the image at `path` as `format` (a raw disk is never probed: its first bytes are
/// the guest's).
pub fn open_disk_as(
    path: &Path,
    format: ImageFormat,
    read_only: bool,
) -> Result<Box<dyn BlockDevice>, OpenError> {
    match format {
        ImageFormat::Raw => Ok(Box::new(RawDisk::open(path, read_only)?)),
        ImageFormat::Qcow2 => {
            let options = Qcow2Options {
                read_only,
                ..Qcow2Options::default()
            };
            Ok(Box::new(Qcow2Image::open(path, &options)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_check_rejects_overflow_and_overrun() {
        assert!(check_range(0, 512, 512).is_ok());
        assert!(check_range(512, 0, 512).is_ok());
        assert!(check_range(1, 512, 512).is_err());
        assert!(check_range(u64::MAX, 2, u64::MAX).is_err());
    }
}
