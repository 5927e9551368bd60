//! The 8254 PIT as a PC operating system uses it: channel 0 as a periodic tick on ISA IRQ 0
//! (routed through the IOAPIC), then shut down the way Linux does when it switches to the
//! LAPIC timer; channel 2 gated through port B (0x61) as Linux's TSC calibration runs it,
//! reading its count through the latch command and waiting for its output in port B bit 5.

use core::sync::atomic::Ordering;

use crate::apic::{IrqRoute, Polarity, Trigger};
use crate::arch;
use crate::console;
use crate::io::{Io, Width};
use crate::ticks;
use crate::Machine;

const CHANNEL_0: u16 = 0x40;
const CHANNEL_2: u16 = 0x42;
const MODE: u16 = 0x43;
const PORT_B: u16 = 0x61;
/// Vector PIT interrupts are routed to (not GSI_VECTOR_BASE + 0: that is the LAPIC timer's).
const PIT_VECTOR: u8 = 0x50;
/// Channel 0's count for 1 kHz.
const COUNT_1KHZ: u16 = 1193;
/// How long channel 0 ticks, in LAPIC ticks.
const RUN_TICKS: u64 = 20;

/// The shell's `pit`. With no argument it runs channel 0 for [`RUN_TICKS`] and channel 2 once,
/// and prints `pit irq0=<n> ticks=<t> ch2=<first>,<second> out2=<0|1>`. `pit start` leaves
/// channel 0 ticking at 1 kHz, `pit count` prints `pit irq0=<all so far>`, `pit stop` shuts it
/// down. Errors print `error: <why>`.
pub fn command(io: &mut Io, machine: &Machine, argument: &str) {
    let done = match argument {
        "" => check(io, machine),
        "start" => start(io, machine).map(|()| console::line(io, format_args!("pit started"))),
        "count" => {
            let all = arch::irq_count(PIT_VECTOR).load(Ordering::SeqCst);
            console::line(io, format_args!("pit irq0={all}"));
            Ok(())
        }
        "stop" => {
            stop(io);
            console::line(io, format_args!("pit stopped"));
            Ok(())
        }
        _ => Err("usage: pit [start | count | stop]"),
    };
    if let Err(why) = done {
        console::line(io, format_args!("error: {why}"));
    }
}

/// Routes ISA IRQ 0 to [`PIT_VECTOR`] on the BSP and starts channel 0 at 1 kHz (mode 2).
fn start(io: &mut Io, machine: &Machine) -> Result<(), &'static str> {
    let madt = machine.madt.as_ref().ok_or("no MADT to route IRQ 0")?;
    let route = IrqRoute::for_isa_irq(madt, 0, Trigger::Edge, Polarity::High)
        .map_err(|_| "no IOAPIC pin for IRQ 0")?;
    route.program(io, PIT_VECTOR, machine.bsp_apic_id);
    // Channel 0, low then high byte, mode 2 (rate generator).
    io.out(MODE, Width::Byte, 0x34);
    write_count(io, CHANNEL_0, COUNT_1KHZ);
    io.flush();
    Ok(())
}

/// Linux's shutdown of the PIT tick: mode 0 and a zero count.
fn stop(io: &mut Io) {
    io.out(MODE, Width::Byte, 0x30);
    write_count(io, CHANNEL_0, 0);
    io.flush();
}

fn check(io: &mut Io, machine: &Machine) -> Result<(), &'static str> {
    let irqs = arch::irq_count(PIT_VECTOR);
    let before = irqs.load(Ordering::SeqCst);
    start(io, machine)?;
    ticks::sleep(RUN_TICKS);
    stop(io);
    let counted = irqs.load(Ordering::SeqCst) - before;

    // Channel 2: gate on, speaker off; low then high byte, mode 0, the largest count.
    let port_b = io.input(PORT_B, Width::Byte) as u8;
    io.out(PORT_B, Width::Byte, u32::from((port_b & !0x02) | 0x01));
    io.out(MODE, Width::Byte, 0xb0);
    write_count(io, CHANNEL_2, 0xffff);
    let first = latched_count(io, CHANNEL_2, 0x80);
    ticks::sleep(1);
    let second = latched_count(io, CHANNEL_2, 0x80);
    // 0xffff clocks of 1.193182 MHz are 55 ms; wait 100.
    ticks::sleep(10);
    let out2 = (io.input(PORT_B, Width::Byte) >> 5) & 1;
    console::line(
        io,
        format_args!("pit irq0={counted} ticks={RUN_TICKS} ch2={first},{second} out2={out2}"),
    );
    Ok(())
}

fn write_count(io: &mut Io, port: u16, count: u16) {
    let [low, high] = count.to_le_bytes();
    io.out(port, Width::Byte, u32::from(low));
    io.out(port, Width::Byte, u32::from(high));
}

/// Latches the channel's count with `latch_command` and reads it, low byte first.
fn latched_count(io: &mut Io, port: u16, latch_command: u8) -> u16 {
    io.out(MODE, Width::Byte, u32::from(latch_command));
    let low = io.input(port, Width::Byte) as u8;
    let high = io.input(port, Width::Byte) as u8;
    u16::from_le_bytes([low, high])
}
