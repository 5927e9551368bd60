//! One vCPU: its boot configuration (CPUID, MSRs, LAPIC LINT pins, registers) and the loop
//! that runs it on its own thread, dispatching every exit.

use kvm_bindings::{
    kvm_run, CpuId, KVM_INTERNAL_ERROR_EMULATION,
    KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES, KVM_SYSTEM_EVENT_CRASH,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use nix::errno::Errno;

use crate::arch::emulate::syscall::SyscallEntry;
use crate::arch::emulate::{self, Counts};
use crate::arch::regs::{self, EntryMode};
use crate::arch::{cpuid, kvm_pvm, msr};
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

use crate::devices::bus::Buses;
use crate::persist::{self, vcpu::VcpuState};
use crate::run_state::{RunState, VmExit};

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

/// Errors configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM vCPU ioctl failed.
    #[error("vCPU {index}: KVM refused {what}: {source}")]
    Kvm {
        /// The vCPU.
        index: u8,
        /// The step.
        what: &'static str,
        /// The ioctl error.
        source: kvm_ioctls::Error,
    },
    /// KVM accepted fewer boot MSRs than given.
    #[error("vCPU {index}: KVM set only {set} of {wanted} boot MSRs")]
    Msrs {
        /// The vCPU.
        index: u8,
        /// How many were set.
        set: usize,
        /// How many were given.
        wanted: usize,
    },
    /// Restoring saved state failed.
    #[error("vCPU {index}: cannot restore saved state: {source}")]
    Restore {
        /// The vCPU.
        index: u8,
        /// Why.
        source: persist::vcpu::VcpuStateError,
    },
    /// Writing boot structures failed.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
}

/// The kernel entry point the boot vCPU starts at.
#[derive(Clone, Copy, Debug)]
pub struct BootEntry {
    /// How the kernel is entered.
    pub mode: EntryMode,
    /// Guest address of the entry.
    pub address: u64,
}

/// What the vCPUs need to complete instructions kvm-pvm refuses (see `arch::emulate`).
#[derive(Clone)]
pub struct Completion {
    /// Guest memory, reached through the guest's page tables.
    pub memory: GuestMemoryMmap,
    /// Completed instructions per kind, shared by the vCPUs.
    pub counts: Arc<Counts>,
}

/// A configured vCPU, ready to run.
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
    /// The page-fault breakpoint that completes ring-3 SYSCALLs on kvm-pvm.
    syscall: SyscallEntry,
    /// MSRs to save (KVM's index list).
    msr_indices: Arc<Vec<u32>>,
}

fn lvt_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

