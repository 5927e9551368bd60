//! The semantics of each covered instruction, over a `CpuState`, `Memory` and `Platform`.
//! Every memory read and the one memory write happen before any register changes, so a fault
//! leaves the register file as it was.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::{Completed, CpuState, Exception, Kind, Memory, Platform, Stop};

const CF: u64 = 1 << 0;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const TF: u64 = 1 << 8;
const OF: u64 = 1 << 11;
const AC: u64 = 1 << 18;
const STATUS_FLAGS: u64 = CF | PF | AF | ZF | SF | OF;
const CR4_OSXSAVE: u64 = 1 << 18;
const CR0_MP: u64 = 1 << 1;
const CR0_TS: u64 = 1 << 3;
const CR0_NE: u64 = 1 << 5;
/// x87 status word: exception summary (an unmasked exception is pending).
const FSW_ES: u16 = 1 << 7;

/// Executes `insn` (decoded at `state.rip`) and leaves `state.rip` past it; on `Stop::Fault`
/// the state is unchanged.
pub fn exec(
    insn: &Instruction,
    state: &mut CpuState,
    memory: &mut dyn Memory,
    platform: &mut dyn Platform,
) -> Result<Completed, Stop> {
    if state.rflags & TF != 0 {
        return Err(Stop::NotCovered(
            "single-stepping (RFLAGS.TF) through a completed instruction".into(),
        ));
    }
    let kind = match insn.mnemonic() {
        Mnemonic::Int3 => {
            state.rip = insn.next_ip();
            return Ok(Completed {
                kind: Kind::Int3,
                trap: Some(Exception::Breakpoint),
            });
        }
        Mnemonic::Cmpxchg16b => cmpxchg16b(insn, state, memory)?,
        Mnemonic::Popcnt => popcnt(insn, state, memory)?,
        Mnemonic::Andn
        | Mnemonic::Bextr
        | Mnemonic::Blsi
        | Mnemonic::Blsmsk
        | Mnemonic::Blsr
        | Mnemonic::Bzhi
        | Mnemonic::Mulx
        | Mnemonic::Pdep
        | Mnemonic::Pext
        | Mnemonic::Rorx
        | Mnemonic::Sarx
        | Mnemonic::Shlx
        | Mnemonic::Shrx => bmi(insn, state, memory)?,
        Mnemonic::Crc32 => crc32(insn, state, memory)?,
        Mnemonic::Rdtscp => {
            let (tsc, aux) = platform.tsc_and_aux()?;
            write_gpr(state, Register::EAX, tsc & 0xffff_ffff);
            write_gpr(state, Register::EDX, tsc >> 32);
            write_gpr(state, Register::ECX, u64::from(aux));
            Kind::Rdtscp
        }
        Mnemonic::Xgetbv => xgetbv(state, platform)?,
        Mnemonic::Wait => fwait(state, platform)?,
        Mnemonic::Stac | Mnemonic::Clac => {
            // Privileged: #UD outside ring 0 (SMAP itself is in the guest's CPUID).
            if state.cpl != 0 {
                return Err(Stop::Fault(Exception::InvalidOpcode));
            }
            if insn.mnemonic() == Mnemonic::Stac {
                state.rflags |= AC;
            } else {
                state.rflags &= !AC;
            }
            Kind::Smap
        }
        other => return Err(Stop::NotCovered(format!("{other:?} is not covered"))),
    };
    state.rip = insn.next_ip();
    Ok(Completed { kind, trap: None })
}

/// Value of a general-purpose register of any size.
fn read_gpr(state: &CpuState, reg: Register) -> u64 {
    if matches!(
        reg,
        Register::AH | Register::CH | Register::DH | Register::BH
    ) {
        return (state.gpr[reg.number() - 4] >> 8) & 0xff;
    }
    let value = state.gpr[reg.full_register().number()];
    match reg.size() {
        8 => value,
        size => value & ((1u64 << (size * 8)) - 1),
    }
}

/// Writes a general-purpose register with the architectural rules: 32-bit writes zero the
/// upper half, 8- and 16-bit writes merge.
fn write_gpr(state: &mut CpuState, reg: Register, value: u64) {
    if matches!(
        reg,
        Register::AH | Register::CH | Register::DH | Register::BH
    ) {
        let full = &mut state.gpr[reg.number() - 4];
        *full = (*full & !0xff00) | ((value & 0xff) << 8);
        return;
    }
    let full = &mut state.gpr[reg.full_register().number()];
    *full = match reg.size() {
        8 => value,
        4 => value & 0xffff_ffff,
        size => {
            let mask = (1u64 << (size * 8)) - 1;
            (*full & !mask) | (value & mask)
        }
    };
}

