//! Every completion checked against the CPU itself: the same instruction bytes run natively in
//! this (ring-3) test process with the same registers, flags and memory, and the emulated
//! result must match the CPU's (registers, the flags the instruction defines, memory).

use std::num::NonZeroUsize;

use iced_x86::{Decoder, DecoderOptions};
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

use super::{exec, host_cmpxchg16b, CpuState, Exception, Memory, Platform, Stop};

/// Register file the trampoline loads before and stores after the instruction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Native {
    gpr: [u64; 16],
    rflags: u64,
}

std::arch::global_asm!(
    ".global vireo_native_exec",
    "vireo_native_exec:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "push rsi",
    "push qword ptr [rdi + 128]",
    "popfq",
    "mov rax, [rdi + 0]",
    "mov rcx, [rdi + 8]",
    "mov rdx, [rdi + 16]",
    "mov rbx, [rdi + 24]",
    "mov rbp, [rdi + 40]",
    "mov rsi, [rdi + 48]",
    "mov r8, [rdi + 64]",
    "mov r9, [rdi + 72]",
    "mov r10, [rdi + 80]",
    "mov r11, [rdi + 88]",
    "mov r12, [rdi + 96]",
    "mov r13, [rdi + 104]",
    "mov r14, [rdi + 112]",
    "mov r15, [rdi + 120]",
    "mov rdi, [rdi + 56]",
    "call qword ptr [rsp]",
    "xchg rdi, [rsp + 8]",
    "mov [rdi + 0], rax",
    "mov [rdi + 8], rcx",
    "mov [rdi + 16], rdx",
    "mov [rdi + 24], rbx",
    "mov [rdi + 40], rbp",
    "mov [rdi + 48], rsi",
    "mov [rdi + 64], r8",
    "mov [rdi + 72], r9",
    "mov [rdi + 80], r10",
    "mov [rdi + 88], r11",
    "mov [rdi + 96], r12",
    "mov [rdi + 104], r13",
    "mov [rdi + 112], r14",
    "mov [rdi + 120], r15",
    "pushfq",
    "pop qword ptr [rdi + 128]",
    "mov rax, [rsp + 8]",
    "mov [rdi + 56], rax",
    "add rsp, 16",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
);

extern "C" {
    fn vireo_native_exec(state: *mut Native, code: *const u8);
}

/// Runs `bytes` natively (followed by `ret`) with `state`'s registers; RSP is not loaded.
fn run_native(bytes: &[u8], state: &mut Native) {
    // SAFETY: a fresh anonymous mapping, written then executed, unmapped below.
    unsafe {
        let page = mmap_anonymous(
            None,
            NonZeroUsize::new(4096).unwrap(),
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE | ProtFlags::PROT_EXEC,
            MapFlags::MAP_PRIVATE,
        )
        .expect("map a page for the code");
        let code = page.cast::<u8>().as_ptr();
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), code, bytes.len());
        *code.add(bytes.len()) = 0xc3;
        vireo_native_exec(state, code);
        munmap(page, 4096).expect("unmap the code page");
    }
}

/// Memory the emulator sees: one host buffer at its own address (so the same register values
/// address it natively and emulated); everything else is unmapped (#PF).
struct HostBuffer {
    base: u64,
    len: u64,
}

impl HostBuffer {
    fn check(&self, addr: u64, len: usize, write: bool) -> Result<*mut u8, Stop> {
        if addr < self.base || addr + len as u64 > self.base + self.len {
            return Err(Stop::Fault(Exception::PageFault {
                address: addr,
                error_code: u32::from(write) << 1,
            }));
        }
        Ok(addr as *mut u8)
    }
}

impl Memory for HostBuffer {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Stop> {
        let p = self.check(addr, buf.len(), false)?;
        // SAFETY: checked to lie in the live test buffer.
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Stop> {
        let p = self.check(addr, data.len(), true)?;
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    fn compare_exchange_16(&mut self, addr: u64, expected: u128, new: u128) -> Result<u128, Stop> {
        let p = self.check(addr, 16, true)?;
        // SAFETY: in the buffer, and the caller checked 16-byte alignment.
        Ok(unsafe { host_cmpxchg16b(p.cast(), expected, new) })
    }
}

/// TSC, TSC_AUX, XCR0 and the x87 status word as the native run saw them.
struct Fixed {
    tsc: u64,
    aux: u32,
    xcr0: u64,
    fsw: u16,
}

impl Platform for Fixed {
    fn tsc_and_aux(&mut self) -> Result<(u64, u32), Stop> {
        Ok((self.tsc, self.aux))
    }
    fn xcr(&mut self, index: u32) -> Result<Option<u64>, Stop> {
        Ok((index == 0).then_some(self.xcr0))
    }
    fn fpu_status(&mut self) -> Result<u16, Stop> {
        Ok(self.fsw)
    }
}

const STATUS: u64 = 0x8d5;

/// A 64-byte, 16-aligned scratch buffer.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Buffer([u8; 64]);

/// Runs `bytes` emulated and natively from the same registers and buffer; compares registers,
/// the status flags in `flags`, and the buffer. `setup` gets the buffer's address.
fn compare(bytes: &[u8], flags: u64, setup: impl Fn(u64) -> Native) {
    let initial = Buffer(std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a));
    // Both runs address the buffer through this pointer only.
    let buffer: *mut Buffer = Box::into_raw(Box::new(initial));
    let base = buffer as u64;
    let input = setup(base);

