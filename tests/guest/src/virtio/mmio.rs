//! The virtio-mmio register window (transport version 2) of one device: probing, the driver
//! start-up handshake (§3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues,
//! DRIVER_OK), configuration space, interrupt routing and acknowledgement, and sleeping until
//! a queue has used entries. Register accesses go through the ring-0 I/O batch (`Io`).

use core::sync::atomic::Ordering;

use super::queue::Virtqueue;
use super::{DeviceSlot, F_EVENT_IDX, F_VERSION_1};
use crate::apic::IrqRoute;
use crate::arch;
use crate::dma::DmaError;
use crate::io::{Io, Width};
use crate::ticks;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MODERN_VERSION: u32 = 2;

mod reg {
    pub const MAGIC: u64 = 0x00;
    pub const VERSION: u64 = 0x04;
    pub const DEVICE_ID: u64 = 0x08;
    pub const DEVICE_FEATURES: u64 = 0x10;
    pub const DEVICE_FEATURES_SEL: u64 = 0x14;
    pub const DRIVER_FEATURES: u64 = 0x20;
    pub const DRIVER_FEATURES_SEL: u64 = 0x24;
    pub const QUEUE_SEL: u64 = 0x30;
    pub const QUEUE_NUM_MAX: u64 = 0x34;
    pub const QUEUE_NUM: u64 = 0x38;
    pub const QUEUE_READY: u64 = 0x44;
    pub const QUEUE_NOTIFY: u64 = 0x50;
    pub const INTERRUPT_ACK: u64 = 0x64;
    pub const STATUS: u64 = 0x70;
    pub const QUEUE_DESC_LOW: u64 = 0x80;
    pub const QUEUE_DESC_HIGH: u64 = 0x84;
    pub const QUEUE_DRIVER_LOW: u64 = 0x90;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x94;
    pub const QUEUE_DEVICE_LOW: u64 = 0xa0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0xa4;
    pub const CONFIG_GENERATION: u64 = 0xfc;
    pub const CONFIG: u64 = 0x100;
}

mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const FAILED: u32 = 128;
}

/// Both interrupt causes (used buffer, configuration change).
const INTERRUPT_ALL: u64 = 0b11;
/// How long a waiter polls the used ring before sleeping on the interrupt (10-20 ms).
const SPIN_TICKS: u64 = 2;

/// Why a window holds no usable device.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The magic value is wrong.
    #[error("no virtio-mmio device at {base:#x} (magic {magic:#x})")]
    NotVirtio {
        /// Window address.
        base: u64,
        /// What the magic register read.
        magic: u32,
    },
    /// A legacy (version 1) or unknown transport.
    #[error("virtio-mmio at {base:#x} is version {version}, only 2 (modern) is supported")]
    Version {
        /// Window address.
        base: u64,
        /// Its version register.
        version: u32,
    },
    /// The interrupt cannot be delivered.
    #[error("virtio-mmio at {base:#x}: GSI {gsi} has no vector")]
    NoVector {
        /// Window address.
        base: u64,
        /// The GSI of the command line.
        gsi: u32,
    },
}

/// Why the start-up handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The device does not offer VERSION_1.
    #[error("the device does not offer VIRTIO_F_VERSION_1")]
    NotModern,
    /// The device cleared FEATURES_OK.
    #[error("the device refused features {0:#x}")]
    FeaturesRefused(u64),
    /// A queue the driver needs does not exist or is already in use.
    #[error("queue {0} is unavailable")]
    QueueUnavailable(u16),
    /// No memory for a queue.
    #[error("queue memory: {0}")]
    Memory(#[from] DmaError),
}

/// One device's register window.
pub struct Transport {
    slot: DeviceSlot,
    vector: u8,
    device_type: u32,
    /// Interrupts of our vector already acknowledged (see `acknowledge_interrupts`).
    interrupts_acknowledged: u64,
    /// Interrupts of our vector already looked at for a configuration change.
    interrupts_checked: u64,
    /// ConfigGeneration as last read.
    generation: u32,
}

