//! Numbers shared by the ring-0 assembly and ring-3 Rust: selectors, control-register bits,
//! service numbers, vectors. The assembly receives them as `const` operands (arch/mod.rs).

/// CR0: PE | MP | NE | PG (EM and TS clear: SSE usable).
pub const CR0_BITS: u32 = 1 | 1 << 1 | 1 << 5 | 1 << 31;
/// CR4: PAE | OSFXSR | OSXMMEXCPT (the precompiled `core` uses SSE).
pub const CR4_BITS: u32 = 1 << 5 | 1 << 9 | 1 << 10;

/// Kernel 64-bit code selector (Linux layout).
pub const KERNEL_CS: u16 = 0x10;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x18;
/// User data selector (RPL 3).
pub const USER_DS: u16 = 0x2b;
/// User 64-bit code selector (RPL 3).
pub const USER_CS: u16 = 0x33;
/// Task state segment selector.
pub const TSS_SEL: u16 = 0x40;

/// Where the 16-byte vector stubs start: the load address (asserted in link.ld).
pub const VECTOR_STUBS: u64 = 0x10_0000;
/// Ring-3 stack size.
pub const USER_STACK_SIZE: usize = 64 * 1024;
/// The port ring 0 prints panics to (COM1).
pub const COM1_PORT: u16 = 0x3f8;

/// Service: run a batch of I/O operations.
pub const SVC_IO_BATCH: u64 = 0;
/// Service: sleep until a counter changes.
pub const SVC_WAIT: u64 = 1;
/// Service: halt this CPU forever.
pub const SVC_HALT: u64 = 2;
/// Service: triple-fault.
pub const SVC_TRIPLE_FAULT: u64 = 3;
/// Service: execute an instruction kvm-pvm cannot emulate in ring 0.
pub const SVC_BAD_INSTRUCTION: u64 = 4;
/// Number of services.
pub const SVC_COUNT: u64 = 5;

/// Number of I/O operation kinds (io.rs `IoKind`, including the invalid 0).
pub const IO_KIND_COUNT: u32 = 17;

/// Vector of the periodic LAPIC timer.
pub const TIMER_VECTOR: u8 = 0x20;
/// Vector of the IPI an AP sends the BSP once it is up.
pub const AP_WAKE_VECTOR: u8 = 0x21;
/// Interrupts of GSI n arrive on vector `GSI_VECTOR_BASE + n` (COM1 on GSI 4 and the SCI on
/// GSI 9 follow the same rule; virtio devices use it for their GSIs).
pub const GSI_VECTOR_BASE: u8 = 0x20;
/// Vector of COM1's interrupt.
pub const COM1_VECTOR: u8 = 0x24;
/// Vector of the ACPI SCI.
pub const SCI_VECTOR: u8 = 0x29;
/// Spurious-interrupt vector (never EOIed).
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// ICR low word of the AP wake IPI: fixed delivery, physical destination, assert.
pub const AP_WAKE_ICR: u32 = 1 << 14 | AP_WAKE_VECTOR as u32;
