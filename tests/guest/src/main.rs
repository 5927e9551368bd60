//! vireo-test-guest: the tiny PVH kernel Vireo's KVM tests boot. A small ring-0 core in
//! assembly (arch/) and everything else here, in ring 3, where kvm-pvm runs code natively.
//! `rust_main` is the boot recipe, top to bottom; then the command line's scenario runs.

#![no_std]
#![no_main]

mod acpi;
mod apic;
mod arch;
mod blk;
mod cell;
mod cmdline;
mod console;
mod devices;
mod dma;
mod io;
mod mark;
mod mem;
mod net;
mod phys;
mod pit;
mod power;
mod pvh;
mod ram;
mod rtc;
mod screen;
mod shell;
mod smp;
mod ticks;
mod tools;
mod virtio;

use core::fmt::Display;

use acpi::madt::Madt;
use acpi::Acpi;
use apic::{IrqRoute, Lapic, Polarity, Trigger};
use arch::abi::{COM1_VECTOR, SPURIOUS_VECTOR, TIMER_VECTOR};
use cmdline::Scenario;
use devices::Devices;
use io::{Io, Width};
use power::PowerControl;
use pvh::BootInfo;

/// The VMM timestamps the first write to this port: boot is complete.
const BOOT_MARKER_PORT: u16 = 0x440;
const BOOT_MARKER_VALUE: u32 = 0x01;
/// How long to wait for APs to report (50 ticks: about half a second).
const AP_TIMEOUT_TICKS: u64 = 50;
const DEFAULT_LAPIC_ADDRESS: u64 = 0xfee0_0000;

/// What the scenarios and the shell know about the machine once booted.
pub struct Machine {
    /// The BSP's local APIC.
    pub lapic: Lapic,
    /// The BSP's APIC id.
    pub bsp_apic_id: u32,
    /// CPUs running (BSP included).
    pub cpus_online: usize,
    /// RAM in the memory map, MiB.
    pub ram_mib: u64,
    /// The MADT, if ACPI has one.
    pub madt: Option<Madt>,
    /// ACPI power-off, reset, power button.
    pub power: PowerControl,
    /// What the loader told us (command line, memory map).
    pub boot: BootInfo,
}

/// Entered from arch/entry.s in ring 3 with the physical address of hvm_start_info.
#[no_mangle]
extern "C" fn rust_main(start_info: u64) -> ! {
    let mut io = Io::new();
    let boot = BootInfo::read(start_info).unwrap_or_else(|error| fatal(&mut io, error));
    dma::init(boot.ram_ranges());
    screen::init(boot.cmdline());
    let scenario = cmdline::scenario(boot.cmdline()).unwrap_or_else(|unknown| {
        say!(&mut io, "unknown scenario {unknown}, running the shell");
        Scenario::Shell
    });
    let mut acpi = acpi::discover(boot.rsdp).unwrap_or_else(|error| {
        say!(&mut io, "no ACPI ({error}): one CPU, no power control");
        Acpi {
            madt: None,
            fadt: None,
            s5_sleep_type: None,
        }
    });
    let madt = acpi.madt.take();
    let lapic_address = madt
        .as_ref()
        .map_or(DEFAULT_LAPIC_ADDRESS, |madt| madt.lapic_address);
    arch::set_lapic_base(lapic_address);
    let lapic = Lapic::new(lapic_address);

    console::init(&mut io);
    lapic.enable(&mut io, SPURIOUS_VECTOR);
    lapic.start_periodic_timer(&mut io, TIMER_VECTOR, ticks::HZ);
    let bsp_apic_id = lapic.id(&mut io);
    route_console_interrupt(&mut io, madt.as_ref(), bsp_apic_id);
    let cpus_online = start_cpus(&mut io, &lapic, madt.as_ref(), bsp_apic_id, &boot);

    io.out(BOOT_MARKER_PORT, Width::Byte, BOOT_MARKER_VALUE);
    let ram_mib = boot.ram_mib();
    say!(
        &mut io,
        "booted cpus={cpus_online} mem={ram_mib}MiB scenario={}",
        scenario.name()
    );
    io.flush();

    let power = PowerControl::new(&mut acpi);
    let machine = Machine {
        lapic,
        bsp_apic_id,
        cpus_online,
        ram_mib,
        madt,
        power,
        boot,
    };
    match scenario {
        Scenario::PowerOff => power_off(&mut io, &machine),
        Scenario::Reboot => reboot(&mut io, &machine),
        Scenario::Wait => wait_for_power_button(&mut io, &machine),
        Scenario::Shell => {
            let mut devices = Devices::start(&mut io, machine.boot.cmdline(), &machine);
            shell::run(&mut io, &machine, &mut devices)
        }
    }
}

