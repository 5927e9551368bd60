//! Guest physical addresses used at boot, one constant per fact.

/// Boot GDT (flat code/data descriptors; Linux's __BOOT_CS = 0x10, __BOOT_DS = 0x18).
pub const BOOT_GDT_START: u64 = 0x500;
/// Boot IDT (empty; the guest installs its own).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info` structure.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH memory map table, right after the start info.
pub const PVH_MEMMAP_START: u64 = 0x6040;
/// PVH module list (one entry: the initrd).
pub const PVH_MODLIST_START: u64 = 0x6800;
/// Linux zero page (`boot_params`) for bzImage boot.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for a 64-bit Linux entry.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// PML4 of the identity page tables used for a 64-bit Linux entry (PDPT and PD follow).
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (identity maps the first 1 GiB with 2 MiB pages).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we accept, NUL included.
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// Start of the extended BIOS data area: conventional RAM ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables live in the BIOS read-only area where guests scan for the RSDP.
pub const ACPI_START: u64 = 0xe0000;
/// First byte above the legacy 1 MiB area; kernels load here.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// TSS pages KVM needs below 4 GiB (three pages).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Start of the 32-bit MMIO hole (devices, IOAPIC, LAPIC); RAM resumes at 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// First byte above 4 GiB.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
/// Linear framebuffer (its own memory slot, in the MMIO hole).
pub const FRAMEBUFFER_START: u64 = 0xe000_0000;
/// First virtio-mmio register window; devices follow every `MMIO_WINDOW_SIZE` bytes.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// GSIs handed to virtio-mmio devices in order (skipping COM1 4, RTC 8, SCI 9, PS/2 mouse 12).
pub const VIRTIO_GSIS: [u32; 15] = [5, 6, 7, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22];
/// IOAPIC registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC registers.
pub const APIC_START: u64 = 0xfee0_0000;
/// Number of IOAPIC pins KVM's in-kernel IOAPIC has.
pub const IOAPIC_PINS: u32 = 24;

/// Guest RAM as (start, size) ranges for `mem_size` bytes: below the MMIO hole, then above 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_HOLE_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_HOLE_START),
            (FIRST_ADDR_PAST_32BITS, mem_size - MMIO_HOLE_START),
        ]
    }
}