/// Linear address of the memory operand, checked canonical (#GP(0) otherwise).
fn linear_address(insn: &Instruction, operand: u32, state: &CpuState) -> Result<u64, Stop> {
    let address = insn
        .virtual_address(operand, 0, |reg, _, _| match reg {
            Register::ES | Register::CS | Register::SS | Register::DS => Some(0),
            Register::FS => Some(state.fs_base),
            Register::GS => Some(state.gs_base),
            r if r.is_gpr() => Some(read_gpr(state, r)),
            _ => None,
        })
        .ok_or_else(|| Stop::NotCovered("unsupported memory operand".into()))?;
    let canonical = ((address as i64) << 16 >> 16) as u64 == address;
    if !canonical {
        return Err(Stop::Fault(Exception::GeneralProtection(0)));
    }
    Ok(address)
}

/// Reads operand `operand` (a general-purpose register or memory) as an integer.
fn read_operand(
    insn: &Instruction,
    operand: u32,
    state: &CpuState,
    memory: &mut dyn Memory,
) -> Result<u64, Stop> {
    match insn.op_kind(operand) {
        OpKind::Register => Ok(read_gpr(state, insn.op_register(operand))),
        OpKind::Memory => {
            let size = insn.memory_size().size();
            let mut buf = [0u8; 8];
            if size > buf.len() {
                return Err(Stop::NotCovered(format!("{size}-byte integer operand")));
            }
            let address = linear_address(insn, operand, state)?;
            memory.read(address, &mut buf[..size])?;
            Ok(u64::from_le_bytes(buf))
        }
        OpKind::Immediate8 => Ok(u64::from(insn.immediate8())),
        other => Err(Stop::NotCovered(format!("operand kind {other:?}"))),
    }
}

/// The operand size in bits of an instruction whose first operand is a general-purpose register.
fn dest_bits(insn: &Instruction) -> u32 {
    (insn.op0_register().size() * 8) as u32
}

/// The low `bits` bits set (all 64 from 64 up).
fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

fn sign_bit(value: u64, bits: u32) -> bool {
    (value >> (bits - 1)) & 1 == 1
}

/// Replaces the status flags with `set` (only the flags in STATUS_FLAGS).
fn set_status_flags(state: &mut CpuState, set: u64) {
    state.rflags = (state.rflags & !STATUS_FLAGS) | (set & STATUS_FLAGS);
}

fn cmpxchg16b(
    insn: &Instruction,
    state: &mut CpuState,
    memory: &mut dyn Memory,
) -> Result<Kind, Stop> {
    let address = linear_address(insn, 0, state)?;
    if address % 16 != 0 {
        return Err(Stop::Fault(Exception::GeneralProtection(0)));
    }
    let [rax, rcx, rdx, rbx] = [0, 1, 2, 3].map(|i| state.gpr[i]);
    let expected = u128::from(rax) | (u128::from(rdx) << 64);
    let new = u128::from(rbx) | (u128::from(rcx) << 64);
    let found = memory.compare_exchange_16(address, expected, new)?;
    if found == expected {
        state.rflags |= ZF;
    } else {
        state.rflags &= !ZF;
        state.gpr[0] = found as u64;
        state.gpr[2] = (found >> 64) as u64;
    }
    Ok(Kind::Cmpxchg16b)
}

fn popcnt(insn: &Instruction, state: &mut CpuState, memory: &mut dyn Memory) -> Result<Kind, Stop> {
    let source = read_operand(insn, 1, state, memory)?;
    let count = u64::from(source.count_ones());
    write_gpr(state, insn.op0_register(), count);
    set_status_flags(state, if source == 0 { ZF } else { 0 });
    Ok(Kind::Popcnt)
}

/// Result flags SF and ZF of `value` at `bits` width.
fn sf_zf(value: u64, bits: u32) -> u64 {
    let mut flags = 0;
    if value & mask(bits) == 0 {
        flags |= ZF;
    }
    if sign_bit(value, bits) {
        flags |= SF;
    }
    flags
}

