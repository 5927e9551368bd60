//! The Linux zero page (`boot_params`) for a bzImage booted through its 64-bit entry:
//! setup header from the image, loader identity, command line, initrd, e820 map and RSDP.

use linux_loader::bootparam::{boot_e820_entry, boot_params, screen_info, setup_header};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use super::{layout, MemoryMapEntry};

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// Oldest boot protocol we drive (2.12: 64-bit entry, xloadflags).
pub const MIN_BOOT_PROTOCOL: u16 = 0x020c;

#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct ZeroPage(boot_params);
// SAFETY: boot_params is a packed C struct of integers; any byte pattern is valid.
unsafe impl ByteValued for ZeroPage {}

/// Where an initrd was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdRegion {
    /// Guest address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Builds the zero page from the kernel's setup header.
pub fn build(
    header: setup_header,
    cmdline_size: usize,
    initrd: Option<InitrdRegion>,
    memory_map: &[MemoryMapEntry],
    rsdp_addr: u64,
    screen: screen_info,
) -> boot_params {
    let mut params = boot_params {
        hdr: header,
        screen_info: screen,
        ..Default::default()
    };
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_size as u32;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    params.acpi_rsdp_addr = rsdp_addr;
    let count = memory_map.len().min(params.e820_table.len());
    for (slot, entry) in params.e820_table.iter_mut().zip(&memory_map[..count]) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_entries = count as u8;
    params
}

/// Copies the zero page to `layout::ZERO_PAGE_START`.
pub fn write(mem: &GuestMemoryMmap, params: boot_params) -> Result<(), GuestMemoryError> {
    mem.write_obj(ZeroPage(params), GuestAddress(layout::ZERO_PAGE_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::memory_map;

    #[test]
    fn zero_page_bytes_follow_the_boot_protocol() {
        let header = setup_header {
            version: 0x020f,
            initrd_addr_max: 0x7fff_ffff,
            ..Default::default()
        };
        let map = memory_map(&[(0, 256 << 20)]);
        let initrd = InitrdRegion {
            addr: 0x0f00_0000,
            size: 0x1234,
        };
        let screen = screen_info {
            lfb_base: 0xe000_0000,
            orig_video_isVGA: 0x70,
            ..Default::default()
        };
        let params = build(header, 42, Some(initrd), &map, 0xe0000, screen);
        let bytes = ZeroPage(params).as_slice().to_vec();
        let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        assert_eq!(bytes.len(), 4096);
        assert_eq!(u64_at(0x070), 0xe0000, "acpi_rsdp_addr");
        assert_eq!(
            bytes[0x0f], 0x70,
            "screen_info.orig_video_isVGA: EFI framebuffer"
        );
        assert_eq!(u32_at(0x18), 0xe000_0000, "screen_info.lfb_base");
        assert_eq!(bytes[0x1e8], 3, "e820_entries");
        assert_eq!(u16_at(0x1fe), 0xaa55, "boot_flag");
        assert_eq!(u32_at(0x202), 0x5372_6448, "header magic");
        assert_eq!(u16_at(0x206), 0x020f, "protocol version kept");
        assert_eq!(bytes[0x210], 0xff, "type_of_loader");
        assert_eq!(u32_at(0x218), 0x0f00_0000, "ramdisk_image");
        assert_eq!(u32_at(0x21c), 0x1234, "ramdisk_size");
        assert_eq!(u32_at(0x228), layout::CMDLINE_START as u32, "cmd_line_ptr");
        assert_eq!(u32_at(0x238), 42, "cmdline_size");
        // e820 entries: 20 bytes each at 0x2d0.
        assert_eq!(u64_at(0x2d0), 0);
        assert_eq!(u64_at(0x2d8), 0x9fc00);
        assert_eq!(u32_at(0x2e0), 1);
        assert_eq!(u64_at(0x2d0 + 40), 0x10_0000);
        assert_eq!(u64_at(0x2d0 + 48), (256 << 20) - 0x10_0000);
    }
}
