//! Instruction completion for kvm-pvm: the ring-0 instructions that backend refuses
//! (KVM_EXIT_INTERNAL_ERROR with the instruction bytes) are decoded here, executed in user space
//! against the vCPU's registers and guest memory reached through the guest's page tables, and
//! the vCPU resumes after them — or takes the architectural exception the instruction raises.
//! Anything not covered is reported as such and ends the VM; nothing is guessed.
//!
//! `exec` holds the instruction semantics over an abstract register file and memory (so unit
//! tests can compare them with the host CPU running the same instruction in ring 3), `paging`
//! the guest page walk, `kvm` the glue to a KVM vCPU. On hardware KVM this path is never entered.

mod exec;
pub mod kvm;
#[cfg(test)]
mod native_tests;
mod paging;
pub mod syscall;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

pub use exec::exec;
pub use paging::PagedMemory;

/// The instruction kinds this module completes, for the per-kind counts in `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `int3`: RIP advanced, #BP injected.
    Int3,
    /// `cmpxchg16b`, performed atomically on the guest's memory.
    Cmpxchg16b,
    /// `popcnt`.
    Popcnt,
    /// BMI1/BMI2 bit manipulation (andn, bextr, blsi, blsmsk, blsr, bzhi, mulx, pdep, pext,
    /// rorx, sarx, shlx, shrx).
    Bmi,
    /// `crc32` (CRC-32C).
    Crc32,
    /// `rdtscp`.
    Rdtscp,
    /// `xgetbv`.
    Xgetbv,
    /// `stac` / `clac` (SMAP's RFLAGS.AC, around every user-memory access).
    Smap,
    /// `fwait` (x87 exception check).
    Fwait,
    /// `syscall` from ring 3, whose switch to ring 0 kvm-pvm leaves undone (see `syscall`).
    Syscall,
}

impl Kind {
    /// Every kind, in the order of the counters.
    pub const ALL: [Kind; 10] = [
        Kind::Int3,
        Kind::Cmpxchg16b,
        Kind::Popcnt,
        Kind::Bmi,
        Kind::Crc32,
        Kind::Rdtscp,
        Kind::Xgetbv,
        Kind::Smap,
        Kind::Fwait,
        Kind::Syscall,
    ];

    /// The name `status` reports the kind under.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Int3 => "int3",
            Kind::Cmpxchg16b => "cmpxchg16b",
            Kind::Popcnt => "popcnt",
            Kind::Bmi => "bmi",
            Kind::Crc32 => "crc32",
            Kind::Rdtscp => "rdtscp",
            Kind::Xgetbv => "xgetbv",
            Kind::Smap => "stac_clac",
            Kind::Fwait => "fwait",
            Kind::Syscall => "syscall",
        }
    }
}

/// An architectural exception an instruction raises (or, for `int3`, traps with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// #BP, vector 3 (a trap: RIP is already past the instruction).
    Breakpoint,
    /// #UD, vector 6.
    InvalidOpcode,
    /// #NM, vector 7.
    DeviceNotAvailable,
    /// #GP with its error code, vector 13.
    GeneralProtection(u32),
    /// #MF, vector 16 (a pending x87 exception).
    MathFault,
    /// #PF, vector 14: the faulting linear address (CR2) and the error code.
    PageFault {
        /// The linear address that faulted (goes to CR2).
        address: u64,
        /// P, W/R, U/S, RSVD, I/D bits.
        error_code: u32,
    },
}

impl Exception {
    /// The vector and error code to inject.
    pub fn vector(self) -> (u8, Option<u32>) {
        match self {
            Exception::Breakpoint => (3, None),
            Exception::InvalidOpcode => (6, None),
            Exception::DeviceNotAvailable => (7, None),
            Exception::MathFault => (16, None),
            Exception::GeneralProtection(code) => (13, Some(code)),
            Exception::PageFault { error_code, .. } => (14, Some(error_code)),
        }
    }
}

/// Why an instruction was not completed normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The instruction faults: RIP and registers stay, the exception is injected.
    Fault(Exception),
    /// This module does not cover the instruction or the situation; the VM must end.
    NotCovered(String),
}

/// The outcome of a completed instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completed {
    /// What it was.
    pub kind: Kind,
    /// A trap to deliver after it (with RIP past the instruction).
    pub trap: Option<Exception>,
}

/// The register file an instruction is completed against (64-bit mode).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuState {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 (hardware numbering).
    pub gpr: [u64; 16],
    /// The instruction pointer.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// FS base (for `fs:` operands).
    pub fs_base: u64,
    /// GS base (for `gs:` operands: the kernel's per-CPU data).
    pub gs_base: u64,
    /// CR0 (MP, TS and NE decide what `fwait` raises).
    pub cr0: u64,
    /// CR4 (OSXSAVE decides whether `xgetbv` exists).
    pub cr4: u64,
    /// Current privilege level.
    pub cpl: u8,
}