    let mut state = CpuState {
        gpr: input.gpr,
        rip: 0x1000,
        rflags: input.rflags,
        cr0: 0x8005_0033,
        cr4: 1 << 18,
        ..Default::default()
    };
    let insn = Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE).decode();
    assert_eq!(insn.len(), bytes.len(), "{bytes:02x?} decodes whole");
    let mut memory = HostBuffer { base, len: 64 };
    let (tsc, aux) = native_rdtscp();
    let mut platform = Fixed {
        tsc,
        aux,
        xcr0: native_xcr0(),
        fsw: native_fsw(),
    };
    let result = exec(&insn, &mut state, &mut memory, &mut platform);
    assert!(result.is_ok(), "{bytes:02x?}: {result:?}");
    assert_eq!(state.rip, 0x1000 + bytes.len() as u64);
    // SAFETY: `buffer` is the live allocation above (freed at the end).
    let emulated_memory = unsafe { buffer.read_volatile() };

    // SAFETY: as above.
    unsafe { buffer.write_volatile(initial) };
    let mut native = input;
    run_native(bytes, &mut native);
    // SAFETY: as above; this is the last use.
    let native_memory = unsafe { Box::from_raw(buffer) };
    let mut emulated_gpr = state.gpr;
    emulated_gpr[4] = input.gpr[4];
    native.gpr[4] = input.gpr[4];
    assert_eq!(
        emulated_gpr, native.gpr,
        "{bytes:02x?}: registers (emulated vs native)"
    );
    assert_eq!(
        state.rflags & flags,
        native.rflags & flags,
        "{bytes:02x?}: flags {:#x} (emulated {:#x}, native {:#x})",
        flags,
        state.rflags,
        native.rflags
    );
    assert_eq!(emulated_memory.0, native_memory.0, "{bytes:02x?}: memory");
}

fn native_rdtscp() -> (u64, u32) {
    let (lo, hi, aux): (u32, u32, u32);
    // SAFETY: rdtscp reads the TSC and TSC_AUX; it touches no memory.
    unsafe { std::arch::asm!("rdtscp", out("eax") lo, out("edx") hi, out("ecx") aux) };
    ((u64::from(hi) << 32) | u64::from(lo), aux)
}

fn native_fsw() -> u16 {
    let fsw: u16;
    // SAFETY: fnstsw only stores the x87 status word into a register.
    unsafe { std::arch::asm!("fnstsw ax", out("ax") fsw) };
    fsw
}