fn bmi(insn: &Instruction, state: &mut CpuState, memory: &mut dyn Memory) -> Result<Kind, Stop> {
    let bits = dest_bits(insn);
    let m = mask(bits);
    let dest = insn.op0_register();
    // Flags BMI leaves undefined (AF, PF, and SF for bextr) keep their old values.
    let keep = state.rflags & STATUS_FLAGS;
    match insn.mnemonic() {
        Mnemonic::Andn => {
            let (a, b) = (
                read_operand(insn, 1, state, memory)?,
                read_operand(insn, 2, state, memory)?,
            );
            let r = !a & b & m;
            write_gpr(state, dest, r);
            set_status_flags(state, sf_zf(r, bits) | (keep & (AF | PF)));
        }
        Mnemonic::Bextr => {
            let (src, ctl) = (
                read_operand(insn, 1, state, memory)?,
                read_operand(insn, 2, state, memory)?,
            );
            let start = (ctl & 0xff) as u32;
            let len = ((ctl >> 8) & 0xff) as u32;
            let shifted = if start >= bits { 0 } else { (src & m) >> start };
            let r = shifted & mask(len);
            write_gpr(state, dest, r);
            let zf = if r == 0 { ZF } else { 0 };
            set_status_flags(state, zf | (keep & (AF | PF | SF)));
        }
        Mnemonic::Blsi | Mnemonic::Blsmsk | Mnemonic::Blsr => {
            let src = read_operand(insn, 1, state, memory)? & m;
            let (r, cf) = match insn.mnemonic() {
                Mnemonic::Blsi => (src.wrapping_neg() & src, src != 0),
                Mnemonic::Blsmsk => ((src.wrapping_sub(1) ^ src) & m, src == 0),
                _ => (src.wrapping_sub(1) & src, src == 0),
            };
            write_gpr(state, dest, r);
            let mut flags = sf_zf(r, bits) | (keep & (AF | PF));
            if cf {
                flags |= CF;
            }
            set_status_flags(state, flags);
        }
        Mnemonic::Bzhi => {
            let (src, index) = (
                read_operand(insn, 1, state, memory)?,
                read_operand(insn, 2, state, memory)?,
            );
            let n = (index & 0xff) as u32;
            let r = src & mask(n.min(bits));
            write_gpr(state, dest, r);
            let cf = if n > bits - 1 { CF } else { 0 };
            set_status_flags(state, sf_zf(r, bits) | cf | (keep & (AF | PF)));
        }
        Mnemonic::Mulx => {
            let src = read_operand(insn, 2, state, memory)?;
            let rdx = state.gpr[2] & m;
            let product = u128::from(rdx) * u128::from(src & m);
            let (lo, hi) = ((product as u64) & m, (product >> bits) as u64 & m);
            write_gpr(state, insn.op1_register(), lo);
            write_gpr(state, dest, hi);
        }
        Mnemonic::Pdep | Mnemonic::Pext => {
            let (src, sel) = (
                read_operand(insn, 1, state, memory)?,
                read_operand(insn, 2, state, memory)?,
            );
            let r = if insn.mnemonic() == Mnemonic::Pdep {
                deposit(src & m, sel & m)
            } else {
                extract(src & m, sel & m)
            };
            write_gpr(state, dest, r);
        }
        Mnemonic::Rorx => {
            let src = read_operand(insn, 1, state, memory)? & m;
            let n = u32::from(insn.immediate8()) % bits;
            let r = if n == 0 {
                src
            } else {
                ((src >> n) | (src << (bits - n))) & m
            };
            write_gpr(state, dest, r);
        }
        _ => {
            let src = read_operand(insn, 1, state, memory)? & m;
            let n = (read_operand(insn, 2, state, memory)? & u64::from(bits - 1)) as u32;
            let r = match insn.mnemonic() {
                Mnemonic::Shlx => (src << n) & m,
                Mnemonic::Shrx => src >> n,
                _ => ((((src << (64 - bits)) as i64) >> (64 - bits + n)) as u64) & m,
            };
            write_gpr(state, dest, r);
        }
    }
    Ok(Kind::Bmi)
}

/// PDEP: scatters the low bits of `src` to the set bits of `selector`.
fn deposit(src: u64, selector: u64) -> u64 {
    let (mut r, mut k, mut sel) = (0u64, 0u32, selector);
    while sel != 0 {
        let bit = sel & sel.wrapping_neg();
        if (src >> k) & 1 == 1 {
            r |= bit;
        }
        k += 1;
        sel &= sel - 1;
    }
    r
}

/// PEXT: gathers the bits of `src` at the set bits of `selector` into the low bits.
fn extract(src: u64, selector: u64) -> u64 {
    let (mut r, mut k, mut sel) = (0u64, 0u32, selector);
    while sel != 0 {
        let bit = sel & sel.wrapping_neg();
        if src & bit != 0 {
            r |= 1 << k;
        }
        k += 1;
        sel &= sel - 1;
    }
    r
}

