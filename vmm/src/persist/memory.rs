//! Guest memory to and from the memory file: saved region by region, zero pages as holes;
//! restored as private file mappings, so pages are read lazily and the file stays as saved.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::sys::mman::{MapFlags, ProtFlags};

use crate::vstate::memory::map_file_over;
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
/// Most bytes copied out of guest memory and written at once.
const CHUNK_BYTES: usize = 1 << 20;

/// Writes every region of `memory` to `path` and syncs it; returns the layout. The VM must be
/// paused. See [`MemoryFileWriter`].
pub fn save(
    memory: &GuestMemoryMmap,
    path: &Path,
) -> Result<Vec<MemoryRegionEntry>, MemoryFileError> {
    let mut writer = MemoryFileWriter::create(path, memory)?;
    writer.write_all(memory)?;
    writer.finish()
}

/// A memory file being written: the regions of guest memory back to back. Only pages holding
/// something are written: the rest stay holes, which read back as zeros, so the time and space a
/// save takes follow what the guest uses rather than its size. The file must not exist: a
/// memory file is written once, then only read (a VM restored from it maps it privately and
/// must never see it change), so a file the writer created is synced and left read-only when
/// finished; a file it was sent is its sender's to sync and seal. Pages are copied out of
/// guest memory before they are looked at, so a running guest may change them meanwhile: a
/// live save writes such pages again (see [`MemoryFileWriter::write_dirty`]).
pub struct MemoryFileWriter {
    file: File,
    path: PathBuf,
    entries: Vec<MemoryRegionEntry>,
    buffer: Vec<u8>,
    /// Whether the writer created the file ([`MemoryFileWriter::finish`] then syncs it and
    /// makes it read-only).
    owned: bool,
}

impl MemoryFileWriter {
    /// Creates the file at `path`, sized for `memory`.
    pub fn create(path: &Path, memory: &GuestMemoryMmap) -> Result<Self, MemoryFileError> {
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(path)
            .map_err(|source| io_error(path, source))?;
        let mut writer = MemoryFileWriter::new(file, path, memory)?;
        writer.owned = true;
        Ok(writer)
    }

    /// Writes into `file` (empty, made by whoever sent it, who also syncs it and makes it
    /// read-only when done; known as `path`), sized for `memory`.
    pub fn new(file: File, path: &Path, memory: &GuestMemoryMmap) -> Result<Self, MemoryFileError> {
        let mut entries = Vec::new();
        let mut offset = 0;
        for region in memory.iter() {
            entries.push(MemoryRegionEntry {
                guest_addr: region.start_addr().0,
                len: region.len(),
                file_offset: offset,
            });
            offset += region.len();
        }
        let writer = MemoryFileWriter {
            file,
            path: path.to_owned(),
            entries,
            buffer: vec![0; CHUNK_BYTES],
            owned: false,
        };
        writer.file.set_len(offset).map_err(|e| writer.io(e))?;
        Ok(writer)
    }

    fn io(&self, source: std::io::Error) -> MemoryFileError {
        io_error(&self.path, source)
    }

    /// Writes every page of every region (zero pages stay holes).
    pub fn write_all(&mut self, memory: &GuestMemoryMmap) -> Result<(), MemoryFileError> {
        for (index, region) in memory.iter().enumerate() {
            self.write_range(region, index, 0, region.len() as usize, false)?;
        }
        Ok(())
    }

    /// Writes again the pages set in `dirty` (one bitmap per region, one bit per page), holes
    /// punched for those that are zero now; returns how many pages that was.
    pub fn write_dirty(
        &mut self,
        memory: &GuestMemoryMmap,
        dirty: &[Vec<u64>],
    ) -> Result<u64, MemoryFileError> {
        let mut pages = 0;
        for ((index, region), bitmap) in memory.iter().enumerate().zip(dirty) {
            let limit = region.len() as usize / PAGE_BYTES;
            for (first, count) in runs(bitmap, limit) {
                pages += count as u64;
                let (mut start, end) = (first * PAGE_BYTES, (first + count) * PAGE_BYTES);
                while start < end {
                    let len = (end - start).min(CHUNK_BYTES);
                    self.write_range(region, index, start, len, true)?;
                    start += len;
                }
            }
        }
        Ok(pages)
    }

