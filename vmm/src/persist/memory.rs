//! Guest memory to and from the memory file: saved region by region, zero pages as holes;
//! restored as private file mappings, so pages are read lazily and the file stays as saved.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::sys::mman::{MapFlags, ProtFlags};
use serde::{Deserialize, Serialize};
use vm_memory::mmap::MmapRegion;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
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

/// Pages that read as zero are left as holes in the memory file.
const PAGE_BYTES: usize = 4096;
/// Longest run of pages written by one call.
const MAX_RUN_BYTES: usize = 1 << 20;

/// Writes every region of `memory` to `path` and syncs it; returns the layout. Only pages holding
/// something are written: the rest stay holes, which read back as zeros, so the time and space a
/// save takes follow what the guest uses rather than its size. The VM must be paused.
pub fn save(
    memory: &GuestMemoryMmap,
    path: &Path,
) -> Result<Vec<MemoryRegionEntry>, MemoryFileError> {
    let io = |source| MemoryFileError::Io {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
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
        let guard = slice.ptr_guard();
        // SAFETY: the region stays mapped while `memory` lives, and the VM is paused with its
        // devices quiesced, so nothing writes these bytes while they are read.
        let bytes = unsafe { std::slice::from_raw_parts(guard.as_ptr(), slice.len()) };
        write_used_pages(&file, bytes, offset).map_err(io)?;
        entries.push(MemoryRegionEntry {
            guest_addr: region.start_addr().0,
            len: region.len(),
            file_offset: offset,
        });
        offset += region.len();
    }
    file.set_len(offset)
        .and_then(|_| file.sync_all())
        .map_err(io)?;
    Ok(entries)
}

/// Writes the runs of non-zero pages of `bytes` at `file_offset` onwards.
fn write_used_pages(file: &File, bytes: &[u8], file_offset: u64) -> std::io::Result<()> {
    let is_used = |start: usize| {
        let page = &bytes[start..(start + PAGE_BYTES).min(bytes.len())];
        page.iter().any(|byte| *byte != 0)
    };
    let mut start = 0;
    while start < bytes.len() {
        if !is_used(start) {
            start += PAGE_BYTES;
            continue;
        }
        let mut end = start + PAGE_BYTES;
        while end < bytes.len() && end - start < MAX_RUN_BYTES && is_used(end) {
            end += PAGE_BYTES;
        }
        let end = end.min(bytes.len());
        file.write_all_at(&bytes[start..end], file_offset + start as u64)?;
        start = end;
    }
    Ok(())
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
            (ProtFlags::PROT_READ | ProtFlags::PROT_WRITE).bits(),
            (MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE).bits(),
        )
        .map_err(|e| map_error(e.to_string()))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(entry.guest_addr))
            .ok_or_else(|| map_error("region wraps the address space".into()))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| map_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use vm_memory::Bytes;

    #[test]
    fn zero_pages_are_holes_and_everything_reads_back() {
        let size = 64 * PAGE_BYTES;
        let memory = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), size),
            (GuestAddress(0x1_0000_0000), size),
        ])
        .unwrap();
        memory
            .write_obj(0xabu8, GuestAddress(5 * PAGE_BYTES as u64 + 7))
            .unwrap();
        memory
            .write_slice(
                &[0x5a; 3 * PAGE_BYTES],
                GuestAddress(0x1_0000_0000 + 2 * PAGE_BYTES as u64),
            )
            .unwrap();
        let path = std::env::temp_dir().join(format!("vireo-mem-{}.bin", std::process::id()));
        let entries = save(&memory, &path).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.len(), 2 * size as u64);
        assert!(
            metadata.blocks() * 512 <= 8 * PAGE_BYTES as u64,
            "{} bytes allocated for 4 used pages",
            metadata.blocks() * 512
        );
        let restored = restore(&path, &entries).unwrap();
        std::fs::remove_file(&path).unwrap();
        for (address, len) in [(0u64, size), (0x1_0000_0000, size)] {
            let (mut before, mut after) = (vec![0u8; len], vec![1u8; len]);
            memory
                .read_slice(&mut before, GuestAddress(address))
                .unwrap();
            restored
                .read_slice(&mut after, GuestAddress(address))
                .unwrap();
            assert!(before == after, "region at {address:#x} differs");
        }
    }
}
