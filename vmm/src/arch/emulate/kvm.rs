//! Completing a refused instruction on a KVM vCPU: read its registers, decode the bytes KVM
//! reported, execute, write the registers back and inject the exception, if any.

use iced_x86::{Code, Decoder, DecoderOptions};
use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;

use super::{exec, Counts, CpuState, Exception, PagedMemory, Platform, Stop};

const MSR_IA32_TSC: u32 = 0x10;
const MSR_TSC_AUX: u32 = 0xc000_0103;
const EFER_LMA: u64 = 1 << 10;

/// Why an instruction could not be completed; the VM ends with this.
#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    /// A vCPU ioctl failed.
    #[error("KVM refused {what}: {source}")]
    Kvm {
        /// The step.
        what: &'static str,
        /// The ioctl error.
        source: kvm_ioctls::Error,
    },
    /// The instruction or situation is not covered.
    #[error("not completed: {0}")]
    NotCovered(String),
}

pub(super) fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CompleteError {
    move |source| CompleteError::Kvm { what, source }
}

/// What the vCPU's MSRs and XCRs give an instruction.
struct VcpuPlatform<'a> {
    fd: &'a VcpuFd,
}

impl Platform for VcpuPlatform<'_> {
    fn tsc_and_aux(&mut self) -> Result<(u64, u32), Stop> {
        let entry = |index| kvm_msr_entry {
            index,
            ..Default::default()
        };
        let mut msrs = Msrs::from_entries(&[entry(MSR_IA32_TSC), entry(MSR_TSC_AUX)])
            .map_err(|e| Stop::NotCovered(format!("MSR list: {e:?}")))?;
        match self.fd.get_msrs(&mut msrs) {
            Ok(2) => {
                let e = msrs.as_slice();
                Ok((e[0].data, e[1].data as u32))
            }
            other => Err(Stop::NotCovered(format!(
                "reading TSC and TSC_AUX for rdtscp: {other:?}"
            ))),
        }
    }

    fn fpu_status(&mut self) -> Result<u16, Stop> {
        let fpu = self
            .fd
            .get_fpu()
            .map_err(|e| Stop::NotCovered(format!("KVM_GET_FPU: {e}")))?;
        Ok(fpu.fsw)
    }

    fn xcr(&mut self, index: u32) -> Result<Option<u64>, Stop> {
        let xcrs = self
            .fd
            .get_xcrs()
            .map_err(|e| Stop::NotCovered(format!("KVM_GET_XCRS: {e}")))?;
        let count = (xcrs.nr_xcrs as usize).min(xcrs.xcrs.len());
        Ok(xcrs.xcrs[..count]
            .iter()
            .find(|x| x.xcr == index)
            .map(|x| x.value))
    }
}

fn state_from(regs: &kvm_regs, sregs: &kvm_sregs) -> CpuState {
    CpuState {
        gpr: [
            regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi,
            regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
        ],
        rip: regs.rip,
        rflags: regs.rflags,
        fs_base: sregs.fs.base,
        gs_base: sregs.gs.base,
        cr0: sregs.cr0,
        cr4: sregs.cr4,
        cpl: sregs.cs.dpl,
    }
}

fn regs_from(state: &CpuState) -> kvm_regs {
    let g = state.gpr;
    kvm_regs {
        rax: g[0],
        rcx: g[1],
        rdx: g[2],
        rbx: g[3],
        rsp: g[4],
        rbp: g[5],
        rsi: g[6],
        rdi: g[7],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
        rip: state.rip,
        rflags: state.rflags,
    }
}

/// Makes the vCPU take `exception` on its next entry (with CR2 for a #PF).
fn inject(fd: &VcpuFd, exception: Exception, sregs: &mut kvm_sregs) -> Result<(), CompleteError> {
    if let Exception::PageFault { address, .. } = exception {
        sregs.cr2 = address;
        fd.set_sregs(sregs).map_err(kvm("KVM_SET_SREGS"))?;
    }
    let mut events = fd.get_vcpu_events().map_err(kvm("KVM_GET_VCPU_EVENTS"))?;
    let (vector, error_code) = exception.vector();
    events.exception.injected = 1;
    events.exception.nr = vector;
    events.exception.has_error_code = u8::from(error_code.is_some());
    events.exception.error_code = error_code.unwrap_or(0);
    fd.set_vcpu_events(&events)
        .map_err(kvm("KVM_SET_VCPU_EVENTS"))
}

/// Completes the instruction `bytes` at the vCPU's RIP — or injects the exception it raises —
/// and counts it: on success the vCPU can be run again.
pub fn complete(
    fd: &VcpuFd,
    memory: &GuestMemoryMmap,
    bytes: &[u8],
    counts: &Counts,
) -> Result<(), CompleteError> {
    let regs = fd.get_regs().map_err(kvm("KVM_GET_REGS"))?;
    let mut sregs = fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    if sregs.efer & EFER_LMA == 0 || sregs.cs.l == 0 {
        return Err(CompleteError::NotCovered(
            "the vCPU is not in 64-bit mode".into(),
        ));
    }
    let mut decoder = Decoder::with_ip(64, bytes, regs.rip, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.code() == Code::INVALID {
        return Err(CompleteError::NotCovered(format!(
            "cannot decode the instruction ({:?})",
            decoder.last_error()
        )));
    }
    let mut state = state_from(&regs, &sregs);
    let mut paged = PagedMemory {
        memory,
        cr0: sregs.cr0,
        cr3: sregs.cr3,
        cr4: sregs.cr4,
        cpl: sregs.cs.dpl,
        rflags: regs.rflags,
    };
    let mut platform = VcpuPlatform { fd };
    match exec(&insn, &mut state, &mut paged, &mut platform) {
        Ok(done) => {
            fd.set_regs(&regs_from(&state))
                .map_err(kvm("KVM_SET_REGS"))?;
            if let Some(trap) = done.trap {
                inject(fd, trap, &mut sregs)?;
            }
            counts.record(done.kind);
            Ok(())
        }
        Err(Stop::Fault(exception)) => {
            inject(fd, exception, &mut sregs)?;
            counts.record_fault();
            Ok(())
        }
        Err(Stop::NotCovered(why)) => Err(CompleteError::NotCovered(why)),
    }
}
