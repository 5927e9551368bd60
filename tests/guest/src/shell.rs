//! The `shell` scenario: a line-oriented command interpreter on the console that tests drive.
//! Input is interrupt-driven (sleep on the COM1 vector, then drain the UART); typed characters
//! are echoed; `\r`, `\n` or `\r\n` end a line.

use core::sync::atomic::Ordering;

use crate::arch::{self, abi::COM1_VECTOR};
use crate::console;
use crate::devices::Devices;
use crate::io::Io;
use crate::mark;
use crate::screen;
use crate::ticks;
use crate::tools;
use crate::tools::agent::PowerRequest;
use crate::tools::Activity;
use crate::{say, Machine};

const PROMPT: &str = "vireo> ";
const LINE_CAPACITY: usize = 256;
const BACKSPACE: u8 = 0x08;
const DELETE: u8 = 0x7f;

const HELP: &str = "commands: help, echo <text>, cpus, ticks, mem, mark set <text>, mark get, \
poweroff, reboot, triple-fault, bad-insn, cmdline, topology, pit ..., blk ..., tools ..., net ..., ram ...";

/// Runs the interpreter forever.
pub fn run(io: &mut Io, machine: &Machine, devices: &mut Devices) -> ! {
    let mut input = LineReader::new();
    loop {
        print(io, PROMPT);
        let line = input.read_line(io, machine, devices);
        execute(io, machine, devices, line.trim());
    }
}

fn execute(io: &mut Io, machine: &Machine, devices: &mut Devices, line: &str) {
    let (command, argument) = line.split_once(' ').unwrap_or((line, ""));
    match command {
        "" => {}
        "help" => println(io, format_args!("{HELP}")),
        "echo" => println(io, format_args!("{argument}")),
        "cpus" => println(io, format_args!("cpus={}", machine.cpus_online)),
        "topology" => topology_command(io, machine),
        "ticks" => println(io, format_args!("ticks={}", ticks::now())),
        "mem" => println(io, format_args!("mem={}MiB", machine.ram_mib)),
        "cmdline" => println(io, format_args!("{}", machine.boot.cmdline())),
        "mark" => mark_command(io, argument),
        "ram" => crate::ram::command(io, argument),
        "pit" => crate::pit::command(io, machine, argument),
        "blk" => devices.disks.command(io, argument),
        "tools" => tools::command(devices.tools.as_mut(), io, argument),
        "net" => match devices.net.as_mut() {
            Some(net) => net.command(io, argument),
            None => println(io, format_args!("error: no network card")),
        },
        "poweroff" => crate::power_off(io, machine),
        "reboot" => crate::reboot(io, machine),
        "triple-fault" => {
            say!(io, "triple-faulting");
            io.flush();
            arch::triple_fault();
        }
        "bad-insn" => {
            say!(io, "executing pxor in ring 0");
            io.flush();
            arch::execute_bad_instruction();
            say!(io, "pxor ran in ring 0: this is hardware virtualisation");
        }
        unknown => println(io, format_args!("error: unknown command {unknown}")),
    }
}

/// The CPU topology CPUID describes to this vCPU: cores per socket (leaf 0xB's core level, and
/// leaf 4), the APIC id bits of the cores, and the sockets the online CPUs fill.
fn topology_command(io: &mut Io, machine: &Machine) {
    let core_level = core::arch::x86_64::__cpuid_count(0xb, 1);
    let cache = core::arch::x86_64::__cpuid_count(4, 0);
    let features = core::arch::x86_64::__cpuid(1);
    let cores = core_level.ebx & 0xffff;
    println(
        io,
        format_args!(
            "topology cores_per_socket={cores} core_bits={} leaf4_cores={} leaf1_logical={} \
             apic_id={} sockets={}",
            core_level.eax & 0x1f,
            (cache.eax >> 26) + 1,
            (features.ebx >> 16) & 0xff,
            features.ebx >> 24,
            machine.cpus_online / (cores.max(1) as usize),
        ),
    );
}

fn mark_command(io: &mut Io, argument: &str) {
    match argument.split_once(' ').unwrap_or((argument, "")) {
        ("set", text) => {
            mark::set(text);
            println(io, format_args!("mark set"));
        }
        ("get", _) => mark::with(|text| println(io, format_args!("mark={text}"))),
        _ => println(io, format_args!("error: usage: mark set <text> | mark get")),
    }
}

fn print(io: &mut Io, text: &str) {
    use core::fmt::Write as _;
    let _ = console::out(io).write_str(text);
}

fn println(io: &mut Io, args: core::fmt::Arguments) {
    console::line(io, args);
}

/// Collects one input line, echoing as it goes.
struct LineReader {
    line: [u8; LINE_CAPACITY],
    line_len: usize,
    pending: [u8; 64],
    pending_len: usize,
    pending_pos: usize,
    last_was_cr: bool,
}

impl LineReader {
    fn new() -> LineReader {
        LineReader {
            line: [0; LINE_CAPACITY],
            line_len: 0,
            pending: [0; 64],
            pending_len: 0,
            pending_pos: 0,
            last_was_cr: false,
        }
    }

    /// Returns the next line (without its terminator); non-UTF-8 lines read as empty.
    fn read_line(&mut self, io: &mut Io, machine: &Machine, devices: &mut Devices) -> &str {
        self.line_len = 0;
        loop {
            while self.pending_pos < self.pending_len {
                let byte = self.pending[self.pending_pos];
                self.pending_pos += 1;
                if self.accept(io, byte) {
                    return core::str::from_utf8(&self.line[..self.line_len]).unwrap_or("");
                }
            }
            self.refill(io, machine, devices);
        }
    }

    /// Takes one input byte; true when it ends the line.
    fn accept(&mut self, io: &mut Io, byte: u8) -> bool {
        let after_cr = core::mem::replace(&mut self.last_was_cr, byte == b'\r');
        match byte {
            b'\n' if after_cr => false,
            b'\r' | b'\n' => {
                print(io, "\n");
                true
            }
            BACKSPACE | DELETE => {
                if self.line_len > 0 {
                    self.line_len -= 1;
                    console::write_bytes(io, b"\x08 \x08");
                }
                false
            }
            b' '..=b'~' if self.line_len < LINE_CAPACITY => {
                self.line[self.line_len] = byte;
                self.line_len += 1;
                console::write_bytes(io, &[byte]);
                false
            }
            _ => false,
        }
    }

    /// Flushes output, then reads what the UART holds; while it holds nothing, serves the
    /// devices and sleeps until any interrupt (COM1, a device, the timer tick). Carries out
    /// a power request from the tools host.
    fn refill(&mut self, io: &mut Io, machine: &Machine, devices: &mut Devices) {
        let com1 = arch::irq_count(COM1_VECTOR);
        let any = arch::irq_total_count();
        screen::present();
        let mut com1_drained = None;
        loop {
            let seen = any.load(Ordering::SeqCst);
            let com1_now = com1.load(Ordering::SeqCst);
            if com1_drained != Some(com1_now) {
                com1_drained = Some(com1_now);
                let count = console::read_available(io, &mut self.pending);
                if count > 0 {
                    self.pending_len = count;
                    self.pending_pos = 0;
                    return;
                }
            }
            match devices.service(io) {
                Activity::Idle => {}
                Activity::Worked => continue,
                Activity::Power(PowerRequest::Off) => crate::power_off(io, machine),
                Activity::Power(PowerRequest::Reboot) => crate::reboot(io, machine),
            }
            let idle = devices.prepare_sleep(io);
            io.flush();
            if idle {
                arch::wait_until_changed(any, seen);
            }
        }
    }
}
