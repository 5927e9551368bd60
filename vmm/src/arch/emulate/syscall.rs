//! SYSCALL from guest ring 3 on kvm-pvm. The backend loads RIP from LSTAR (and RCX, R11) but
//! leaves CS and SS at ring 3, so fetching the kernel's entry code faults: a #PF (user fetch of
//! a supervisor page, CR2 = LSTAR) that the guest's own page-fault handler would take for a
//! wild jump and answer with SIGSEGV. kvm-pvm honours KVM guest-debug hardware breakpoints in
//! ring 0 but not in ring 3 (measured), so the breakpoint goes on the guest's page-fault
//! handler (IDT vector 14) and brings every #PF to the VMM:
//! - a fault whose frame shows ring 3 at LSTAR, with CR2 = LSTAR and a SYSCALL instruction just
//!   before RCX, becomes the architectural SYSCALL entry: CS and SS from STAR at DPL 0, RSP back
//!   to the user's, RFLAGS = R11 masked with FMASK, RIP = LSTAR;
//! - any other fault goes on into the handler. kvm-pvm ignores RFLAGS.RF in ring 0 (measured:
//!   the breakpoint fires again at once), so the VMM completes the handler's first instruction
//!   itself (Linux's entry starts with `clac` or its NOP padding) and resumes after it.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use kvm_bindings::{
    kvm_guest_debug, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs, KVM_GUESTDBG_ENABLE,
    KVM_GUESTDBG_USE_HW_BP,
};
use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;

use super::kvm::{kvm, CompleteError};
use super::{Counts, Kind, Memory, PagedMemory};

const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_FMASK: u32 = 0xc000_0084;
/// DR7: local enable of breakpoint 0, on instruction execution (R/W0 = LEN0 = 0).
const DR7_L0_EXEC: u64 = 1 | (1 << 10);
/// DR6: breakpoint 0 was hit.
const DR6_B0: u64 = 1;
const RFLAGS_FIXED: u64 = 1 << 1;
const SYSCALL_OPCODE: [u8; 2] = [0x0f, 0x05];
const PAGE_FAULT_VECTOR: u64 = 14;
/// Longest x86 instruction.
const MAX_INSTRUCTION: usize = 15;

/// Reads MSRs by index, in order.
fn read_msrs<const N: usize>(fd: &VcpuFd, indices: [u32; N]) -> Result<[u64; N], CompleteError> {
    let entries = indices.map(|index| kvm_msr_entry {
        index,
        ..Default::default()
    });
    let mut msrs = Msrs::from_entries(&entries)
        .map_err(|e| CompleteError::NotCovered(format!("MSR list: {e:?}")))?;
    let read = fd.get_msrs(&mut msrs).map_err(kvm("KVM_GET_MSRS"))?;
    if read != N {
        return Err(CompleteError::NotCovered(format!(
            "KVM read {read} of the MSRs {indices:x?}"
        )));
    }
    let mut values = [0; N];
    for (value, entry) in values.iter_mut().zip(msrs.as_slice()) {
        *value = entry.data;
    }
    Ok(values)
}

/// Guest linear memory as the vCPU sees it at privilege level `cpl`.
fn paged<'a>(
    memory: &'a GuestMemoryMmap,
    regs: &kvm_regs,
    sregs: &kvm_sregs,
    cpl: u8,
) -> PagedMemory<'a> {
    PagedMemory {
        memory,
        cr0: sregs.cr0,
        cr3: sregs.cr3,
        cr4: sregs.cr4,
        cpl,
        rflags: regs.rflags,
    }
}

/// Reads `N` little-endian quadwords at `addr`.
fn read_u64s<const N: usize>(memory: &mut PagedMemory, addr: u64) -> Option<[u64; N]> {
    let mut values = [0u64; N];
    for (i, value) in values.iter_mut().enumerate() {
        let mut bytes = [0u8; 8];
        memory
            .read(addr.wrapping_add(8 * i as u64), &mut bytes)
            .ok()?;
        *value = u64::from_le_bytes(bytes);
    }
    Some(values)
}

/// The breakpoint on one vCPU's page-fault handler.
#[derive(Debug, Default)]
pub struct SyscallEntry {
    /// The handler address the breakpoint is on, once the guest has set LSTAR and its IDT.
    armed: Option<u64>,
}

