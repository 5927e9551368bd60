//! Local APIC and IOAPIC programming, queued as MMIO writes for ring 0 to run in one trap:
//! enable the LAPIC, its periodic timer, IPIs (INIT/SIPI), EOI; IOAPIC redirection entries
//! for ISA IRQs with the MADT's overrides applied.

use crate::acpi::madt::Madt;
use crate::io::{Io, Width};

const LAPIC_ID: u64 = 0x20;
const LAPIC_TPR: u64 = 0x80;
const LAPIC_EOI: u64 = 0xb0;
const LAPIC_SVR: u64 = 0xf0;
const LAPIC_ICR_LOW: u64 = 0x300;
const LAPIC_ICR_HIGH: u64 = 0x310;
const LAPIC_LVT_TIMER: u64 = 0x320;
const LAPIC_TIMER_INITIAL: u64 = 0x380;
const LAPIC_TIMER_DIVIDE: u64 = 0x3e0;
const SVR_ENABLE: u32 = 1 << 8;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
const TIMER_DIVIDE_BY_16: u32 = 0x3;
const TIMER_DIVISOR: u64 = 16;
const ICR_INIT: u32 = 0x5 << 8 | 1 << 14;
const ICR_STARTUP: u32 = 0x6 << 8 | 1 << 14;

const IOAPIC_REGSEL: u64 = 0x00;
const IOAPIC_WINDOW: u64 = 0x10;
const IOAPIC_REDIRECTION_BASE: u32 = 0x10;
const REDIRECTION_ACTIVE_LOW: u32 = 1 << 13;
const REDIRECTION_LEVEL: u32 = 1 << 15;
const DEFAULT_IOAPIC_ADDRESS: u64 = 0xfec0_0000;
const DEFAULT_IOAPIC_PINS: u8 = 24;

/// KVM's emulated APIC bus runs at 1 GHz unless the hypervisor says otherwise.
const DEFAULT_APIC_BUS_HZ: u64 = 1_000_000_000;
const HYPERVISOR_TIMING_LEAF: u32 = 0x4000_0010;

/// A local APIC (xAPIC, MMIO).
#[derive(Clone, Copy)]
pub struct Lapic {
    base: u64,
}

impl Lapic {
    /// The LAPIC at `base`.
    pub fn new(base: u64) -> Lapic {
        Lapic { base }
    }

    /// This CPU's APIC id, from the LAPIC ID register (flushes the queue). CPUID's initial
    /// APIC id is not trusted: kvm-pvm passes the host's leaf-1 EBX through.
    pub fn id(&self, io: &mut Io) -> u32 {
        (io.mmio_read(self.base + LAPIC_ID, Width::Dword) >> 24) as u32
    }

    /// Queues: software-enable with the spurious vector, accept every priority.
    pub fn enable(&self, io: &mut Io, spurious_vector: u8) {
        self.write(io, LAPIC_TPR, 0);
        self.write(io, LAPIC_SVR, SVR_ENABLE | u32::from(spurious_vector));
    }

    /// Queues a periodic timer on `vector` at about `hz` (see `apic_bus_hz`).
    pub fn start_periodic_timer(&self, io: &mut Io, vector: u8, hz: u64) {
        let initial = (apic_bus_hz() / TIMER_DIVISOR / hz).clamp(1, u64::from(u32::MAX));
        self.write(io, LAPIC_TIMER_DIVIDE, TIMER_DIVIDE_BY_16);
        self.write(io, LAPIC_LVT_TIMER, LVT_TIMER_PERIODIC | u32::from(vector));
        self.write(io, LAPIC_TIMER_INITIAL, initial as u32);
    }

    /// Queues INIT, then two STARTUP IPIs pointing at the page `start_page` (real-mode CS
    /// = start_page << 8). KVM needs none of the legacy delays between them.
    pub fn send_init_startup(&self, io: &mut Io, apic_id: u32, start_page: u8) {
        self.send_ipi(io, apic_id, ICR_INIT);
        self.send_ipi(io, apic_id, ICR_STARTUP | u32::from(start_page));
        self.send_ipi(io, apic_id, ICR_STARTUP | u32::from(start_page));
    }

    /// Queues an end-of-interrupt.
    pub fn eoi(&self, io: &mut Io) {
        self.write(io, LAPIC_EOI, 0);
    }

    fn send_ipi(&self, io: &mut Io, apic_id: u32, command: u32) {
        self.write(io, LAPIC_ICR_HIGH, apic_id << 24);
        self.write(io, LAPIC_ICR_LOW, command);
    }

