//! Which guest pages changed while a live save copied memory: KVM's dirty log on every memory
//! slot (pages vCPUs wrote; kvm-pvm supports it exactly) plus the ranges the VMM wrote itself
//! ([`host_writes`]), as one bitmap per guest memory region, one bit per 4 KiB page.

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::vstate::host_writes;

const PAGE_BYTES: u64 = 4096;

/// KVM refused to log or report dirty pages.
#[derive(Debug, thiserror::Error)]
#[error("KVM refused {what} on memory slot {slot}: {source}")]
pub struct DirtyLogError {
    what: &'static str,
    slot: u32,
    source: kvm_ioctls::Error,
}

/// Dirty logging while it lives: started on every slot, stopped when dropped.
pub struct DirtyLog<'a> {
    vm: &'a VmFd,
    memory: &'a GuestMemoryMmap,
}

impl<'a> DirtyLog<'a> {
    /// Starts logging every page of `memory` (registered as slots 0.. in order) that a vCPU or
    /// the VMM writes from now on. No virtio device may be processing requests meanwhile (they
    /// record their writes when they take a request).
    pub fn start(vm: &'a VmFd, memory: &'a GuestMemoryMmap) -> Result<Self, DirtyLogError> {
        let log = DirtyLog { vm, memory };
        log.set_flags(KVM_MEM_LOG_DIRTY_PAGES)?;
        host_writes::start();
        Ok(log)
    }

    fn set_flags(&self, flags: u32) -> Result<(), DirtyLogError> {
        for (slot, region) in self.memory.iter().enumerate() {
            let slot = slot as u32;
            let mem_region = kvm_userspace_memory_region {
                slot,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags,
            };
            // SAFETY: the same slot, addresses and mapping the VM was created with (`Vm::new`);
            // only the logging flag changes.
            unsafe { self.vm.set_user_memory_region(mem_region) }.map_err(|source| {
                DirtyLogError {
                    what: "KVM_SET_USER_MEMORY_REGION (dirty logging)",
                    slot,
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// The pages vCPUs wrote since logging started or since the previous call.
    pub fn take_vcpu_writes(&self) -> Result<Vec<Vec<u64>>, DirtyLogError> {
        self.memory
            .iter()
            .enumerate()
            .map(|(slot, region)| {
                let slot = slot as u32;
                self.vm
                    .get_dirty_log(slot, region.len() as usize)
                    .map_err(|source| DirtyLogError {
                        what: "KVM_GET_DIRTY_LOG",
                        slot,
                        source,
                    })
            })
            .collect()
    }

    /// Ends logging (the VM paused, its devices quiesced): the pages vCPUs wrote since the
    /// previous [`DirtyLog::take_vcpu_writes`] and every page the VMM wrote since the start.
    pub fn finish(self) -> Result<Vec<Vec<u64>>, DirtyLogError> {
        let mut dirty = self.take_vcpu_writes()?;
        mark_ranges(self.memory, &mut dirty, &host_writes::stop());
        Ok(dirty)
    }
}

impl Drop for DirtyLog<'_> {
    fn drop(&mut self) {
        host_writes::stop();
        if let Err(error) = self.set_flags(0) {
            // Logging left on only slows the guest's writes; not eprintln!, which panics when
            // stderr's file system is full.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "vireo-vmm: cannot stop dirty logging: {error}"
            );
        }
    }
}

/// Sets in `dirty` the bits of the pages the (address, length) `ranges` touch.
fn mark_ranges(memory: &GuestMemoryMmap, dirty: &mut [Vec<u64>], ranges: &[(u64, u64)]) {
    for &(addr, len) in ranges {
        for (region, bitmap) in memory.iter().zip(dirty.iter_mut()) {
            let (start, end) = (region.start_addr().0, region.start_addr().0 + region.len());
            let (from, to) = (addr.max(start), addr.saturating_add(len).min(end));
            if from >= to {
                continue;
            }
            for page in (from - start) / PAGE_BYTES..=(to - 1 - start) / PAGE_BYTES {
                bitmap[(page / 64) as usize] |= 1 << (page % 64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    #[test]
    fn ranges_mark_every_page_they_touch_in_their_region() {
        let memory = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 128 * 4096),
            (GuestAddress(0x1_0000_0000), 64 * 4096),
        ])
        .unwrap();
        let mut dirty = vec![vec![0u64; 2], vec![0u64; 1]];
        let ranges = [
            (4095, 2),
            (65 * 4096, 1),
            (0x1_0000_0000 + 63 * 4096, 8),
            (1 << 40, 8),
        ];
        mark_ranges(&memory, &mut dirty, &ranges);
        assert_eq!(dirty, vec![vec![0b11, 0b10], vec![1 << 63]]);
    }
}
