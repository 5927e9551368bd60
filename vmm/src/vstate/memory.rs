//! Guest memory: anonymous private mappings advised as huge pages (first touch from ring 3 is
//! ten times cheaper with THP on these machines) — RAM, plus regions such as the framebuffer.

use std::ptr::NonNull;

use nix::sys::mman::{madvise, MmapAdvise};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

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
