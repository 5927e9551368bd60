//! Guest memory: anonymous private mappings advised as huge pages (first touch from ring 3 is
//! ten times cheaper with THP on these machines) — RAM, plus regions such as the framebuffer;
//! files (a saved VM's memory, the framebuffer's file) are mapped over it in place.

use std::fs::File;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{madvise, mmap, MapFlags, MmapAdvise, ProtFlags};
use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
};

use crate::arch::layout;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host refused the mapping (usually not enough memory or address space).
    #[error("cannot map {mib} MiB of guest memory: {source}")]
    Map {
        /// Requested RAM size.
        mib: u64,
        /// The mapping error.
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Maps `ram_size` bytes of RAM laid out by `layout::ram_regions`, plus the `extra`
/// (start, size) regions.
pub fn create_guest_memory(
    ram_size: u64,
    extra: &[(u64, u64)],
) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = layout::ram_regions(ram_size)
        .into_iter()
        .chain(extra.iter().copied())
        .map(|(addr, len)| (GuestAddress(addr), len as usize))
        .collect();
    let memory = GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Map {
        mib: ram_size >> 20,
        source,
    })?;
    for region in memory.iter() {
        let host = region.as_ptr();
        let Some(host) = NonNull::new(host.cast()) else {
            continue;
        };
        // SAFETY: the range is exactly the mapping vm-memory just created; madvise only changes
        // how the kernel backs it. Failure (no THP) is harmless, so the result is ignored.
        let _ = unsafe { madvise(host, region.len() as usize, MmapAdvise::MADV_HUGEPAGE) };
    }
    Ok(memory)
}

/// Maps `region.len()` bytes of `file` from `offset` over guest memory `region`, in place
/// (`MAP_FIXED`): shared (the guest's writes reach the file) or private (copy-on-write). The
/// region keeps its host address, so a memory slot registered over it stays valid — KVM drops
/// what it had mapped of the old pages through its MMU notifier and faults the new ones in.
pub fn map_file_over(
    region: &GuestRegionMmap,
    file: &File,
    offset: u64,
    shared: bool,
) -> std::io::Result<()> {
    let (Some(host), Some(len)) = (
        NonZeroUsize::new(region.as_ptr() as usize),
        NonZeroUsize::new(region.len() as usize),
    ) else {
        return Err(std::io::ErrorKind::InvalidInput.into());
    };
    let offset = i64::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let sharing = match shared {
        true => MapFlags::MAP_SHARED,
        false => MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
    };
    // SAFETY: the range is exactly a mapping the region owns (and unmaps when dropped); the
    // new mapping replaces its pages and nothing else. Guest memory is only ever accessed
    // through volatile slices and by KVM, neither of which holds references across this.
    unsafe {
        mmap(
            Some(host),
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            sharing | MapFlags::MAP_FIXED,
            file,
            offset,
        )
    }
    .map(drop)
    .map_err(std::io::Error::from)
}