/// CRC-32C (Castagnoli, reflected) of the low `bytes` bytes of `data`, continuing from `crc`.
fn crc32c(mut crc: u32, data: u64, bytes: usize) -> u32 {
    for byte in data.to_le_bytes().iter().take(bytes) {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn crc32(insn: &Instruction, state: &mut CpuState, memory: &mut dyn Memory) -> Result<Kind, Stop> {
    let source_bytes = match insn.op_kind(1) {
        OpKind::Register => insn.op1_register().size(),
        _ => insn.memory_size().size(),
    };
    let source = read_operand(insn, 1, state, memory)?;
    let crc = read_gpr(state, insn.op0_register()) as u32;
    write_gpr(
        state,
        insn.op0_register(),
        u64::from(crc32c(crc, source, source_bytes)),
    );
    Ok(Kind::Crc32)
}

/// FWAIT: #NM with CR0.MP and CR0.TS, #MF if an unmasked x87 exception is pending, else nothing.
fn fwait(state: &CpuState, platform: &mut dyn Platform) -> Result<Kind, Stop> {
    if state.cr0 & (CR0_MP | CR0_TS) == CR0_MP | CR0_TS {
        return Err(Stop::Fault(Exception::DeviceNotAvailable));
    }
    if platform.fpu_status()? & FSW_ES != 0 {
        if state.cr0 & CR0_NE == 0 {
            return Err(Stop::NotCovered(
                "a pending x87 exception reported through FERR# (CR0.NE clear)".into(),
            ));
        }
        return Err(Stop::Fault(Exception::MathFault));
    }
    Ok(Kind::Fwait)
}

fn xgetbv(state: &mut CpuState, platform: &mut dyn Platform) -> Result<Kind, Stop> {
    if state.cr4 & CR4_OSXSAVE == 0 {
        return Err(Stop::Fault(Exception::InvalidOpcode));
    }
    let index = state.gpr[1] as u32;
    let value = platform
        .xcr(index)?
        .ok_or(Stop::Fault(Exception::GeneralProtection(0)))?;
    write_gpr(state, Register::EAX, value & 0xffff_ffff);
    write_gpr(state, Register::EDX, value >> 32);
    Ok(Kind::Xgetbv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_register_writes_follow_the_architecture() {
        let mut s = CpuState {
            gpr: [u64::MAX; 16],
            ..Default::default()
        };
        write_gpr(&mut s, Register::EAX, 5);
        assert_eq!(s.gpr[0], 5);
        write_gpr(&mut s, Register::CX, 0x1234);
        assert_eq!(s.gpr[1], 0xffff_ffff_ffff_1234);
        write_gpr(&mut s, Register::DH, 0x12);
        assert_eq!(s.gpr[2], 0xffff_ffff_ffff_12ff);
        assert_eq!(read_gpr(&s, Register::DH), 0x12);
        write_gpr(&mut s, Register::R9L, 0);
        assert_eq!(s.gpr[9], 0xffff_ffff_ffff_ff00);
    }

    #[test]
    fn stac_and_clac_set_and_clear_ac_in_ring_0_only() {
        // Privileged, so the CPU cannot run them in this ring-3 test: checked against the SDM.
        struct NoPlatform;
        impl Platform for NoPlatform {
            fn tsc_and_aux(&mut self) -> Result<(u64, u32), Stop> {
                unreachable!()
            }
            fn xcr(&mut self, _: u32) -> Result<Option<u64>, Stop> {
                unreachable!()
            }
            fn fpu_status(&mut self) -> Result<u16, Stop> {
                unreachable!()
            }
        }
        struct NoMemory;
        impl Memory for NoMemory {
            fn read(&mut self, _: u64, _: &mut [u8]) -> Result<(), Stop> {
                unreachable!()
            }
            fn write(&mut self, _: u64, _: &[u8]) -> Result<(), Stop> {
                unreachable!()
            }
            fn compare_exchange_16(&mut self, _: u64, _: u128, _: u128) -> Result<u128, Stop> {
                unreachable!()
            }
        }
        let run = |bytes: &[u8], state: &mut CpuState| {
            let insn = iced_x86::Decoder::with_ip(64, bytes, state.rip, 0).decode();
            exec(&insn, state, &mut NoMemory, &mut NoPlatform)
        };
        let mut s = CpuState {
            rip: 0x100,
            rflags: 0x246,
            ..Default::default()
        };
        run(&[0x0f, 0x01, 0xcb], &mut s).unwrap();
        assert_eq!((s.rflags, s.rip), (0x246 | AC, 0x103));
        run(&[0x0f, 0x01, 0xca], &mut s).unwrap();
        assert_eq!((s.rflags, s.rip), (0x246, 0x106));
        s.cpl = 3;
        let before = s.clone();
        assert_eq!(
            run(&[0x0f, 0x01, 0xcb], &mut s),
            Err(Stop::Fault(Exception::InvalidOpcode))
        );
        assert_eq!(s, before);
    }

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // CRC-32C of "123456789" is 0xe3069283 (RFC 3720's check value).
        let crc = b"123456789"
            .iter()
            .fold(!0u32, |c, b| crc32c(c, u64::from(*b), 1));
        assert_eq!(!crc, 0xe306_9283);
    }
}
