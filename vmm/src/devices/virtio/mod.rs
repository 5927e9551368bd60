//! virtio 1.x devices on the MMIO transport: the transport's register file (`mmio`), checked
//! virtqueue access that turns guest misbehaviour into a broken device instead of a hang or a
//! panic (`queue`), the worker thread that serves queue notifications off the vCPU threads
//! (`worker`), and the devices themselves (`block`, `net`, `console`). What every device does
//! the same way lives here: taking its queues on activation (`Activation::take_queues`),
//! serving a pass over them (`DeviceSignals::serve`: interrupt, or mark the device broken) and
//! stopping its worker on reset (`worker::stop`).

pub mod block;
pub mod console;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod worker;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Feature bit every modern device offers.
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// Feature bit for used/avail event index suppression.
pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;

/// Device status bits (virtio 1.x §2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: queues may be used.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 128;
}

/// Interrupt status bit: a used buffer was added.
pub const INTERRUPT_USED_RING: u32 = 1;
/// Interrupt status bit: the configuration (or device status) changed.
pub const INTERRUPT_CONFIG: u32 = 2;

/// How a device tells the driver about used buffers and its own failure: the interrupt status
/// register, the irqfd wired to the device's GSI, and the needs-reset flag.
pub struct DeviceSignals {
    interrupt_status: AtomicU32,
    needs_reset: AtomicBool,
    irq: EventFd,
}

impl DeviceSignals {
    /// Signals through `irq` (an irqfd registered with KVM).
    pub fn new(irq: EventFd) -> Self {
        DeviceSignals {
            interrupt_status: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            irq,
        }
    }

    /// Raises the interrupt with `reason` (INTERRUPT_USED_RING or INTERRUPT_CONFIG).
    pub fn notify(&self, reason: u32) {
        self.interrupt_status.fetch_or(reason, Ordering::SeqCst);
        // The counter cannot overflow in practice; a failed write only loses a coalescable edge.
        let _ = self.irq.write(1);
    }

    /// Marks the device broken (DEVICE_NEEDS_RESET) and tells the driver.
    pub fn mark_broken(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
        self.notify(INTERRUPT_CONFIG);
    }

    /// Runs one pass over the device's queues unless the device is broken: interrupts when
    /// the pass says the driver wants it (`Ok(true)`), marks the device broken when the
    /// driver misused a queue.
    pub fn serve(&self, pass: impl FnOnce() -> Result<bool, queue::QueueError>) {
        if self.is_broken() {
            return;
        }
        match pass() {
            Ok(true) => self.notify(INTERRUPT_USED_RING),
            Ok(false) => {}
            Err(_) => self.mark_broken(),
        }
    }

    /// Whether the device needs a reset.
    pub fn is_broken(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// The interrupt status register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status.load(Ordering::SeqCst)
    }

    /// Clears acknowledged interrupt bits.
    pub fn acknowledge(&self, bits: u32) {
        self.interrupt_status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Loads saved interrupt bits and broken flag.
    pub fn restore(&self, interrupt_status: u32, broken: bool) {
        self.interrupt_status
            .store(interrupt_status, Ordering::SeqCst);
        self.needs_reset.store(broken, Ordering::SeqCst);
    }

    /// Forgets everything (device reset).
    pub fn reset(&self) {
        self.interrupt_status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
    }
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    /// Guest memory.
    pub memory: GuestMemoryMmap,
    /// The configured queues.
    pub queues: Vec<Queue>,
    /// One notification eventfd per queue (ioeventfds on QueueNotify).
    pub queue_events: Vec<EventFd>,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// Interrupts and failure reporting.
    pub signals: std::sync::Arc<DeviceSignals>,
}

impl Activation {
    /// The device's `N` queues, in order.
    pub fn take_queues<const N: usize>(&mut self) -> Result<[Queue; N], ActivateError> {
        std::mem::take(&mut self.queues)
            .try_into()
            .map_err(|queues: Vec<Queue>| ActivateError::InvalidQueue(queues.len().min(N)))
    }
}

/// Errors activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The worker thread could not be started.
    #[error("cannot start the device worker: {0}")]
    Worker(#[from] std::io::Error),
    /// The driver configured a queue the device cannot use.
    #[error("queue {0} is not valid (addresses outside guest memory or bad size)")]
    InvalidQueue(usize),
    /// The device let go of its host resources: the VM is ending.
    #[error("the device was released (the VM is ending)")]
    Released,
}

/// A virtio device behind the MMIO transport.
pub trait VirtioDevice: Send {
    /// virtio device type (2 = block, 1 = net, 19 = vsock...).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered.
    fn features(&self) -> u64;
    /// Reads the device configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space (ignored by default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts serving the queues.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Stops serving the queues (driver reset); the device can be activated again.
    fn reset(&mut self);
    /// Lets go of the host resources behind the device (the VM is ending, its queues
    /// stopped): what the next VMM of the VM needs must be free before this one exits.
    fn release(&mut self) {}
}

/// Copies `config[offset..]` into `data`, leaving bytes past the end untouched (reads as zero
/// when `data` started zeroed).
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let end = config.len().min(start + data.len());
    data[..end - start].copy_from_slice(&config[start..end]);
}
