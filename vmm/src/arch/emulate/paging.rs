//! Guest linear memory through the guest's own page tables (4- or 5-level, 4 KiB / 2 MiB /
//! 1 GiB pages), with the checks the CPU makes: present, R/W (with CR0.WP), U/S (with SMAP and
//! RFLAGS.AC), and accessed/dirty bits set as the CPU would. A failed check becomes the #PF the
//! CPU would raise, with its error code and faulting address.

use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{host_cmpxchg16b, Exception, Memory, Stop};
use crate::vstate::host_writes;

const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_USER: u64 = 1 << 2;
const PTE_ACCESSED: u64 = 1 << 5;
const PTE_DIRTY: u64 = 1 << 6;
const PTE_LARGE: u64 = 1 << 7;
const PTE_ADDRESS: u64 = 0x000f_ffff_ffff_f000;

const PF_PRESENT: u32 = 1 << 0;
const PF_WRITE: u32 = 1 << 1;
const PF_USER: u32 = 1 << 2;

const CR0_PG: u64 = 1 << 31;
const CR0_WP: u64 = 1 << 16;
const CR4_LA57: u64 = 1 << 12;
const CR4_SMAP: u64 = 1 << 21;
const RFLAGS_AC: u64 = 1 << 18;
const PAGE_SIZE: u64 = 4096;

/// The guest's address space as one vCPU sees it at the faulting instruction.
pub struct PagedMemory<'a> {
    /// Guest physical memory.
    pub memory: &'a GuestMemoryMmap,
    /// CR0 (PG, WP).
    pub cr0: u64,
    /// CR3 (the top-level table).
    pub cr3: u64,
    /// CR4 (LA57, SMAP).
    pub cr4: u64,
    /// Current privilege level.
    pub cpl: u8,
    /// RFLAGS (AC lifts SMAP).
    pub rflags: u64,
}

impl PagedMemory<'_> {
    /// The guest physical address of `addr` for a data access (`write` or read), or the #PF.
    fn translate(&self, addr: u64, write: bool) -> Result<u64, Stop> {
        if self.cr0 & CR0_PG == 0 {
            return Ok(addr);
        }
        let user = self.cpl == 3;
        let fault = |present: bool| {
            let mut error_code = 0;
            if present {
                error_code |= PF_PRESENT;
            }
            if write {
                error_code |= PF_WRITE;
            }
            if user {
                error_code |= PF_USER;
            }
            Stop::Fault(Exception::PageFault {
                address: addr,
                error_code,
            })
        };
        let levels = if self.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
        let mut table = self.cr3 & PTE_ADDRESS;
        let (mut writable, mut user_page) = (true, true);
        for level in (1..=levels).rev() {
            let shift = 12 + 9 * (level - 1);
            let entry_addr = table + ((addr >> shift) & 0x1ff) * 8;
            let entry = self.entry(entry_addr)?;
            let value = entry.load(Ordering::SeqCst);
            if value & PTE_PRESENT == 0 {
                return Err(fault(false));
            }
            writable &= value & PTE_WRITABLE != 0;
            user_page &= value & PTE_USER != 0;
            let leaf = level == 1 || (level <= 3 && value & PTE_LARGE != 0);
            if !leaf {
                entry.fetch_or(PTE_ACCESSED, Ordering::SeqCst);
                table = value & PTE_ADDRESS;
                continue;
            }
            let denied = (user && !user_page)
                || (write && !writable && (user || self.cr0 & CR0_WP != 0))
                || (!user && user_page && self.cr4 & CR4_SMAP != 0 && self.rflags & RFLAGS_AC == 0);
            if denied {
                return Err(fault(true));
            }
            entry.fetch_or(
                PTE_ACCESSED | if write { PTE_DIRTY } else { 0 },
                Ordering::SeqCst,
            );
            // Large pages: the frame's low bits (PAT at bit 12) are below the page size.
            let page_mask = (1u64 << shift) - 1;
            let frame = value & PTE_ADDRESS & !page_mask;
            return Ok(frame | (addr & page_mask));
        }
        unreachable!("the walk ends at level 1")
    }

    /// A page-table entry in guest RAM, for atomic updates of its A/D bits.
    fn entry(&self, gpa: u64) -> Result<&AtomicU64, Stop> {
        let host = self.host_pointer(gpa, 8)?;
        host_writes::record(gpa, 8);
        // SAFETY: `host` points to 8 bytes of guest RAM, 8-byte aligned (entries are), that
        // live as long as `self.memory`; the guest may change them concurrently, hence atomics.
        Ok(unsafe { AtomicU64::from_ptr(host.cast::<u64>()) })
    }

    /// The host address of `len` bytes of guest RAM at `gpa` (which must not cross a page).
    fn host_pointer(&self, gpa: u64, len: usize) -> Result<*mut u8, Stop> {
        let unbacked = || Stop::NotCovered(format!("access to {gpa:#x}, which is not guest RAM"));
        let addr = GuestAddress(gpa);
        if !GuestMemoryBackend::check_range(self.memory, addr, len) {
            return Err(unbacked());
        }
        self.memory.get_host_address(addr).map_err(|_| unbacked())
    }

    /// Runs `f` on each piece of `len` bytes at linear `addr` split at page boundaries, with the
    /// piece's guest physical address and its offset in the access. Translates every piece
    /// before touching any, so a fault leaves memory unchanged.
    fn pieces(&self, addr: u64, len: usize, write: bool) -> Result<Vec<(u64, usize, usize)>, Stop> {
        let mut out = Vec::with_capacity(2);
        let mut done = 0;
        while done < len {
            let linear = addr.wrapping_add(done as u64);
            let in_page = (PAGE_SIZE - linear % PAGE_SIZE) as usize;
            let n = in_page.min(len - done);
            out.push((self.translate(linear, write)?, done, n));
            done += n;
        }
        Ok(out)
    }
}

