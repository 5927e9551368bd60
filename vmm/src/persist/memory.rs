//! Guest memory to and from the memory file: saved region by region; restored as private
//! file mappings, so pages are read lazily and the file stays as saved.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vm_memory::mmap::MmapRegion;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, WriteVolatile,
};

/// One region of guest memory in the memory file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRegionEntry {
    /// Guest physical address.
    pub guest_addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// Offset in the memory file.
    pub file_offset: u64,
}

/// Errors saving or mapping guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    /// File I/O failed.
    #[error("memory file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is shorter than the regions it should hold.
    #[error("memory file {path} holds {actual} bytes; the state needs {needed}")]
    Short {
        /// The file.
        path: PathBuf,
        /// Its size.
        actual: u64,
        /// What the regions need.
        needed: u64,
    },
    /// Mapping a region failed.
    #[error("cannot map memory file {path}: {reason}")]
    Map {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Writes every region of `memory` to `path` and syncs it; returns the layout.
pub fn save(
    memory: &GuestMemoryMmap,
    path: &Path,
) -> Result<Vec<MemoryRegionEntry>, MemoryFileError> {
    let io = |source| MemoryFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(io)?;
    let mut entries = Vec::new();
    let mut offset = 0;
    for region in memory.iter() {
        let slice = region
            .get_slice(vm_memory::MemoryRegionAddress(0), region.len() as usize)
            .map_err(|e| MemoryFileError::Map {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        file.write_all_volatile(&slice)
            .map_err(|e| MemoryFileError::Io {
                path: path.to_owned(),
                source: std::io::Error::other(e.to_string()),
            })?;
        entries.push(MemoryRegionEntry {
            guest_addr: region.start_addr().0,
            len: region.len(),
            file_offset: offset,
        });
        offset += region.len();
    }
    file.flush().and_then(|_| file.sync_all()).map_err(io)?;
    Ok(entries)
}

/// Maps the regions of `path` privately (copy-on-write) as guest memory.
pub fn restore(
    path: &Path,
    entries: &[MemoryRegionEntry],
) -> Result<GuestMemoryMmap, MemoryFileError> {
    let io = |source| MemoryFileError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let actual = file.metadata().map_err(io)?.len();
    let needed = entries
        .iter()
        .map(|e| e.file_offset + e.len)
        .max()
        .unwrap_or(0);
    if actual < needed {
        return Err(MemoryFileError::Short {
            path: path.to_owned(),
            actual,
            needed,
        });
    }
    let map_error = |reason: String| MemoryFileError::Map {
        path: path.to_owned(),
        reason,
    };
    let mut regions = Vec::new();
    for entry in entries {
        let handle = file.try_clone().map_err(io)?;
        let mapping = MmapRegion::<()>::build(
            Some(FileOffset::new(handle, entry.file_offset)),
            entry.len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(|e| map_error(e.to_string()))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(entry.guest_addr))
            .ok_or_else(|| map_error("region wraps the address space".into()))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| map_error(e.to_string()))
}
