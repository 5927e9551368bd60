//! The ring-0 core (assembly, in this folder) and the ring-3 side of its interface.
//! Ring 0 is interpreted on kvm-pvm, so it only does what ring 3 cannot: tables, interrupt
//! entry, and a few trap services (I/O batches, waiting, halting); see `services.s`.

pub mod abi;

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crate::io::IoOp;

global_asm!(
    include_str!("entry.s"),
    include_str!("tables.s"),
    include_str!("vectors.s"),
    include_str!("services.s"),
    include_str!("ap.s"),
    CR0_BITS = const abi::CR0_BITS,
    CR4_BITS = const abi::CR4_BITS,
    KERNEL_CS = const abi::KERNEL_CS,
    KERNEL_DS = const abi::KERNEL_DS,
    USER_CS = const abi::USER_CS,
    USER_DS = const abi::USER_DS,
    TSS_SEL = const abi::TSS_SEL,
    VECTOR_STUBS = const abi::VECTOR_STUBS,
    USER_STACK_SIZE = const abi::USER_STACK_SIZE,
    COM1_PORT = const abi::COM1_PORT,
    SVC_COUNT = const abi::SVC_COUNT,
    IO_KIND_COUNT = const abi::IO_KIND_COUNT,
    IO_OP_SIZE = const core::mem::size_of::<IoOp>(),
    AP_WAKE_ICR = const abi::AP_WAKE_ICR,
    rust_main = sym crate::rust_main,
    options(att_syntax)
);

extern "C" {
    static irq_counts: [AtomicU64; 256];
    static irq_total: AtomicU64;
    static irq_defer_eoi: [AtomicU64; 4];
    static lapic_base: AtomicU64;
    static bsp_apic_id: AtomicU64;
    static ap_online_by_apic: [AtomicU8; 256];
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// Runs `ops` in ring 0, in order; read results are stored back into the ops.
pub fn io_batch(ops: &mut [IoOp]) {
    let status: i64;
    // SAFETY: the service only touches the ops it is given and the ports/addresses they
    // name; the registers it clobbers are declared.
    unsafe {
        asm!("int3",
            inout("rax") abi::SVC_IO_BATCH => status,
            inout("rdi") ops.as_mut_ptr() => _,
            inout("rsi") ops.len() => _,
            out("rcx") _, out("rdx") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    assert_eq!(status, 0, "ring 0 rejected an I/O batch");
}

/// Sleeps until `counter` differs from `seen` (ring 0 runs `sti; hlt` until it does).
pub fn wait_until_changed(counter: &AtomicU64, seen: u64) {
    // SAFETY: the service only reads `counter` and halts; declared clobbers.
    unsafe {
        asm!("int3",
            inout("rax") abi::SVC_WAIT => _,
            inout("rdi") counter.as_ptr() => _,
            inout("rsi") seen => _,
            out("rcx") _, out("rdx") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
}

/// Stops this CPU for good (cli; hlt).
pub fn halt() -> ! {
    // SAFETY: the service never returns.
    unsafe { asm!("int3", in("rax") abi::SVC_HALT, options(noreturn)) }
}

/// Triple-faults the CPU on purpose (the VMM sees a shutdown and treats it as a reset).
pub fn triple_fault() -> ! {
    // SAFETY: the service never returns.
    unsafe { asm!("int3", in("rax") abi::SVC_TRIPLE_FAULT, options(noreturn)) }
}

/// Executes, in ring 0, an SSE instruction kvm-pvm cannot emulate. Returns only where ring 0
/// runs on hardware virtualisation.
pub fn execute_bad_instruction() {
    // SAFETY: pxor on %xmm0, which ring 3 code does not keep live across this call.
    unsafe {
        asm!("int3",
            inout("rax") abi::SVC_BAD_INSTRUCTION => _,
            out("xmm0") _,
        );
    }
}

/// Interrupts seen on `vector` since boot.
pub fn irq_count(vector: u8) -> &'static AtomicU64 {
    // SAFETY: a static array defined in tables.s, only ever accessed atomically.
    unsafe { &irq_counts[usize::from(vector)] }
}

/// Interrupts seen on all vectors since boot.
pub fn irq_total_count() -> &'static AtomicU64 {
    // SAFETY: a static defined in tables.s, only ever accessed atomically.
    unsafe { &irq_total }
}

/// Makes ring 0 leave the EOI of `vector` to ring 3 (for level-triggered sources).
pub fn defer_eoi(vector: u8) {
    // SAFETY: a static bitmap defined in tables.s, only ever accessed atomically.
    let word = unsafe { &irq_defer_eoi[usize::from(vector / 64)] };
    word.fetch_or(1 << (vector % 64), Ordering::SeqCst);
}

/// Tells ring 0 (interrupt EOIs, APs) where the local APIC is.
pub fn set_lapic_base(address: u64) {
    // SAFETY: a static defined in tables.s, only ever accessed atomically.
    unsafe { lapic_base.store(address, Ordering::SeqCst) }
}

/// Tells starting APs which APIC id to wake when they are up.
pub fn set_bsp_apic_id(apic_id: u32) {
    // SAFETY: a static defined in tables.s, only ever accessed atomically.
    unsafe { bsp_apic_id.store(u64::from(apic_id), Ordering::SeqCst) }
}

/// Whether the AP with this LAPIC id has reported in.
pub fn ap_is_online(apic_id: u32) -> bool {
    let Ok(index) = usize::try_from(apic_id) else {
        return false;
    };
    // SAFETY: a static array defined in tables.s, only ever accessed atomically.
    unsafe {
        ap_online_by_apic
            .get(index)
            .is_some_and(|flag| flag.load(Ordering::SeqCst) != 0)
    }
}

/// The real-mode AP start-up code, to be copied to a page below 1 MiB.
pub fn ap_trampoline() -> &'static [u8] {
    // SAFETY: the two symbols delimit the trampoline's bytes in the loaded image.
    unsafe {
        let start = core::ptr::addr_of!(ap_trampoline_start);
        let end = core::ptr::addr_of!(ap_trampoline_end);
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}