    fn write(&self, io: &mut Io, register: u64, value: u32) {
        io.mmio_write(self.base + register, Width::Dword, u64::from(value));
    }
}

/// The APIC timer's input clock: CPUID 0x40000010 EBX (kHz) when the hypervisor reports it,
/// else KVM's fixed 1 GHz.
pub fn apic_bus_hz() -> u64 {
    let max_hypervisor_leaf = core::arch::x86_64::__cpuid(0x4000_0000).eax;
    if max_hypervisor_leaf >= HYPERVISOR_TIMING_LEAF {
        let khz = core::arch::x86_64::__cpuid(HYPERVISOR_TIMING_LEAF).ebx;
        if khz != 0 {
            return u64::from(khz) * 1000;
        }
    }
    DEFAULT_APIC_BUS_HZ
}

/// Trigger mode of an interrupt line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Trigger {
    /// Edge-triggered.
    Edge,
    /// Level-triggered.
    Level,
}

/// Polarity of an interrupt line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Polarity {
    /// Active high.
    High,
    /// Active low.
    Low,
}

/// Where an ISA IRQ arrives and how it signals.
#[derive(Clone, Copy, Debug)]
pub struct IrqRoute {
    ioapic_base: u64,
    pin: u8,
    trigger: Trigger,
    polarity: Polarity,
}

/// Why an interrupt could not be routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No IOAPIC serves the GSI.
    #[error("no IOAPIC serves GSI {0}")]
    NoIoApic(u32),
}

impl IrqRoute {
    /// The route of ISA IRQ `irq`: its override (GSI, polarity, trigger) if the MADT has one,
    /// else GSI = IRQ with the given defaults.
    pub fn for_isa_irq(
        madt: &Madt,
        irq: u8,
        trigger: Trigger,
        polarity: Polarity,
    ) -> Result<IrqRoute, RouteError> {
        let (gsi, flags) = match madt.source_override(irq) {
            Some(o) => (o.gsi, o.flags),
            None => (u32::from(irq), 0),
        };
        let polarity = match flags & 0b11 {
            0b01 => Polarity::High,
            0b11 => Polarity::Low,
            _ => polarity,
        };
        let trigger = match (flags >> 2) & 0b11 {
            0b01 => Trigger::Edge,
            0b11 => Trigger::Level,
            _ => trigger,
        };
        Self::for_gsi(madt, gsi, trigger, polarity)
    }

    /// The route of `gsi` with the given trigger and polarity (no ISA override applies).
    pub fn for_gsi(
        madt: &Madt,
        gsi: u32,
        trigger: Trigger,
        polarity: Polarity,
    ) -> Result<IrqRoute, RouteError> {
        let (ioapic, pin) = madt.ioapic_for(gsi).ok_or(RouteError::NoIoApic(gsi))?;
        Ok(IrqRoute {
            ioapic_base: ioapic.address,
            pin,
            trigger,
            polarity,
        })
    }

    /// The route of `gsi` on the conventional IOAPIC (0xfec00000, GSI base 0), for machines
    /// without a MADT (QEMU microvm with acpi=off describes it in an MP table instead).
    pub fn on_default_ioapic(gsi: u32, trigger: Trigger, polarity: Polarity) -> Option<IrqRoute> {
        Some(IrqRoute {
            ioapic_base: DEFAULT_IOAPIC_ADDRESS,
            pin: u8::try_from(gsi)
                .ok()
                .filter(|&pin| pin < DEFAULT_IOAPIC_PINS)?,
            trigger,
            polarity,
        })
    }

    /// Whether the line is level-triggered (its EOI must wait until the source is quiet).
    pub fn is_level(&self) -> bool {
        self.trigger == Trigger::Level
    }

    /// Queues the redirection entry: fixed delivery of `vector` to `apic_id`, unmasked.
    pub fn program(&self, io: &mut Io, vector: u8, apic_id: u32) {
        let mut low = u32::from(vector);
        if self.polarity == Polarity::Low {
            low |= REDIRECTION_ACTIVE_LOW;
        }
        if self.trigger == Trigger::Level {
            low |= REDIRECTION_LEVEL;
        }
        let index = IOAPIC_REDIRECTION_BASE + 2 * u32::from(self.pin);
        self.write(io, index + 1, apic_id << 24);
        self.write(io, index, low);
    }

    fn write(&self, io: &mut Io, index: u32, value: u32) {
        io.mmio_write(
            self.ioapic_base + IOAPIC_REGSEL,
            Width::Dword,
            u64::from(index),
        );
        io.mmio_write(
            self.ioapic_base + IOAPIC_WINDOW,
            Width::Dword,
            u64::from(value),
        );
    }
}