/// What an instruction may read besides registers and memory.
pub trait Platform {
    /// The time-stamp counter and IA32_TSC_AUX, read when `rdtscp` needs them.
    fn tsc_and_aux(&mut self) -> Result<(u64, u32), Stop>;
    /// Extended control register `index` (`xgetbv`), or None if it does not exist.
    fn xcr(&mut self, index: u32) -> Result<Option<u64>, Stop>;
    /// The x87 status word.
    fn fpu_status(&mut self) -> Result<u16, Stop>;
}

/// Guest linear memory as the completed instruction sees it.
pub trait Memory {
    /// Reads `buf.len()` bytes at linear address `addr`.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Stop>;
    /// Writes `data` at linear address `addr`.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Stop>;
    /// Atomically compares the 16 aligned bytes at `addr` with `expected` and replaces them with
    /// `new` if equal; returns the value found.
    fn compare_exchange_16(&mut self, addr: u64, expected: u128, new: u128) -> Result<u128, Stop>;
}

/// Per-kind counts of completed instructions (and of exceptions they raised), shared by the
/// vCPUs of a VM.
#[derive(Debug, Default)]
pub struct Counts {
    completed: [AtomicU64; Kind::ALL.len()],
    faulted: AtomicU64,
}

impl Counts {
    /// Counts one completed instruction of `kind`.
    pub fn record(&self, kind: Kind) {
        self.completed[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one instruction that raised a fault instead of completing.
    pub fn record_fault(&self) {
        self.faulted.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts by kind name (kinds never seen are left out), plus `"faulted"` when nonzero.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let mut map: BTreeMap<String, u64> = Kind::ALL
            .iter()
            .map(|k| {
                (
                    k.name().to_owned(),
                    self.completed[*k as usize].load(Ordering::Relaxed),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let faulted = self.faulted.load(Ordering::Relaxed);
        if faulted > 0 {
            map.insert("faulted".to_owned(), faulted);
        }
        map
    }
}

/// `lock cmpxchg16b` on host memory: returns the value found at `ptr` (equal to `expected`
/// when `new` was stored).
///
/// # Safety
/// `ptr` must be valid for reads and writes of 16 bytes and 16-byte aligned.
pub(crate) unsafe fn host_cmpxchg16b(ptr: *mut u128, expected: u128, new: u128) -> u128 {
    let (mut lo, mut hi) = (expected as u64, (expected >> 64) as u64);
    // SAFETY: the caller guarantees `ptr`; rbx is reserved by LLVM, so the low half of `new`
    // is swapped into it around the instruction.
    unsafe {
        std::arch::asm!(
            "xchg rbx, {new_lo}",
            "lock cmpxchg16b [{ptr}]",
            "xchg rbx, {new_lo}",
            ptr = in(reg) ptr,
            new_lo = inout(reg) new as u64 => _,
            in("rcx") (new >> 64) as u64,
            inout("rax") lo,
            inout("rdx") hi,
            options(nostack),
        );
    }
    u128::from(lo) | (u128::from(hi) << 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_name_each_kind_seen() {
        let counts = Counts::default();
        counts.record(Kind::Int3);
        counts.record(Kind::Int3);
        counts.record(Kind::Cmpxchg16b);
        counts.record_fault();
        let snap = counts.snapshot();
        assert_eq!(snap.get("int3"), Some(&2));
        assert_eq!(snap.get("cmpxchg16b"), Some(&1));
        assert_eq!(snap.get("faulted"), Some(&1));
        assert_eq!(snap.get("popcnt"), None);
    }

    #[test]
    fn host_cmpxchg16b_swaps_only_on_match() {
        let mut cell = 0x1111_2222_3333_4444_5555_6666_7777_8888u128;
        let p = &mut cell as *mut u128;
        // SAFETY: `cell` is a live, aligned u128.
        let found = unsafe { host_cmpxchg16b(p, 1, 2) };
        assert_eq!(found, 0x1111_2222_3333_4444_5555_6666_7777_8888);
        assert_eq!(cell, 0x1111_2222_3333_4444_5555_6666_7777_8888);
        // SAFETY: as above.
        let found = unsafe { host_cmpxchg16b(p, cell, 7) };
        assert_eq!(found, 0x1111_2222_3333_4444_5555_6666_7777_8888);
        assert_eq!(cell, 7);
    }
}
