//! The block-device contract between virtual disks and their users (the VMM's virtio-blk, `vdisk`).
//! Owns the `BlockDevice` trait, its error type and the range check every format applies.
//! Knows nothing of any format: `open` picks and opens one.

use std::path::PathBuf;

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