fn native_xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv(0) only reads XCR0 (OSXSAVE is set by the host kernel).
    unsafe { std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Inputs: a spread of values in every register, R8 pointing at the buffer, and the flags.
fn regs(base: u64, rflags: u64, set: &[(usize, u64)]) -> Native {
    let mut gpr: [u64; 16] =
        std::array::from_fn(|i| 0x0123_4567_89ab_cdefu64.rotate_left(i as u32 * 7) ^ (i as u64));
    gpr[8] = base;
    for &(i, v) in set {
        gpr[i] = v;
    }
    Native { gpr, rflags }
}

const CPU_FLAGS: [u64; 2] = [0x202, 0x202 | STATUS];

#[test]
fn cmpxchg16b_matches_the_cpu_on_match_and_mismatch() {
    // lock cmpxchg16b [r8+16] and cmpxchg16b [r8+32].
    for bytes in [
        &[0xf0, 0x49, 0x0f, 0xc7, 0x48, 0x10][..],
        &[0x49, 0x0f, 0xc7, 0x48, 0x20],
    ] {
        let offset = if bytes[0] == 0xf0 { 16 } else { 32 };
        for flags in CPU_FLAGS {
            // Mismatch: RDX:RAX are whatever `regs` spreads.
            compare(bytes, STATUS, |b| regs(b, flags, &[]));
            // Match: RDX:RAX hold the buffer's bytes.
            compare(bytes, STATUS, |b| {
                // SAFETY: the buffer is live and 16-aligned, offset 16/32 is inside it.
                let [lo, hi] = unsafe { ((b + offset) as *const [u64; 2]).read_volatile() };
                regs(b, flags, &[(0, lo), (2, hi)])
            });
        }
    }
}

#[test]
fn popcnt_matches_the_cpu() {
    let cases: [&[u8]; 4] = [
        &[0xf3, 0x48, 0x0f, 0xb8, 0xc1],       // popcnt rax, rcx
        &[0xf3, 0x0f, 0xb8, 0xd3],             // popcnt edx, ebx
        &[0x66, 0xf3, 0x0f, 0xb8, 0xf7],       // popcnt si, di
        &[0xf3, 0x49, 0x0f, 0xb8, 0x48, 0x08], // popcnt rcx, [r8+8]
    ];
    for bytes in cases {
        for flags in CPU_FLAGS {
            compare(bytes, STATUS, |b| regs(b, flags, &[]));
            compare(bytes, STATUS, |b| regs(b, flags, &[(1, 0), (3, 0), (7, 0)]));
        }
    }
}

#[test]
fn bmi_matches_the_cpu() {
    let cases: [(&[u8], u64); 16] = [
        (&[0xc4, 0xe2, 0xf0, 0xf2, 0xc2], STATUS & !0x14), // andn rax, rcx, rdx
        (&[0xc4, 0xe2, 0x70, 0xf2, 0xc2], STATUS & !0x14), // andn eax, ecx, edx
        (&[0xc4, 0xe2, 0xe8, 0xf7, 0xc1], 0x841),          // bextr rax, rcx, rdx
        (&[0xc4, 0xe2, 0x68, 0xf7, 0xc1], 0x841),          // bextr eax, ecx, edx
        (&[0xc4, 0xe2, 0xf8, 0xf3, 0xd9], STATUS & !0x14), // blsi rax, rcx
        (&[0xc4, 0xe2, 0xf8, 0xf3, 0xd1], STATUS & !0x14), // blsmsk rax, rcx
        (&[0xc4, 0xe2, 0xf8, 0xf3, 0xc9], STATUS & !0x14), // blsr rax, rcx
        (&[0xc4, 0xe2, 0x78, 0xf3, 0xc9], STATUS & !0x14), // blsr eax, ecx
        (&[0xc4, 0xe2, 0xe8, 0xf5, 0xc1], STATUS & !0x14), // bzhi rax, rcx, rdx
        (&[0xc4, 0xe2, 0xf3, 0xf6, 0xc3], STATUS),         // mulx rax, rcx, rbx
        (&[0xc4, 0xe2, 0xf3, 0xf5, 0xc3], STATUS),         // pdep rax, rcx, rbx
        (&[0xc4, 0xe2, 0xf2, 0xf5, 0xc3], STATUS),         // pext rax, rcx, rbx
        (&[0xc4, 0xe3, 0xfb, 0xf0, 0xc1, 0x0d], STATUS),   // rorx rax, rcx, 13
        (&[0xc4, 0xe2, 0xea, 0xf7, 0xc1], STATUS),         // sarx rax, rcx, rdx
        (&[0xc4, 0xe2, 0x69, 0xf7, 0xc1], STATUS),         // shlx eax, ecx, edx
        (&[0xc4, 0xc2, 0xeb, 0xf7, 0x40, 0x08], STATUS),   // shrx rax, [r8+8], rdx
    ];
    for (bytes, flags_defined) in cases {
        for flags in CPU_FLAGS {
            for rdx in [0, 0x0a05, 0x2004, 0xff, 40, 63, 0x8000_0000_0000_0001] {
                compare(bytes, flags_defined, |b| regs(b, flags, &[(2, rdx)]));
            }
            compare(bytes, flags_defined, |b| regs(b, flags, &[(1, 0), (2, 7)]));
        }
    }
}

#[test]
fn crc32_rdtscp_and_xgetbv_match_the_cpu() {
    let cases: [&[u8]; 6] = [
        &[0x9b],                                     // fwait (nothing pending)
        &[0xf2, 0x0f, 0x38, 0xf0, 0xc1],             // crc32 eax, cl
        &[0x66, 0xf2, 0x0f, 0x38, 0xf1, 0xc1],       // crc32 eax, cx
        &[0xf2, 0x0f, 0x38, 0xf1, 0xc1],             // crc32 eax, ecx
        &[0xf2, 0x49, 0x0f, 0x38, 0xf1, 0x40, 0x08], // crc32 rax, qword [r8+8]
        &[0x0f, 0x01, 0xd0],                         // xgetbv
    ];
    for bytes in cases {
        compare(bytes, STATUS, |b| regs(b, 0x202, &[(1, 0)]));
    }
    // rdtscp: the TSC moves between the runs, so compare the split of a native reading.
    let mut native = regs(0, 0x202, &[]);
    run_native(&[0x0f, 0x01, 0xf9], &mut native);
    let mut state = CpuState {
        gpr: regs(0, 0x202, &[]).gpr,
        ..Default::default()
    };
    let tsc = (native.gpr[2] << 32) | native.gpr[0];
    let mut platform = Fixed {
        tsc,
        aux: native.gpr[1] as u32,
        xcr0: 0,
        fsw: 0,
    };
    let insn = Decoder::with_ip(64, &[0x0f, 0x01, 0xf9], 0, DecoderOptions::NONE).decode();
    exec(
        &insn,
        &mut state,
        &mut HostBuffer { base: 0, len: 0 },
        &mut platform,
    )
    .unwrap();
    assert_eq!(state.gpr, native.gpr);
}

#[test]
fn int3_traps_after_the_instruction_and_faults_leave_state_unchanged() {
    let mut state = CpuState {
        rip: 0x5000,
        rflags: 0x202,
        ..Default::default()
    };
    let mut platform = Fixed {
        tsc: 0,
        aux: 0,
        xcr0: 0,
        fsw: 0,
    };
    let mut nothing = HostBuffer {
        base: 0x10_0000,
        len: 0,
    };
    let int3 = Decoder::with_ip(64, &[0xcc], 0x5000, DecoderOptions::NONE).decode();
    let done = exec(&int3, &mut state, &mut nothing, &mut platform).unwrap();
    assert_eq!(done.trap, Some(Exception::Breakpoint));
    assert_eq!(state.rip, 0x5001);

    // cmpxchg16b on a misaligned operand: #GP(0); on an unmapped one: #PF; state unchanged.
    let before = CpuState {
        gpr: regs(0x20_0008, 0x202, &[]).gpr,
        rip: 0x5001,
        rflags: 0x202,
        ..Default::default()
    };
    let insn = Decoder::with_ip(
        64,
        &[0xf0, 0x49, 0x0f, 0xc7, 0x08],
        0x5001,
        DecoderOptions::NONE,
    )
    .decode();
    let mut state = before.clone();
    let err = exec(&insn, &mut state, &mut nothing, &mut platform).unwrap_err();
    assert_eq!(err, Stop::Fault(Exception::GeneralProtection(0)));
    assert_eq!(state, before);
    state.gpr[8] = 0x20_0000;
    let err = exec(&insn, &mut state, &mut nothing, &mut platform).unwrap_err();
    assert_eq!(
        err,
        Stop::Fault(Exception::PageFault {
            address: 0x20_0000,
            error_code: 2
        })
    );
    // A non-canonical address: #GP(0).
    state.gpr[8] = 0x8000_0000_0000_0000;
    let err = exec(&insn, &mut state, &mut nothing, &mut platform).unwrap_err();
    assert_eq!(err, Stop::Fault(Exception::GeneralProtection(0)));
    // xgetbv without CR4.OSXSAVE: #UD.
    let xgetbv = Decoder::with_ip(64, &[0x0f, 0x01, 0xd0], 0, DecoderOptions::NONE).decode();
    let err = exec(
        &xgetbv,
        &mut CpuState::default(),
        &mut nothing,
        &mut platform,
    )
    .unwrap_err();
    assert_eq!(err, Stop::Fault(Exception::InvalidOpcode));
}

#[test]
fn instructions_not_covered_are_reported_not_guessed() {
    let mut platform = Fixed {
        tsc: 0,
        aux: 0,
        xcr0: 0,
        fsw: 0,
    };
    // pxor xmm0, xmm0 and xsave [rax]: not covered.
    for bytes in [&[0x66, 0x0f, 0xef, 0xc0][..], &[0x0f, 0xae, 0x20]] {
        let insn = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE).decode();
        let err = exec(
            &insn,
            &mut CpuState::default(),
            &mut HostBuffer { base: 0, len: 0 },
            &mut platform,
        )
        .unwrap_err();
        assert!(matches!(err, Stop::NotCovered(_)), "{err:?}");
    }
}