impl Transport {
    /// Checks the window of `slot` and reads the device type (0: no device behind it).
    pub fn probe(io: &mut Io, slot: DeviceSlot) -> Result<Transport, ProbeError> {
        let base = slot.base;
        let magic = io.mmio_read(base + reg::MAGIC, Width::Dword) as u32;
        if magic != MAGIC_VALUE {
            return Err(ProbeError::NotVirtio { base, magic });
        }
        let version = io.mmio_read(base + reg::VERSION, Width::Dword) as u32;
        if version != MODERN_VERSION {
            return Err(ProbeError::Version { base, version });
        }
        let vector = slot.vector().ok_or(ProbeError::NoVector {
            base,
            gsi: slot.gsi,
        })?;
        let device_type = io.mmio_read(base + reg::DEVICE_ID, Width::Dword) as u32;
        Ok(Transport {
            slot,
            vector,
            device_type,
            interrupts_acknowledged: 0,
            interrupts_checked: 0,
            generation: 0,
        })
    }

    /// The virtio device type (0 for an empty slot).
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// The register window's address.
    pub fn base(&self) -> u64 {
        self.slot.base
    }

    /// The device's GSI.
    pub fn gsi(&self) -> u32 {
        self.slot.gsi
    }

    /// Resets the device, announces a driver and negotiates `wanted & offered` plus VERSION_1
    /// and EVENT_IDX (both required). Returns the accepted features.
    pub fn negotiate(&mut self, io: &mut Io, wanted: u64) -> Result<u64, StartError> {
        self.write(io, reg::STATUS, 0);
        self.write(io, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        let offered = self.read_features(io);
        let required = 1 << F_VERSION_1 | 1 << F_EVENT_IDX;
        if offered & required != required {
            self.fail(io);
            return Err(StartError::NotModern);
        }
        let accepted = offered & (wanted | required);
        for (select, half) in [(0, accepted as u32), (1, (accepted >> 32) as u32)] {
            self.write(io, reg::DRIVER_FEATURES_SEL, select);
            self.write(io, reg::DRIVER_FEATURES, half);
        }
        let features_ok = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write(io, reg::STATUS, features_ok);
        if self.read(io, reg::STATUS) & status::FEATURES_OK == 0 {
            self.fail(io);
            return Err(StartError::FeaturesRefused(accepted));
        }
        Ok(accepted)
    }

    /// Creates queue `index` with up to `max_size` entries and gives it to the device.
    pub fn setup_queue(
        &mut self,
        io: &mut Io,
        index: u16,
        max_size: u16,
    ) -> Result<Virtqueue, StartError> {
        self.write(io, reg::QUEUE_SEL, u32::from(index));
        let device_max = self.read(io, reg::QUEUE_NUM_MAX);
        if device_max == 0 || self.read(io, reg::QUEUE_READY) != 0 {
            self.fail(io);
            return Err(StartError::QueueUnavailable(index));
        }
        let size = largest_power_of_two(device_max.min(u32::from(max_size)));
        let queue = Virtqueue::new(size, index, self.slot.base + reg::QUEUE_NOTIFY)?;
        let (desc, driver, device) = queue.addresses();
        self.write(io, reg::QUEUE_NUM, u32::from(size));
        for (low, value) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_DRIVER_LOW, driver),
            (reg::QUEUE_DEVICE_LOW, device),
        ] {
            self.write(io, low, value as u32);
            self.write(io, low + 4, (value >> 32) as u32);
        }
        const _: () = assert!(reg::QUEUE_DESC_HIGH == reg::QUEUE_DESC_LOW + 4);
        const _: () = assert!(reg::QUEUE_DRIVER_HIGH == reg::QUEUE_DRIVER_LOW + 4);
        const _: () = assert!(reg::QUEUE_DEVICE_HIGH == reg::QUEUE_DEVICE_LOW + 4);
        self.write(io, reg::QUEUE_READY, 1);
        Ok(queue)
    }

    /// Routes the device's interrupt (`route`, the device's GSI) to `apic_id` and sets
    /// DRIVER_OK.
    pub fn activate(&mut self, io: &mut Io, route: &IrqRoute, apic_id: u32) {
        route.program(io, self.vector, apic_id);
        let running = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write(io, reg::STATUS, running | status::DRIVER_OK);
        io.flush();
        self.generation = self.read(io, reg::CONFIG_GENERATION);
    }

    /// Whether the device changed its configuration space (a disk grew, a link went down)
    /// since the last call: ConfigGeneration is read only after an interrupt of the device
    /// (the configuration-change interrupt), so idle polling costs no register access.
    pub fn config_changed(&mut self, io: &mut Io) -> bool {
        let count = self.interrupt_count();
        if count == self.interrupts_checked {
            return false;
        }
        self.interrupts_checked = count;
        let generation = self.read(io, reg::CONFIG_GENERATION);
        let changed = generation != self.generation;
        self.generation = generation;
        changed
    }

    /// Reads a 32-bit field of the device configuration space.
    pub fn config_u32(&self, io: &mut Io, offset: u64) -> u32 {
        self.read(io, reg::CONFIG + offset)
    }

    /// Reads a 64-bit field of the device configuration space (two 32-bit reads).
    pub fn config_u64(&self, io: &mut Io, offset: u64) -> u64 {
        let low = u64::from(self.config_u32(io, offset));
        low | u64::from(self.config_u32(io, offset + 4)) << 32
    }

    /// Reads a byte of the device configuration space.
    pub fn config_u8(&self, io: &mut Io, offset: u64) -> u8 {
        io.mmio_read(self.slot.base + reg::CONFIG + offset, Width::Byte) as u8
    }

    /// Interrupts delivered on the device's vector since boot.
    pub fn interrupt_count(&self) -> u64 {
        arch::irq_count(self.vector).load(Ordering::SeqCst)
    }

    /// Acknowledges (InterruptACK, both causes, queued) if an interrupt came since the last
    /// acknowledgement: a level-triggered device (QEMU's) lowers its line, so the next
    /// completion raises a fresh edge. Returns whether a write was queued.
    pub fn acknowledge_interrupts(&mut self, io: &mut Io) -> bool {
        let count = self.interrupt_count();
        if count == self.interrupts_acknowledged {
            return false;
        }
        self.interrupts_acknowledged = count;
        io.mmio_write(
            self.slot.base + reg::INTERRUPT_ACK,
            Width::Dword,
            INTERRUPT_ALL,
        );
        true
    }

    /// Returns once `queue` has a used entry: polls natively for a few ticks (no exits), then
    /// sleeps until an interrupt — the device's, or the next timer tick, so that a lost
    /// interrupt costs a tick rather than a hang.
    pub fn wait_for_used(&mut self, io: &mut Io, queue: &mut Virtqueue) {
        let spin_until = ticks::now() + SPIN_TICKS;
        while !queue.has_used() {
            if ticks::now() < spin_until {
                core::hint::spin_loop();
                continue;
            }
            if self.acknowledge_interrupts(io) {
                io.flush();
            }
            let any = arch::irq_total_count();
            let seen = any.load(Ordering::SeqCst);
            if queue.request_interrupt() {
                arch::wait_until_changed(any, seen);
            }
        }
    }

    fn read_features(&self, io: &mut Io) -> u64 {
        self.write(io, reg::DEVICE_FEATURES_SEL, 0);
        let low = u64::from(self.read(io, reg::DEVICE_FEATURES));
        self.write(io, reg::DEVICE_FEATURES_SEL, 1);
        low | u64::from(self.read(io, reg::DEVICE_FEATURES)) << 32
    }

    fn fail(&self, io: &mut Io) {
        self.write(io, reg::STATUS, status::FAILED);
        io.flush();
    }

    fn read(&self, io: &mut Io, offset: u64) -> u32 {
        io.mmio_read(self.slot.base + offset, Width::Dword) as u32
    }

    fn write(&self, io: &mut Io, offset: u64, value: u32) {
        io.mmio_write(self.slot.base + offset, Width::Dword, u64::from(value));
    }
}

fn largest_power_of_two(n: u32) -> u16 {
    let n = n.clamp(1, 1 << 15);
    1 << (31 - n.leading_zeros())
}
