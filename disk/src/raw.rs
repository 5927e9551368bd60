//! Raw images: the disk's bytes stored flat in one file.
//! Owns `RawDisk`; discard and zero-writes punch holes where the filesystem allows.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::block::{check_range, BlockDevice, BlockError};
use crate::direct::FileIo;
use crate::open::OpenError;
use crate::shared::{HostExtent, RoutableDevice, Segment};

/// A raw image file behind the `BlockDevice` trait.
pub struct RawDisk {
    file: FileIo,
    path: PathBuf,
    capacity: u64,
    read_only: bool,
}

impl RawDisk {
    /// Opens the raw image at `path`; its size is the disk's capacity.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, OpenError> {
        let file = crate::open::open_image_file(path, read_only)?;
        Self::from_file(file, path, read_only)
    }

    /// The raw image already open as `file` (found at `path`).
    pub fn from_file(file: File, path: &Path, read_only: bool) -> Result<Self, OpenError> {
        let io_err = |source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let capacity = file.metadata().map_err(io_err)?.len();
        Ok(Self {
            file: FileIo::new(file),
            path: path.to_path_buf(),
            capacity,
            read_only,
        })
    }

    fn io_err(&self, source: std::io::Error) -> BlockError {
        BlockError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn check_writable(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        check_range(offset, len, self.capacity)
    }

    /// Zeroes the range by punching a hole, or by writing zeros if the filesystem cannot.
    fn zero_range(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        if len == 0 || punch_hole(self.file.file(), offset, len).is_ok() {
            return Ok(());
        }
        let chunk = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len() as u64) as usize;
            self.file
                .write_all_at(&chunk[..n], offset + done)
                .map_err(|e| self.io_err(e))?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Deallocates `[offset, offset + len)` of `file`, keeping its size.
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    fallocate(file, flags, offset as i64, len as i64).map_err(std::io::Error::from)
}

impl BlockDevice for RawDisk {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        check_range(offset, buf.len() as u64, self.capacity)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| self.io_err(e))
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), BlockError> {
        self.check_writable(offset, buf.len() as u64)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.io_err(e))
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        if self.read_only {
            return Ok(());
        }
        self.file.file().sync_data().map_err(|e| self.io_err(e))
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.check_writable(offset, len)?;
        self.zero_range(offset, len)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.check_writable(offset, len)?;
        self.zero_range(offset, len)
    }
}

impl RoutableDevice for RawDisk {
    fn data_file(&self) -> std::io::Result<File> {
        self.file.file().try_clone()
    }

    fn data_path(&self) -> &Path {
        &self.path
    }

    fn read_route(&mut self, offset: u64, len: u64) -> Result<Option<Vec<Segment>>, BlockError> {
        check_range(offset, len, self.capacity)?;
        Ok(Some(vec![Segment::File(HostExtent {
            host: offset,
            len: len as usize,
        })]))
    }

    fn write_route(
        &mut self,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<HostExtent>>, BlockError> {
        self.check_writable(offset, len)?;
        Ok(Some(vec![HostExtent {
            host: offset,
            len: len as usize,
        }]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_raw(name: &str, size: u64) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vireo-raw-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.raw");
        File::create(&path).unwrap().set_len(size).unwrap();
        path
    }

    #[test]
    fn writes_read_back_and_zeroes_clear_them() {
        let path = temp_raw("rw", 1 << 20);
        let mut disk = RawDisk::open(&path, false).unwrap();
        disk.write_at(&[0xab; 8192], 4096).unwrap();
        let mut buf = [0u8; 8192];
        disk.read_at(&mut buf, 4096).unwrap();
        assert!(buf.iter().all(|&b| b == 0xab));
        disk.write_zeroes(8192, 4096).unwrap();
        disk.read_at(&mut buf, 4096).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0xab));
        assert!(buf[4096..].iter().all(|&b| b == 0));
        disk.flush().unwrap();
        assert!(disk.read_at(&mut buf, (1 << 20) - 4096).is_err());
    }

    #[test]
    fn read_only_refuses_writes() {
        let path = temp_raw("ro", 4096);
        let mut disk = RawDisk::open(&path, true).unwrap();
        assert!(matches!(disk.write_at(&[1], 0), Err(BlockError::ReadOnly)));
        assert!(matches!(disk.discard(0, 512), Err(BlockError::ReadOnly)));
    }
}