impl Memory for PagedMemory<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Stop> {
        for (gpa, offset, n) in self.pieces(addr, buf.len(), false)? {
            self.host_pointer(gpa, n)?;
            self.memory
                .read_slice(&mut buf[offset..offset + n], GuestAddress(gpa))
                .map_err(|e| Stop::NotCovered(format!("reading guest memory: {e}")))?;
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Stop> {
        let pieces = self.pieces(addr, data.len(), true)?;
        for &(gpa, _, n) in &pieces {
            self.host_pointer(gpa, n)?;
        }
        for (gpa, offset, n) in pieces {
            host_writes::record(gpa, n as u64);
            self.memory
                .write_slice(&data[offset..offset + n], GuestAddress(gpa))
                .map_err(|e| Stop::NotCovered(format!("writing guest memory: {e}")))?;
        }
        Ok(())
    }

    fn compare_exchange_16(&mut self, addr: u64, expected: u128, new: u128) -> Result<u128, Stop> {
        // An aligned 16-byte operand never crosses a page. The CPU checks write access even
        // when the comparison fails (it writes the old value back).
        let gpa = self.translate(addr, true)?;
        let host = self.host_pointer(gpa, 16)?;
        host_writes::record(gpa, 16);
        // SAFETY: 16 bytes of guest RAM at `host`, 16-byte aligned because `addr` is and pages
        // are; the mapping lives as long as `self.memory`.
        Ok(unsafe { host_cmpxchg16b(host.cast::<u128>(), expected, new) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest RAM with a 4-level mapping: linear 0x40_0000_1000 (and 0x40_0020_0000 via a 2 MiB
    /// page) built with the given leaf flags.
    fn mapped(leaf_flags: u64) -> GuestMemoryMmap {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let linear = 0x40_0000_1000u64;
        let (pml4, pdpt, pd, pt) = (0x1000u64, 0x2000u64, 0x3000u64, 0x4000u64);
        let table_flags = PTE_PRESENT | PTE_WRITABLE | PTE_USER;
        let put = |table: u64, index: u64, value: u64| {
            mem.write_obj(value, GuestAddress(table + index * 8))
                .unwrap()
        };
        put(pml4, (linear >> 39) & 0x1ff, pdpt | table_flags);
        put(pdpt, (linear >> 30) & 0x1ff, pd | table_flags);
        put(pd, (linear >> 21) & 0x1ff, pt | table_flags);
        put(pt, (linear >> 12) & 0x1ff, 0x10_0000 | leaf_flags);
        put(pd, 1, 0x40_0000 | leaf_flags | PTE_LARGE);
        mem
    }

    fn paged(mem: &GuestMemoryMmap, cpl: u8, cr4: u64) -> PagedMemory<'_> {
        PagedMemory {
            memory: mem,
            cr0: CR0_PG | CR0_WP | 1,
            cr3: 0x1000,
            cr4,
            cpl,
            rflags: 2,
        }
    }

    #[test]
    fn reads_and_writes_follow_the_guest_mapping_and_set_dirty() {
        let mem = mapped(PTE_PRESENT | PTE_WRITABLE);
        let mut m = paged(&mem, 0, 0);
        m.write(0x40_0000_1ff8, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(0x10_0ff8)).unwrap(),
            0x0807_0605_0403_0201
        );
        let pte = mem.read_obj::<u64>(GuestAddress(0x4000 + 8)).unwrap();
        assert_eq!(pte & (PTE_ACCESSED | PTE_DIRTY), PTE_ACCESSED | PTE_DIRTY);
        // 2 MiB page: PD entry 1 maps 0x40_0020_0000 to 0x40_0000.
        let mut buf = [0u8; 4];
        mem.write_slice(&[9, 9, 9, 9], GuestAddress(0x40_0123))
            .unwrap();
        m.read(0x40_0020_0123, &mut buf).unwrap();
        assert_eq!(buf, [9; 4]);
    }

    #[test]
    fn violations_raise_the_page_fault_the_cpu_would() {
        let ro = mapped(PTE_PRESENT);
        let err = paged(&ro, 0, 0).write(0x40_0000_1000, &[0]).unwrap_err();
        let fault = |address, error_code| {
            Stop::Fault(Exception::PageFault {
                address,
                error_code,
            })
        };
        assert_eq!(err, fault(0x40_0000_1000, PF_PRESENT | PF_WRITE));
        let mut buf = [0u8; 8];
        let err = paged(&ro, 3, 0).read(0x40_0000_1000, &mut buf).unwrap_err();
        assert_eq!(err, fault(0x40_0000_1000, PF_PRESENT | PF_USER));
        let err = paged(&ro, 0, 0).read(0x50_0000_0000, &mut buf).unwrap_err();
        assert_eq!(err, fault(0x50_0000_0000, 0));
        let user = mapped(PTE_PRESENT | PTE_USER);
        let err = paged(&user, 0, CR4_SMAP)
            .read(0x40_0000_1000, &mut buf)
            .unwrap_err();
        assert_eq!(err, fault(0x40_0000_1000, PF_PRESENT));
        // A write that would cross into an unmapped page changes nothing.
        let rw = mapped(PTE_PRESENT | PTE_WRITABLE);
        let err = paged(&rw, 0, 0).write(0x40_0000_1ffc, &[7; 8]).unwrap_err();
        assert_eq!(err, fault(0x40_0000_2000, PF_WRITE));
        assert_eq!(rw.read_obj::<u32>(GuestAddress(0x10_0ffc)).unwrap(), 0);
    }
}