impl SyscallEntry {
    /// Puts the breakpoint on the guest's page-fault handler once the kernel has set LSTAR (and
    /// so its IDT); cheap once armed.
    pub fn arm(&mut self, fd: &VcpuFd, memory: &GuestMemoryMmap) -> Result<(), CompleteError> {
        if self.armed.is_some() {
            return Ok(());
        }
        let [lstar] = read_msrs(fd, [MSR_LSTAR])?;
        if lstar == 0 {
            return Ok(());
        }
        let regs = fd.get_regs().map_err(kvm("KVM_GET_REGS"))?;
        let sregs = fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        if u64::from(sregs.idt.limit) < 16 * PAGE_FAULT_VECTOR + 15 {
            return Ok(());
        }
        let gate = sregs.idt.base.wrapping_add(16 * PAGE_FAULT_VECTOR);
        let Some([low, high]) = read_u64s(&mut paged(memory, &regs, &sregs, 0), gate) else {
            return Ok(());
        };
        let handler = (low & 0xffff) | ((low >> 32) & 0xffff_0000) | (high << 32);
        let mut debug = kvm_guest_debug {
            control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP,
            ..Default::default()
        };
        debug.arch.debugreg[0] = handler;
        debug.arch.debugreg[7] = DR7_L0_EXEC;
        fd.set_guest_debug(&debug)
            .map_err(kvm("KVM_SET_GUEST_DEBUG"))?;
        self.armed = Some(handler);
        Ok(())
    }

    /// Handles KVM_EXIT_DEBUG at `pc` with debug status `dr6`: completes a ring-3 SYSCALL that
    /// faulted at LSTAR, or lets any other page fault into the guest's handler.
    pub fn complete(
        &self,
        fd: &VcpuFd,
        memory: &GuestMemoryMmap,
        (pc, dr6): (u64, u64),
        counts: &Counts,
    ) -> Result<(), CompleteError> {
        if self.armed != Some(pc) || dr6 & DR6_B0 == 0 {
            return Err(CompleteError::NotCovered(format!(
                "debug exit at {pc:#x} (DR6 {dr6:#x}), not the page-fault breakpoint"
            )));
        }
        let mut regs = fd.get_regs().map_err(kvm("KVM_GET_REGS"))?;
        let mut sregs = fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        let [lstar, star, fmask] = read_msrs(fd, [MSR_LSTAR, MSR_STAR, MSR_FMASK])?;
        // The exception frame: error code, RIP, CS, RFLAGS, RSP, SS.
        let frame = read_u64s::<6>(&mut paged(memory, &regs, &sregs, 0), regs.rsp);
        let Some([_, rip, cs, _, user_rsp, _]) = frame else {
            return Err(CompleteError::NotCovered(format!(
                "page-fault frame at {:#x} unreadable",
                regs.rsp
            )));
        };
        if cs & 3 == 3 && rip == lstar && sregs.cr2 == lstar && after_syscall(memory, &regs, &sregs)
        {
            let selector = ((star >> 32) & 0xfffc) as u16;
            sregs.cs = flat_segment(selector, 0xb, true);
            sregs.ss = flat_segment(selector + 8, 0x3, false);
            regs.rsp = user_rsp;
            regs.rip = lstar;
            regs.rflags = (regs.r11 & !fmask) | RFLAGS_FIXED;
            fd.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
            fd.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
            counts.record(Kind::Syscall);
            return Ok(());
        }
        step_over_first_instruction(fd, memory, &regs, &sregs, counts)
    }
}

/// Whether the two bytes before RCX (the return address SYSCALL saves) are a SYSCALL.
fn after_syscall(memory: &GuestMemoryMmap, regs: &kvm_regs, sregs: &kvm_sregs) -> bool {
    let mut opcode = [0u8; 2];
    paged(memory, regs, sregs, 3)
        .read(regs.rcx.wrapping_sub(2), &mut opcode)
        .is_ok()
        && opcode == SYSCALL_OPCODE
}