impl Vcpu {
    /// Creates vCPU `index` of `topology` and configures it; `entry` is given to the boot vCPU only
    /// (the others wait for INIT/SIPI from the guest).
    pub fn new(
        vm: &VmFd,
        supported_cpuid: &CpuId,
        index: u8,
        topology: cpuid::Topology,
        entry: Option<BootEntry>,
        msr_indices: Arc<Vec<u32>>,
    ) -> Result<Vcpu, VcpuError> {
        let kvm = |what: &'static str| {
            move |source| VcpuError::Kvm {
                index,
                what,
                source,
            }
        };
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(kvm("KVM_CREATE_VCPU"))?;
        let mut cpuid = supported_cpuid.clone();
        cpuid::normalize(&mut cpuid, index, topology);
        if kvm_pvm::detected() {
            kvm_pvm::adjust_cpuid(&mut cpuid);
        }
        fd.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))?;
        let msrs = msr::boot_msrs();
        let set = fd.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
        if set != msrs.as_slice().len() {
            return Err(VcpuError::Msrs {
                index,
                set,
                wanted: msrs.as_slice().len(),
            });
        }
        let mut lapic = fd.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
        for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
            let bytes: Vec<u8> = lapic.regs[offset..offset + 4]
                .iter()
                .map(|b| *b as u8)
                .collect();
            let value = lvt_mode(u32::from_le_bytes(bytes.try_into().unwrap_or([0; 4])), mode);
            for (dst, src) in lapic.regs[offset..offset + 4]
                .iter_mut()
                .zip(value.to_le_bytes())
            {
                *dst = src as _;
            }
        }
        fd.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))?;
        if let Some(entry) = entry {
            let sregs = fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
            fd.set_sregs(&regs::boot_sregs(sregs, entry.mode))
                .map_err(kvm("KVM_SET_SREGS"))?;
            fd.set_regs(&regs::boot_regs(entry.mode, entry.address))
                .map_err(kvm("KVM_SET_REGS"))?;
            fd.set_fpu(&regs::boot_fpu()).map_err(kvm("KVM_SET_FPU"))?;
        }
        Ok(Vcpu {
            index,
            fd,
            syscall: SyscallEntry::default(),
            msr_indices,
        })
    }

    /// Runs the vCPU until the VM ends, parking while it is paused.
    pub fn run(mut self, buses: &Buses, run_state: &RunState, completion: &Completion) {
        // On kvm-pvm a restored guest may have set LSTAR before it was saved, and its next
        // SYSCALL may come before any refused instruction: the breakpoint goes on now (a fresh
        // boot has no LSTAR yet, so nothing happens).
        if kvm_pvm::detected() {
            if let Err(e) = self.syscall.arm(&self.fd, &completion.memory) {
                let detail = format!("vCPU {}: SYSCALL breakpoint: {e}", self.index);
                run_state.request_exit(VmExit::Crashed { detail });
            }
        }
        loop {
            let (fd, msr_indices) = (&self.fd, &self.msr_indices);
            let mut save = || persist::vcpu::save(fd, msr_indices).map_err(|e| e.to_string());
            if run_state
                .vcpu_checkpoint(self.index.into(), &mut save)
                .is_some()
            {
                return;
            }
            if let Some(exit) = self.run_once(buses, completion) {
                run_state.request_exit(exit);
            }
        }
    }

    /// Creates vCPU `index` and restores its saved state (instead of boot configuration).
    pub fn restore(
        vm: &VmFd,
        index: u8,
        state: &VcpuState,
        msr_indices: Arc<Vec<u32>>,
    ) -> Result<Vcpu, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(|source| VcpuError::Kvm {
                index,
                what: "KVM_CREATE_VCPU",
                source,
            })?;
        persist::vcpu::restore(&fd, state)
            .map_err(|source| VcpuError::Restore { index, source })?;
        Ok(Vcpu {
            index,
            fd,
            syscall: SyscallEntry::default(),
            msr_indices,
        })
    }

    /// One KVM_RUN and the handling of its exit; returns a reason to end the VM, if any.
    fn run_once(&mut self, buses: &Buses, completion: &Completion) -> Option<VmExit> {
        let index = self.index;
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => buses.pio.read(port.into(), data),
            Ok(VcpuExit::IoOut(port, data)) => buses.pio.write(port.into(), data),
            Ok(VcpuExit::MmioRead(addr, data)) => buses.mmio.read(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => buses.mmio.write(addr, data),
            Ok(VcpuExit::Shutdown) => {
                return Some(VmExit::GuestReset {
                    cause: format!("triple fault on vCPU {index}"),
                });
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => return system_event(kind, index),
            Ok(VcpuExit::InternalError) => {
                let run = self.fd.get_kvm_run();
                let mut detail = internal_error(run, index);
                if let Some(bytes) = refused_instruction(run) {
                    let completed = emulate::kvm::complete(
                        &self.fd,
                        &completion.memory,
                        &bytes,
                        &completion.counts,
                    )
                    .and_then(|()| self.syscall.arm(&self.fd, &completion.memory));
                    match completed {
                        Ok(()) => return None,
                        Err(e) => detail.push_str(&format!(" ({e})")),
                    }
                }
                return Some(VmExit::Crashed {
                    detail: format!("{detail}{}", self.location()),
                });
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                let detail = format!(
                    "vCPU {index}: KVM entry failed (hardware reason {reason:#x}, cpu {cpu})"
                );
                return Some(VmExit::Crashed { detail });
            }
            Ok(VcpuExit::Debug(debug)) => {
                let done = self.syscall.complete(
                    &self.fd,
                    &completion.memory,
                    (debug.pc, debug.dr6),
                    &completion.counts,
                );
                if let Err(e) = done {
                    let detail = format!("vCPU {index}: debug exit: {e}{}", self.location());
                    return Some(VmExit::Crashed { detail });
                }
            }
            Ok(VcpuExit::Hlt) => {}
            Ok(other) => {
                let detail = format!("vCPU {index}: unexpected KVM exit {other:?}");
                return Some(VmExit::Crashed { detail });
            }
            Err(e) if [Errno::EINTR, Errno::EAGAIN].contains(&Errno::from_raw(e.errno())) => {}
            Err(e) => {
                return Some(VmExit::Crashed {
                    detail: format!("vCPU {index}: KVM_RUN failed: {e}"),
                })
            }
        }
        None
    }
}