/// Routes COM1's IRQ to the COM1 vector on this CPU (queued); without a MADT, through the
/// conventional IOAPIC.
fn route_console_interrupt(io: &mut Io, madt: Option<&Madt>, apic_id: u32) {
    let irq = console::COM1_ISA_IRQ;
    let route = match madt {
        Some(madt) => IrqRoute::for_isa_irq(madt, irq, Trigger::Edge, Polarity::High),
        None => IrqRoute::on_default_ioapic(u32::from(irq), Trigger::Edge, Polarity::High)
            .ok_or(apic::RouteError::NoIoApic(u32::from(irq))),
    };
    match route {
        Ok(route) => route.program(io, COM1_VECTOR, apic_id),
        Err(error) => say!(io, "console input disabled: {error}"),
    }
}

/// Starts the APs and prints one line per AP that reported. Returns the CPUs online.
fn start_cpus(
    io: &mut Io,
    lapic: &Lapic,
    madt: Option<&Madt>,
    bsp_apic_id: u32,
    boot: &BootInfo,
) -> usize {
    let Some(madt) = madt else { return 1 };
    if let Err(error) = smp::start_aps(
        io,
        lapic,
        madt.cpus(),
        bsp_apic_id,
        boot.ram_ranges(),
        AP_TIMEOUT_TICKS,
    ) {
        say!(io, "secondary CPUs not started: {error}");
    }
    let aps = madt.cpus().iter().copied().filter(|&id| id != bsp_apic_id);
    let mut online = 1;
    for (index, apic_id) in (1..).zip(aps) {
        if smp::is_online(apic_id, bsp_apic_id) {
            say!(io, "cpu {index} online apic={apic_id}");
            online += 1;
        } else {
            say!(io, "cpu {index} apic={apic_id} did not start");
        }
    }
    online
}

/// The `power-off` scenario (and the shell's `poweroff`).
pub fn power_off(io: &mut Io, machine: &Machine) -> ! {
    say!(io, "powering off");
    let error = machine.power.power_off(io);
    fatal(io, error)
}

/// The `reboot` scenario (and the shell's `reboot`). A triple fault is the last resort.
pub fn reboot(io: &mut Io, machine: &Machine) -> ! {
    say!(io, "rebooting");
    let error = machine.power.reset(io);
    say!(io, "{error}; triple-faulting instead");
    io.flush();
    arch::triple_fault()
}

/// The `wait` scenario: power off when the ACPI power button is pressed.
fn wait_for_power_button(io: &mut Io, machine: &Machine) -> ! {
    let armed = machine
        .power
        .arm_power_button(io, machine.madt.as_ref(), machine.bsp_apic_id);
    if let Err(error) = armed.and_then(|()| {
        say!(io, "waiting for the power button");
        io.flush();
        machine.power.wait_for_power_button(io, &machine.lapic)
    }) {
        fatal(io, error);
    }
    say!(io, "power button pressed");
    power_off(io, machine)
}

/// Prints `vireo-test-guest: error: <error>` and halts.
fn fatal(io: &mut Io, error: impl Display) -> ! {
    say!(io, "error: {error}");
    io.flush();
    arch::halt()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut io = Io::new();
    match info.location() {
        Some(at) => say!(
            &mut io,
            "panic: {} at {}:{}",
            info.message(),
            at.file(),
            at.line()
        ),
        None => say!(&mut io, "panic: {}", info.message()),
    }
    io.flush();
    arch::halt()
}

/// The precompiled `core` references the unwinding personality; with panic=abort it is unused.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