/// Completes the instruction at the breakpoint (the handler's first) so the vCPU resumes past
/// it: a NOP by advancing RIP, anything else through the instruction completion.
fn step_over_first_instruction(
    fd: &VcpuFd,
    memory: &GuestMemoryMmap,
    regs: &kvm_regs,
    sregs: &kvm_sregs,
    counts: &Counts,
) -> Result<(), CompleteError> {
    let mut bytes = [0u8; MAX_INSTRUCTION];
    paged(memory, regs, sregs, 0)
        .read(regs.rip, &mut bytes)
        .map_err(|e| CompleteError::NotCovered(format!("page-fault handler unreadable: {e:?}")))?;
    let insn = Decoder::with_ip(64, &bytes, regs.rip, DecoderOptions::NONE).decode();
    if insn.mnemonic() == Mnemonic::Nop {
        let mut next = *regs;
        next.rip = insn.next_ip();
        return fd.set_regs(&next).map_err(kvm("KVM_SET_REGS"));
    }
    super::kvm::complete(fd, memory, &bytes[..insn.len()], counts)
}

/// A flat ring-0 segment as SYSCALL loads it: 64-bit code (`long`) or data.
fn flat_segment(selector: u16, type_: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// On kvm-pvm only (elsewhere the path is never entered): a guest in ring 3 makes two system
/// calls, whose entry code reports its privilege level on a port and returns with SYSRETQ,
/// then touches an unmapped page, whose #PF must reach the guest's own handler.
#[cfg(test)]
mod tests {
    use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
    use kvm_ioctls::{Kvm, VcpuExit};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

    use super::*;
    use crate::arch::kvm_pvm;

    const ENTRY: u64 = 0x11000;
    const USER_CODE: u64 = 0x20_0000;
    const IDT: u64 = 0x6000;
    const HANDLERS: u64 = 0x12000;
    const GDT: u64 = 0x500;
    const TSS: u64 = 0x7000;
    /// Ports the guest reports on: its system-call entry, and its exception handlers.
    const SYSCALL_PORT: u16 = 0x10;
    const EXCEPTION_PORT: u16 = 0x20;

    /// Identity-mapped 4 MiB: the first 2 MiB supervisor-only, the next 2 MiB user.
    fn write_guest(memory: &GuestMemoryMmap) {
        let put = |addr: u64, bytes: &[u8]| memory.write_slice(bytes, GuestAddress(addr)).unwrap();
        let put64 = |addr: u64, value: u64| put(addr, &value.to_le_bytes());
        put64(0x1000, 0x2000 | 7);
        put64(0x2000, 0x3000 | 7);
        put64(0x3000, 0x83);
        put64(0x3008, 0x20_0000 | 0x87);
        for (i, descriptor) in [
            0,
            0,
            0x00af_9b00_0000_ffff, // 0x10 kernel code
            0x00cf_9300_0000_ffff, // 0x18 kernel data
            0x00cf_fb00_0000_ffff, // 0x23 user code (32-bit)
            0x00cf_f300_0000_ffff, // 0x2b user data
            0x00af_fb00_0000_ffff, // 0x33 user code
        ]
        .into_iter()
        .enumerate()
        {
            put64(GDT + 8 * i as u64, descriptor);
        }
        // Vector v: a NOP (what the breakpoint steps over), "mov al, v; out 0x20, al; hlt".
        for vector in 0..32u64 {
            let handler = HANDLERS + 16 * vector;
            let gate = IDT + 16 * vector;
            put64(
                gate,
                (handler & 0xffff) | (0x10 << 16) | (0x8e << 40) | ((handler >> 16) << 48),
            );
            put64(gate + 8, handler >> 32);
            put(handler, &[0x90, 0xb0, vector as u8, 0xe6, 0x20, 0xf4]);
        }
        put(TSS + 4, &0x10_0000u32.to_le_bytes());
        // Entry: "mov al, 0x55; out 0x10, al; sysretq".
        put(ENTRY, &[0xb0, 0x55, 0xe6, 0x10, 0x48, 0x0f, 0x07]);
        // User: "mov eax, 42; syscall; mov eax, 43; syscall; mov [0x500000], al".
        put(
            USER_CODE,
            &[
                0xb8, 42, 0, 0, 0, 0x0f, 0x05, 0xb8, 43, 0, 0, 0, 0x0f, 0x05, 0x88, 0x04, 0x25,
                0x00, 0x00, 0x50, 0x00,
            ],
        );
    }

    fn segment(selector: u16, code: bool, dpl: u8) -> kvm_segment {
        kvm_segment {
            dpl,
            ..flat_segment(selector, if code { 0xb } else { 0x3 }, code)
        }
    }

    fn set_ring3_start(fd: &VcpuFd) {
        let mut sregs = fd.get_sregs().unwrap();
        sregs.cr3 = 0x1000;
        sregs.cr4 = 0x20 | 0x200 | 0x400; // PAE, OSFXSR, OSXMMEXCPT
        sregs.cr0 = 0x8005_0033; // PG, WP, NE, ET, MP, PE
        sregs.efer = 0x501 | 0x400; // SCE, LME, LMA, NXE
        sregs.gdt.base = GDT;
        sregs.gdt.limit = 7 * 8 - 1;
        sregs.idt.base = IDT;
        sregs.idt.limit = 32 * 16 - 1;
        sregs.cs = segment(0x33, true, 3);
        sregs.ss = segment(0x2b, false, 3);
        sregs.ds = sregs.ss;
        sregs.es = sregs.ss;
        sregs.tr = kvm_segment {
            base: TSS,
            limit: 0x67,
            selector: 0x40,
            type_: 11,
            present: 1,
            ..Default::default()
        };
        fd.set_sregs(&sregs).unwrap();
        fd.set_regs(&kvm_regs {
            rip: USER_CODE,
            rsp: 0x3f_f000,
            rflags: RFLAGS_FIXED,
            ..Default::default()
        })
        .unwrap();
        let msrs = [
            (MSR_STAR, 0x0023_0010_0000_0000),
            (MSR_LSTAR, ENTRY),
            (MSR_FMASK, 0x4_7700),
        ]
        .map(|(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        });
        assert_eq!(fd.set_msrs(&Msrs::from_entries(&msrs).unwrap()).unwrap(), 3);
    }

    #[test]
    fn ring3_syscalls_reach_lstar_in_ring0_and_other_page_faults_reach_the_guest() {
        if !kvm_pvm::detected() {
            eprintln!("SKIPPED: /dev/kvm is not kvm-pvm, where SYSCALL needs no completion");
            return;
        }
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let host = memory.get_host_address(GuestAddress(0)).unwrap();
        // SAFETY: the region is the mapping `memory` owns, which outlives the VM here.
        unsafe {
            vm.set_user_memory_region(kvm_userspace_memory_region {
                slot: 0,
                guest_phys_addr: 0,
                memory_size: 4 << 20,
                userspace_addr: host as u64,
                flags: 0,
            })
            .unwrap();
        }
        write_guest(&memory);
        let mut fd = vm.create_vcpu(0).unwrap();
        fd.set_cpuid2(&kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap())
            .unwrap();
        set_ring3_start(&fd);
        let counts = Counts::default();
        let mut entry = SyscallEntry::default();
        entry.arm(&fd, &memory).unwrap();
        assert!(
            entry.armed.is_some(),
            "armed once LSTAR and the IDT are set"
        );

        let mut reports = Vec::new();
        for _ in 0..16 {
            match fd.run().unwrap() {
                VcpuExit::IoOut(port, data) => {
                    let value = data[0];
                    let sregs = fd.get_sregs().unwrap();
                    let rcx = fd.get_regs().unwrap().rcx;
                    reports.push((port, value, sregs.cs.dpl, rcx));
                    if port == EXCEPTION_PORT {
                        break;
                    }
                }
                VcpuExit::Debug(debug) => entry
                    .complete(&fd, &memory, (debug.pc, debug.dr6), &counts)
                    .unwrap(),
                other => panic!("unexpected exit {other:?}; reports so far {reports:x?}"),
            }
        }
        assert_eq!(
            reports,
            [
                (SYSCALL_PORT, 0x55, 0, USER_CODE + 7),
                (SYSCALL_PORT, 0x55, 0, USER_CODE + 14),
                (EXCEPTION_PORT, 14, 0, USER_CODE + 14),
            ],
            "(port, value, CPL, RCX) the guest reported"
        );
        assert_eq!(counts.snapshot().get("syscall"), Some(&2));
        assert_eq!(fd.get_sregs().unwrap().cr2, 0x50_0000);
    }
}