    /// Copies `len` bytes at `start` of region `index` out of guest memory, in chunks, and
    /// writes their non-zero pages (punching holes for zero ones with `punch`).
    fn write_range(
        &mut self,
        region: &GuestRegionMmap,
        index: usize,
        start: usize,
        len: usize,
        punch: bool,
    ) -> Result<(), MemoryFileError> {
        let base = self.entries[index].file_offset;
        let mut at = start;
        while at < start + len {
            let take = (start + len - at).min(CHUNK_BYTES);
            let slice = region
                .get_slice(vm_memory::MemoryRegionAddress(at as u64), take)
                .map_err(|e| MemoryFileError::Map {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
            slice.copy_to(&mut self.buffer[..take]);
            write_pages(&self.file, &self.buffer[..take], base + at as u64, punch)
                .map_err(|e| self.io(e))?;
            at += take;
        }
        Ok(())
    }

    /// Makes what was written so far durable (a live save does this after its full pass,
    /// while the guest runs, so that the final sync has little left to do).
    pub fn sync_data(&self) -> Result<(), MemoryFileError> {
        self.file.sync_data().map_err(|e| self.io(e))
    }

    /// Syncs the file and makes it read-only when the writer made it (a sent file is left to
    /// its sender); returns its layout.
    pub fn finish(self) -> Result<Vec<MemoryRegionEntry>, MemoryFileError> {
        if !self.owned {
            return Ok(self.entries);
        }
        self.file
            .sync_all()
            .and_then(|()| {
                let mut permissions = self.file.metadata()?.permissions();
                permissions.set_readonly(true);
                self.file.set_permissions(permissions)
            })
            .map_err(|e| self.io(e))?;
        Ok(self.entries)
    }
}

fn io_error(path: &Path, source: std::io::Error) -> MemoryFileError {
    MemoryFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The runs of set bits of `bitmap` below `limit`, as (first bit, count).
fn runs(bitmap: &[u64], limit: usize) -> Vec<(usize, usize)> {
    let is_set = |bit: usize| bitmap[bit / 64] & (1 << (bit % 64)) != 0;
    let limit = limit.min(bitmap.len() * 64);
    let mut runs = Vec::new();
    let mut bit = 0;
    while bit < limit {
        if bitmap[bit / 64] == 0 {
            bit = (bit / 64 + 1) * 64;
            continue;
        }
        if !is_set(bit) {
            bit += 1;
            continue;
        }
        let first = bit;
        while bit < limit && is_set(bit) {
            bit += 1;
        }
        runs.push((first, bit - first));
    }
    runs
}

/// Writes the runs of non-zero pages of `bytes` at `file_offset` onwards; with `punch`, the runs
/// of zero pages become holes (the file may hold older contents there).
fn write_pages(file: &File, bytes: &[u8], file_offset: u64, punch: bool) -> std::io::Result<()> {
    let is_used = |start: usize| {
        let page = &bytes[start..(start + PAGE_BYTES).min(bytes.len())];
        page.iter().any(|byte| *byte != 0)
    };
    let mut start = 0;
    while start < bytes.len() {
        let used = is_used(start);
        let mut end = start + PAGE_BYTES;
        while end < bytes.len() && is_used(end) == used {
            end += PAGE_BYTES;
        }
        let end = end.min(bytes.len());
        let at = file_offset + start as u64;
        if used {
            file.write_all_at(&bytes[start..end], at)?;
        } else if punch {
            punch_hole(file, at, (end - start) as u64)?;
        }
        start = end;
    }
    Ok(())
}

/// Deallocates `len` bytes at `offset` (they read as zeros; the size stays).
fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    fallocate(file, mode, offset as i64, len as i64).map_err(std::io::Error::from)
}

/// Maps the regions `entries` name from the memory `file` (opened by [`open`] from `path`)
/// privately (copy-on-write: the file is never written); pages are read when the guest first
/// touches them.
pub fn restore(
    file: &File,
    path: &Path,
    entries: &[MemoryRegionEntry],
) -> Result<GuestMemoryMmap, MemoryFileError> {
    let map_error = |reason: String| MemoryFileError::Map {
        path: path.to_owned(),
        reason,
    };
    let mut regions = Vec::new();
    for entry in entries {
        let handle = file.try_clone().map_err(|source| io_error(path, source))?;
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

/// Whether `memory` is laid out as `entries` (the same regions, in order).
pub fn fits(memory: &GuestMemoryMmap, entries: &[MemoryRegionEntry]) -> bool {
    memory.num_regions() == entries.len()
        && memory.iter().zip(entries).all(|(region, entry)| {
            region.start_addr().0 == entry.guest_addr && region.len() == entry.len
        })
}

/// As [`restore`], but over `memory` (laid out as `entries`: see [`fits`]) in place, so that
/// memory slots registered over it stay valid: a standby VMM's.
pub fn restore_over(
    file: &File,
    path: &Path,
    entries: &[MemoryRegionEntry],
    memory: GuestMemoryMmap,
) -> Result<GuestMemoryMmap, MemoryFileError> {
    for (region, entry) in memory.iter().zip(entries) {
        map_file_over(region, file, entry.file_offset, false).map_err(|e| {
            MemoryFileError::Map {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        })?;
    }
    Ok(memory)
}

/// The memory file at `path`, checked to hold every region of `entries`.
pub fn open(path: &Path, entries: &[MemoryRegionEntry]) -> Result<File, MemoryFileError> {
    let file = crate::handed::open_once(path).map_err(|source| io_error(path, source))?;
    let actual = file
        .metadata()
        .map_err(|source| io_error(path, source))?
        .len();
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
    Ok(file)
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
        let _ = std::fs::remove_file(&path);
        let entries = save(&memory, &path).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.len(), 2 * size as u64);
        assert!(
            metadata.blocks() * 512 <= 8 * PAGE_BYTES as u64,
            "{} bytes allocated for 4 used pages",
            metadata.blocks() * 512
        );
        assert!(metadata.permissions().readonly());
        // A memory file is never written twice: a VM may be running from it.
        assert!(matches!(
            save(&memory, &path),
            Err(MemoryFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists
        ));
        let restored = restore(&open(&path, &entries).unwrap(), &path, &entries).unwrap();
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
