//! PVH boot: the `hvm_start_info` structure and its memory map, as the PVH ABI defines them.

use linux_loader::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use super::zero_page::InitrdRegion;
use super::{layout, MemoryMapEntry};

/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct StartInfo(hvm_start_info);
// SAFETY: hvm_start_info is a repr(C) struct of integers with no padding-dependent invariants.
unsafe impl ByteValued for StartInfo {}

#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct MemmapEntry(hvm_memmap_table_entry);
// SAFETY: hvm_memmap_table_entry is a repr(C) struct of integers.
unsafe impl ByteValued for MemmapEntry {}

#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct ModlistEntry(hvm_modlist_entry);
// SAFETY: hvm_modlist_entry is a repr(C) struct of integers.
unsafe impl ByteValued for ModlistEntry {}

/// Writes the start info (version 1, with memory map, command line, RSDP and the initrd as
/// module 0) at `layout::PVH_INFO_START`.
pub fn write_start_info(
    mem: &GuestMemoryMmap,
    memory_map: &[MemoryMapEntry],
    rsdp_addr: u64,
    initrd: Option<InitrdRegion>,
) -> Result<(), GuestMemoryError> {
    if let Some(initrd) = initrd {
        let module = hvm_modlist_entry {
            paddr: initrd.addr,
            size: initrd.size,
            ..Default::default()
        };
        mem.write_obj(
            ModlistEntry(module),
            GuestAddress(layout::PVH_MODLIST_START),
        )?;
    }
    for (i, entry) in memory_map.iter().enumerate() {
        let raw = hvm_memmap_table_entry {
            addr: entry.addr,
            size: entry.size,
            type_: entry.kind,
            reserved: 0,
        };
        let addr = layout::PVH_MEMMAP_START + (i * std::mem::size_of::<MemmapEntry>()) as u64;
        mem.write_obj(MemmapEntry(raw), GuestAddress(addr))?;
    }
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: layout::CMDLINE_START,
        rsdp_paddr: rsdp_addr,
        memmap_paddr: layout::PVH_MEMMAP_START,
        memmap_entries: memory_map.len() as u32,
        nr_modules: u32::from(initrd.is_some()),
        modlist_paddr: if initrd.is_some() {
            layout::PVH_MODLIST_START
        } else {
            0
        },
        ..Default::default()
    };
    mem.write_obj(StartInfo(info), GuestAddress(layout::PVH_INFO_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::memory_map;

    #[test]
    fn start_info_layout_is_the_pvh_abi() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let map = memory_map(&[(0, 64 << 20)]);
        write_start_info(
            &mem,
            &map,
            0xe0000,
            Some(InitrdRegion {
                addr: 0x200_0000,
                size: 77,
            }),
        )
        .unwrap();
        let read_u32 = |off: u64| {
            mem.read_obj::<u32>(GuestAddress(layout::PVH_INFO_START + off))
                .unwrap()
        };
        let read_u64 = |off: u64| {
            mem.read_obj::<u64>(GuestAddress(layout::PVH_INFO_START + off))
                .unwrap()
        };
        assert_eq!(read_u32(0), XEN_HVM_START_MAGIC_VALUE);
        assert_eq!(read_u32(4), 1);
        assert_eq!(read_u64(24), layout::CMDLINE_START);
        assert_eq!(read_u64(32), 0xe0000);
        assert_eq!(read_u64(40), layout::PVH_MEMMAP_START);
        assert_eq!(read_u32(48), 3);
        assert_eq!(read_u32(12), 1, "one module: the initrd");
        assert_eq!(read_u64(16), layout::PVH_MODLIST_START);
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(layout::PVH_MODLIST_START))
                .unwrap(),
            0x200_0000
        );
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(layout::PVH_MODLIST_START + 8))
                .unwrap(),
            77
        );
        // Third memmap entry: RAM from 1 MiB to 64 MiB, 24 bytes per entry.
        let entry = layout::PVH_MEMMAP_START + 2 * 24;
        assert_eq!(mem.read_obj::<u64>(GuestAddress(entry)).unwrap(), 0x10_0000);
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(entry + 8)).unwrap(),
            (64 << 20) - 0x10_0000
        );
        assert_eq!(mem.read_obj::<u32>(GuestAddress(entry + 16)).unwrap(), 1);
    }
}
