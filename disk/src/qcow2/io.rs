//! The image file with errors that name it: positional reads and writes, sync, and the
//! rule that a read running into end-of-file is corruption unless the caller allows zero fill.
//! A file open with `O_DIRECT` (cache=none) is read and written through `FileIo`'s bounce
//! buffers where a request is not aligned.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::block::BlockError;
use crate::direct::FileIo;

/// An open qcow2 image file.
pub struct ImageFile {
    file: FileIo,
    path: PathBuf,
}

impl ImageFile {
    /// Wraps an open file.
    pub fn new(file: File, path: &Path) -> Self {
        Self {
            file: FileIo::new(file),
            path: path.to_path_buf(),
        }
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An I/O error naming this file.
    pub fn io_err(&self, source: std::io::Error) -> BlockError {
        BlockError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// A corruption error naming this file.
    pub fn corrupt(&self, reason: impl Into<String>) -> BlockError {
        BlockError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`; running past end-of-file is corruption.
    pub fn read_exact(&self, buf: &mut [u8], offset: u64, what: &str) -> Result<(), BlockError> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.corrupt(format!(
                    "{what} at {offset:#x} lies beyond the end of the file"
                ))
            } else {
                self.io_err(e)
            }
        })
    }

    /// Reads at `offset`, filling whatever lies beyond end-of-file with zeros.
    pub fn read_zero_filled(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    return Ok(());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_all(&self, buf: &[u8], offset: u64) -> Result<(), BlockError> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.io_err(e))
    }

    /// Makes written data durable (fdatasync).
    pub fn sync(&self) -> Result<(), BlockError> {
        self.file.file().sync_data().map_err(|e| self.io_err(e))
    }

    /// Current file length in bytes.
    pub fn len(&self) -> Result<u64, BlockError> {
        Ok(self
            .file
            .file()
            .metadata()
            .map_err(|e| self.io_err(e))?
            .len())
    }

    /// Sets the file length (used when creating images).
    pub fn set_len(&self, len: u64) -> Result<(), BlockError> {
        self.file.file().set_len(len).map_err(|e| self.io_err(e))
    }

    /// The underlying file (for hole punching).
    pub fn file(&self) -> &File {
        self.file.file()
    }
}
