//! One vCPU's state: saved on its own thread while parked, restored into a fresh vCPU before
//! it first runs. Order matters on restore: CPUID, MP state first, registers, XSAVE, XCRs,
//! debug registers, LAPIC before MSRs, TSC before TSC_DEADLINE, events last.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;

/// Saved state of one vCPU.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    /// CPUID as set at boot.
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Runnable, halted, waiting for SIPI...
    pub mp_state: kvm_mp_state,
    /// General registers.
    pub regs: kvm_regs,
    /// Segment and control registers.
    pub sregs: kvm_sregs,
    /// FPU/SSE/AVX state.
    pub xsave: kvm_xsave,
    /// Extended control registers.
    pub xcrs: kvm_xcrs,
    /// Debug registers.
    pub debugregs: kvm_debugregs,
    /// Local APIC registers.
    pub lapic: kvm_lapic_state,
    /// Every MSR KVM lets us read.
    pub msrs: Vec<kvm_msr_entry>,
    /// Pending exceptions, interrupts, NMIs.
    pub events: kvm_vcpu_events,
}

/// A vCPU ioctl that failed during save or restore.
#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    /// An ioctl failed.
    #[error("KVM refused {what}: {source}")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// Some MSRs could not be restored.
    #[error("KVM rejected MSRs {0:x?} on restore")]
    Msrs(Vec<u32>),
    /// The saved CPUID does not fit KVM's structure.
    #[error("saved CPUID has too many entries")]
    Cpuid,
}

fn failed(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuStateError {
    move |source| VcpuStateError::Kvm { what, source }
}

/// Reads every MSR of `msr_indices` that KVM lets us read, one by one where a batch stops.
fn read_msrs(fd: &VcpuFd, msr_indices: &[u32]) -> Vec<kvm_msr_entry> {
    let mut entries = Vec::with_capacity(msr_indices.len());
    for index in msr_indices {
        let Ok(mut one) = Msrs::from_entries(&[kvm_msr_entry {
            index: *index,
            ..Default::default()
        }]) else {
            continue;
        };
        if fd.get_msrs(&mut one) == Ok(1) {
            entries.push(one.as_slice()[0]);
        }
    }
    entries
}

/// Saves the state of a paused vCPU; `msr_indices` is KVM's MSR index list.
pub fn save(fd: &VcpuFd, msr_indices: &[u32]) -> Result<VcpuState, VcpuStateError> {
    // MP state first: reading it lets KVM settle pending INIT/SIPI handling.
    let mp_state = fd.get_mp_state().map_err(failed("KVM_GET_MP_STATE"))?;
    Ok(VcpuState {
        cpuid: fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(failed("KVM_GET_CPUID2"))?
            .as_slice()
            .to_vec(),
        mp_state,
        regs: fd.get_regs().map_err(failed("KVM_GET_REGS"))?,
        sregs: fd.get_sregs().map_err(failed("KVM_GET_SREGS"))?,
        xsave: fd.get_xsave().map_err(failed("KVM_GET_XSAVE"))?,
        xcrs: fd.get_xcrs().map_err(failed("KVM_GET_XCRS"))?,
        debugregs: fd.get_debug_regs().map_err(failed("KVM_GET_DEBUGREGS"))?,
        lapic: fd.get_lapic().map_err(failed("KVM_GET_LAPIC"))?,
        msrs: read_msrs(fd, msr_indices),
        events: fd
            .get_vcpu_events()
            .map_err(failed("KVM_GET_VCPU_EVENTS"))?,
    })
}

/// Restores `state` into a fresh vCPU that has not run yet.
pub fn restore(fd: &VcpuFd, state: &VcpuState) -> Result<(), VcpuStateError> {
    let cpuid = CpuId::from_entries(&state.cpuid).map_err(|_| VcpuStateError::Cpuid)?;
    fd.set_cpuid2(&cpuid).map_err(failed("KVM_SET_CPUID2"))?;
    fd.set_mp_state(state.mp_state)
        .map_err(failed("KVM_SET_MP_STATE"))?;
    fd.set_regs(&state.regs).map_err(failed("KVM_SET_REGS"))?;
    fd.set_sregs(&state.sregs)
        .map_err(failed("KVM_SET_SREGS"))?;
    // SAFETY: the buffer came from KVM_GET_XSAVE on a vCPU with the same CPUID.
    unsafe { fd.set_xsave(&state.xsave) }.map_err(failed("KVM_SET_XSAVE"))?;
    fd.set_xcrs(&state.xcrs).map_err(failed("KVM_SET_XCRS"))?;
    fd.set_debug_regs(&state.debugregs)
        .map_err(failed("KVM_SET_DEBUGREGS"))?;
    fd.set_lapic(&state.lapic)
        .map_err(failed("KVM_SET_LAPIC"))?;
    write_msrs(fd, &state.msrs)?;
    fd.set_vcpu_events(&state.events)
        .map_err(failed("KVM_SET_VCPU_EVENTS"))?;
    // Tell a kvmclock-aware guest it was stopped; EINVAL when it never enabled kvmclock.
    let _ = fd.kvmclock_ctrl();
    Ok(())
}

/// Sets MSRs with TSC_DEADLINE after TSC; a batch stops at the first MSR KVM rejects, so the
/// rest are retried one by one and any that still fail are reported.
fn write_msrs(fd: &VcpuFd, msrs: &[kvm_msr_entry]) -> Result<(), VcpuStateError> {
    let mut ordered: Vec<kvm_msr_entry> = msrs.to_vec();
    ordered.sort_by_key(|e| match e.index {
        MSR_IA32_TSC => 0,
        MSR_IA32_TSC_DEADLINE => 2,
        _ => 1,
    });
    let mut rejected = Vec::new();
    let mut next = 0;
    while next < ordered.len() {
        let batch =
            Msrs::from_entries(&ordered[next..]).map_err(|_| VcpuStateError::Msrs(vec![]))?;
        let set = fd.set_msrs(&batch).map_err(failed("KVM_SET_MSRS"))?;
        next += set;
        if next < ordered.len() {
            rejected.push(ordered[next].index);
            next += 1;
        }
    }
    if rejected.is_empty() {
        Ok(())
    } else {
        Err(VcpuStateError::Msrs(rejected))
    }
}