impl Vcpu {
    /// " at rip=... (cs=..., cr0=...)" for crash reports, or nothing if the registers are unreadable.
    fn location(&self) -> String {
        match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(regs), Ok(sregs)) => format!(
                " at rip={:#x} rsp={:#x} (cs={:#x} cpl={} cr0={:#x} efer={:#x})",
                regs.rip, regs.rsp, sregs.cs.selector, sregs.cs.dpl, sregs.cr0, sregs.efer
            ),
            _ => String::new(),
        }
    }
}

fn system_event(kind: u32, index: u8) -> Option<VmExit> {
    match kind {
        KVM_SYSTEM_EVENT_SHUTDOWN => Some(VmExit::GuestPowerOff),
        KVM_SYSTEM_EVENT_RESET => Some(VmExit::GuestReset {
            cause: format!("system reset from vCPU {index}"),
        }),
        KVM_SYSTEM_EVENT_CRASH => Some(VmExit::Crashed {
            detail: format!("vCPU {index}: guest reported a crash"),
        }),
        _ => None,
    }
}

/// The bytes of the instruction KVM failed to emulate, when the exit carries them.
fn refused_instruction(run: &kvm_run) -> Option<Vec<u8>> {
    // SAFETY: called for KVM_EXIT_INTERNAL_ERROR, so `internal`/`emulation_failure` is the live
    // union member; both start with suberror and ndata.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    if internal.suberror != KVM_INTERNAL_ERROR_EMULATION {
        return None;
    }
    // SAFETY: as above; the emulation_failure layout applies to this suberror.
    let failure = unsafe { run.__bindgen_anon_1.emulation_failure };
    if failure.flags & u64::from(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) == 0 {
        return None;
    }
    // SAFETY: the flag says the instruction bytes are present.
    let insn = unsafe { failure.__bindgen_anon_1.__bindgen_anon_1 };
    let len = usize::from(insn.insn_size).min(insn.insn_bytes.len());
    Some(insn.insn_bytes[..len].to_vec())
}

/// Describes KVM_EXIT_INTERNAL_ERROR, with the instruction bytes of an emulation failure.
fn internal_error(run: &kvm_run, index: u8) -> String {
    // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the live union member.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    if internal.suberror == KVM_INTERNAL_ERROR_EMULATION {
        return match refused_instruction(run) {
            Some(bytes) => {
                let bytes: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
                format!(
                    "vCPU {index}: instruction emulation failed; instruction bytes: {}",
                    bytes.join(" ")
                )
            }
            None => format!("vCPU {index}: instruction emulation failed"),
        };
    }
    let ndata = (internal.ndata as usize).min(internal.data.len());
    let data: Vec<String> = internal.data[..ndata]
        .iter()
        .map(|d| format!("{d:#x}"))
        .collect();
    format!(
        "vCPU {index}: KVM internal error, suberror {} data [{}]",
        internal.suberror,
        data.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_pins_get_extint_and_nmi_modes() {
        assert_eq!(lvt_mode(0x0001_0000, APIC_MODE_EXTINT), 0x0001_0700);
        assert_eq!(lvt_mode(0x0001_0700, APIC_MODE_NMI), 0x0001_0400);
    }
}
