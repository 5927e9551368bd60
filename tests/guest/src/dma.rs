//! Memory that devices read and write (virtqueues, request headers, data buffers), carved from
//! the RAM of the PVH memory map above the kernel image and never freed. The first 4 GiB are
//! identity-mapped, so a region's address is both what ring 3 dereferences and what a device
//! is given.

use crate::cell::BootCpuCell;
use crate::pvh::RamRange;

extern "C" {
    /// End of the loaded image (.bss included), from link.ld.
    static __bss_end: u8;
}

/// Device-visible memory: `len` bytes at physical (= virtual) address `addr`, zeroed when
/// allocated, owned by whoever holds the region.
pub struct DmaRegion {
    addr: u64,
    len: usize,
}

impl DmaRegion {
    /// Physical address of the first byte.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The bytes (the device must not be writing them meanwhile).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the region is mapped, owned by self, and was zero-initialised.
        unsafe { core::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    /// The bytes, writable (the device must not be using them meanwhile).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`, and `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }
}

/// Why an allocation failed.
#[derive(Debug, thiserror::Error)]
pub enum DmaError {
    /// `init` found no RAM above the kernel image.
    #[error("no RAM for device buffers above the kernel image")]
    NoRam,
    /// The RAM set aside is used up.
    #[error("out of device memory: {wanted} bytes wanted, {left} left")]
    Exhausted {
        /// Bytes asked for.
        wanted: usize,
        /// Bytes still free.
        left: u64,
    },
}

struct Allocator {
    next: u64,
    end: u64,
}

static ALLOCATOR: BootCpuCell<Allocator> = BootCpuCell::new(Allocator { next: 0, end: 0 });

/// Sets the allocator to the RAM range holding the kernel image, from the image's end (call
/// once the boot info has been copied: the loader's pages may be reused).
pub fn init(ram: &[RamRange]) {
    let image_end = core::ptr::addr_of!(__bss_end) as u64;
    let limit = crate::phys::MAPPED_LIMIT;
    let range = ram
        .iter()
        .find(|r| r.start <= image_end && image_end < r.start.saturating_add(r.len));
    if let Some(range) = range {
        ALLOCATOR.with(|a| {
            a.next = image_end;
            a.end = range.start.saturating_add(range.len).min(limit);
        });
    }
}

/// `len` zeroed bytes aligned to `align` (a power of two).
pub fn alloc(len: usize, align: u64) -> Result<DmaRegion, DmaError> {
    let addr = ALLOCATOR.with(|a| {
        if a.end == 0 {
            return Err(DmaError::NoRam);
        }
        let start = a.next.next_multiple_of(align);
        let end = start.saturating_add(len as u64);
        if end > a.end {
            return Err(DmaError::Exhausted {
                wanted: len,
                left: a.end.saturating_sub(start),
            });
        }
        a.next = end;
        Ok(start)
    })?;
    let mut region = DmaRegion { addr, len };
    region.bytes_mut().fill(0);
    Ok(region)
}
