//! Initial vCPU register state: flat GDT, 32-bit protected mode for PVH entry, 64-bit long mode
//! with identity page tables for a Linux bzImage entry.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout;

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// How the vCPU enters the guest kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// PVH: 32-bit protected mode, paging off, EBX = start info.
    Pvh,
    /// Linux 64-bit boot protocol: long mode, identity-mapped, RSI = zero page.
    Linux64,
}

/// Errors setting up the boot registers.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// Writing the boot GDT/IDT or page tables into guest memory failed.
    #[error("cannot write boot structures into guest memory: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
}

/// A GDT entry built from flags, base and limit (the classic packed layout).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, null, 64-bit code (0x10), data (0x18), TSS (0x20), 32-bit code (0x28).
pub const BOOT_GDT: [u64; 6] = [
    0,
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
    gdt_entry(0xc09b, 0, 0xfffff),
];
const CODE64_INDEX: usize = 2;
const DATA_INDEX: usize = 3;
const TSS_INDEX: usize = 4;
const CODE32_INDEX: usize = 5;

/// The hidden segment state KVM needs for GDT entry `index`.
pub fn segment_from_gdt(entry: u64, index: usize) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let mut limit = (((entry >> 32) & 0x000f_0000) | (entry & 0x0000_ffff)) as u32;
    let granularity = ((entry >> 55) & 1) as u8;
    if granularity == 1 {
        limit = (limit << 12) | 0xfff;
    }
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector: (index * 8) as u16,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granularity,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: (present == 0) as u8,
    }
}

/// Writes the boot GDT and an empty IDT into guest memory.
pub fn write_boot_gdt(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(
            *entry,
            GuestAddress(layout::BOOT_GDT_START + (i * 8) as u64),
        )?;
    }
    mem.write_obj(0u64, GuestAddress(layout::BOOT_IDT_START))?;
    Ok(())
}

/// Writes identity page tables mapping the first 1 GiB with 2 MiB pages.
pub fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    mem.write_obj(layout::PDPTE_START | 0x03, GuestAddress(layout::PML4_START))?;
    mem.write_obj(layout::PDE_START | 0x03, GuestAddress(layout::PDPTE_START))?;
    for i in 0..512u64 {
        mem.write_obj((i << 21) | 0x83, GuestAddress(layout::PDE_START + i * 8))?;
    }
    Ok(())
}

/// Special registers for `mode`, starting from what KVM reports (`sregs`).
pub fn boot_sregs(mut sregs: kvm_sregs, mode: EntryMode) -> kvm_sregs {
    let data = segment_from_gdt(BOOT_GDT[DATA_INDEX], DATA_INDEX);
    let code = match mode {
        EntryMode::Pvh => segment_from_gdt(BOOT_GDT[CODE32_INDEX], CODE32_INDEX),
        EntryMode::Linux64 => segment_from_gdt(BOOT_GDT[CODE64_INDEX], CODE64_INDEX),
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(BOOT_GDT[TSS_INDEX], TSS_INDEX);
    sregs.gdt.base = layout::BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    sregs.idt.base = layout::BOOT_IDT_START;
    sregs.idt.limit = 7;
    match mode {
        EntryMode::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        EntryMode::Linux64 => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.cr3 = layout::PML4_START;
            sregs.cr4 = X86_CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
    }
    sregs
}

/// General registers at the kernel entry point.
pub fn boot_regs(mode: EntryMode, entry: u64) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    match mode {
        EntryMode::Pvh => regs.rbx = layout::PVH_INFO_START,
        EntryMode::Linux64 => {
            regs.rsp = layout::BOOT_STACK_POINTER;
            regs.rbp = layout::BOOT_STACK_POINTER;
            regs.rsi = layout::ZERO_PAGE_START;
        }
    }
    regs
}

/// FPU state at reset: default control word and MXCSR.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let code = segment_from_gdt(BOOT_GDT[CODE64_INDEX], CODE64_INDEX);
        assert_eq!(
            (code.base, code.limit, code.l, code.db, code.type_),
            (0, 0xffff_ffff, 1, 0, 0xb)
        );
        assert_eq!(code.selector, 0x10);
        let code32 = segment_from_gdt(BOOT_GDT[CODE32_INDEX], CODE32_INDEX);
        assert_eq!((code32.l, code32.db, code32.present), (0, 1, 1));
        let data = segment_from_gdt(BOOT_GDT[DATA_INDEX], DATA_INDEX);
        assert_eq!((data.selector, data.type_, data.s), (0x18, 0x3, 1));
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn long_mode_sregs_enable_paging_and_lma() {
        let sregs = boot_sregs(kvm_sregs::default(), EntryMode::Linux64);
        assert_eq!(sregs.cr3, layout::PML4_START);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_ne!(sregs.cr0 & X86_CR0_PG, 0);
        let pvh = boot_sregs(kvm_sregs::default(), EntryMode::Pvh);
        assert_eq!((pvh.cr0 & X86_CR0_PG, pvh.efer), (0, 0));
    }
}
