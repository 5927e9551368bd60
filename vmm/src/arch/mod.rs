//! x86_64 facts the VMM relies on to boot a guest: where things live, how vCPUs start, and the
//! tables (ACPI, zero page, PVH start info) firmware would normally provide.

pub mod acpi;
pub mod cpuid;
pub mod emulate;
pub mod kvm_pvm;
pub mod layout;
pub mod msr;
pub mod pvh;
pub mod regs;
pub mod zero_page;

/// One range of the guest physical memory map (e820 / PVH memmap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMapEntry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820 type (1 = RAM, 2 = reserved, 3 = ACPI reclaimable).
    pub kind: u32,
}

/// E820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// The guest physical memory map for `ram_regions` (as laid out by `layout::ram_regions`).
pub fn memory_map(ram_regions: &[(u64, u64)]) -> Vec<MemoryMapEntry> {
    let mut map = Vec::with_capacity(ram_regions.len() + 2);
    for &(addr, size) in ram_regions {
        if addr == 0 {
            // Conventional memory below the EBDA; the BIOS area holding our ACPI tables is reserved.
            map.push(MemoryMapEntry {
                addr: 0,
                size: layout::EBDA_START,
                kind: E820_RAM,
            });
            map.push(MemoryMapEntry {
                addr: layout::EBDA_START,
                size: layout::HIGH_MEMORY_START - layout::EBDA_START,
                kind: E820_RESERVED,
            });
            map.push(MemoryMapEntry {
                addr: layout::HIGH_MEMORY_START,
                size: size - layout::HIGH_MEMORY_START,
                kind: E820_RAM,
            });
        } else {
            map.push(MemoryMapEntry {
                addr,
                size,
                kind: E820_RAM,
            });
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_map_reserves_the_bios_area_and_skips_the_mmio_hole() {
        let regions = layout::ram_regions(4 << 30);
        let map = memory_map(&regions);
        assert_eq!(
            map[0],
            MemoryMapEntry {
                addr: 0,
                size: 0x9fc00,
                kind: E820_RAM
            }
        );
        assert_eq!(
            map[1],
            MemoryMapEntry {
                addr: 0x9fc00,
                size: 0x60400,
                kind: E820_RESERVED
            }
        );
        assert_eq!(map[2].addr, 0x10_0000);
        assert_eq!(map[2].addr + map[2].size, layout::MMIO_HOLE_START);
        assert_eq!(map[3].addr, 1 << 32);
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, (4 << 30) - 0x60400);
    }
}
