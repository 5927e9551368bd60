//! The virtio-mmio transport (virtio 1.x "modern" register layout, version 2): feature
//! negotiation, queue configuration, status, interrupts, and the device's configuration space
//! at offset 0x100. Queue notifications normally arrive as ioeventfds and never exit here.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{
    status, Activation, DeviceSignals, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};
use crate::devices::bus::BusDevice;

/// Size of one device's register window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Offset of the QueueNotify register (where ioeventfds are registered).
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x4f45_5256; // "VREO"
const CONFIG_SPACE_OFFSET: u64 = 0x100;

mod reg {
    pub const MAGIC: u64 = 0x00;
    pub const VERSION: u64 = 0x04;
    pub const DEVICE_ID: u64 = 0x08;
    pub const VENDOR_ID: u64 = 0x0c;
    pub const DEVICE_FEATURES: u64 = 0x10;
    pub const DEVICE_FEATURES_SEL: u64 = 0x14;
    pub const DRIVER_FEATURES: u64 = 0x20;
    pub const DRIVER_FEATURES_SEL: u64 = 0x24;
    pub const QUEUE_SEL: u64 = 0x30;
    pub const QUEUE_NUM_MAX: u64 = 0x34;
    pub const QUEUE_NUM: u64 = 0x38;
    pub const QUEUE_READY: u64 = 0x44;
    pub const QUEUE_NOTIFY: u64 = 0x50;
    pub const INTERRUPT_STATUS: u64 = 0x60;
    pub const INTERRUPT_ACK: u64 = 0x64;
    pub const STATUS: u64 = 0x70;
    pub const QUEUE_DESC_LOW: u64 = 0x80;
    pub const QUEUE_DESC_HIGH: u64 = 0x84;
    pub const QUEUE_DRIVER_LOW: u64 = 0x90;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x94;
    pub const QUEUE_DEVICE_LOW: u64 = 0xa0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0xa4;
    pub const CONFIG_GENERATION: u64 = 0xfc;
}

/// Saved configuration of one queue. Positions are not saved: every device completes each
/// chain it pops before its worker goes idle, so after a quiesce both the next avail and the
/// next used index equal the used ring's index in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// Negotiated size.
    pub size: u16,
    /// Whether the driver enabled it.
    pub ready: bool,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Avail ring address.
    pub avail_ring: u64,
    /// Used ring address.
    pub used_ring: u64,
}

/// Saved transport registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    /// virtio device type, checked on restore.
    pub device_type: u32,
    /// Device status.
    pub status: u32,
    /// Features the driver accepted.
    pub driver_features: u64,
    /// Pending interrupt bits.
    pub interrupt_status: u32,
    /// Whether the device had been marked broken.
    pub broken: bool,
    /// Each queue's configuration.
    pub queues: Vec<QueueConfig>,
}

/// Errors restoring a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportRestoreError {
    /// The saved state is for another kind of device or queue count.
    #[error("saved virtio state is for device type {saved} with {saved_queues} queues, not {actual} with {actual_queues}")]
    Mismatch {
        /// Saved device type.
        saved: u32,
        /// Saved queue count.
        saved_queues: usize,
        /// This device's type.
        actual: u32,
        /// This device's queue count.
        actual_queues: usize,
    },
}

/// One virtio device behind its MMIO register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    memory: GuestMemoryMmap,
    signals: Arc<DeviceSignals>,
    queue_events: Vec<EventFd>,
    queues: Vec<Queue>,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    queue_select: u32,
    status: u32,
    active: bool,
    /// Bumped on every change of the device's configuration space (ConfigGeneration).
    config_generation: u32,
}

/// Errors creating a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A queue size the device asked for is not a valid split-queue size.
    #[error("invalid queue size {0}")]
    QueueSize(u16),
    /// An eventfd could not be created.
    #[error("cannot create queue eventfd: {0}")]
    EventFd(#[from] std::io::Error),
}

impl MmioTransport {
    /// Wraps `device`; `queue_events[i]` is signalled when the driver notifies queue `i`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        memory: GuestMemoryMmap,
        signals: Arc<DeviceSignals>,
        queue_events: Vec<EventFd>,
    ) -> Result<Self, TransportError> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&size| Queue::new(size).map_err(|_| TransportError::QueueSize(size)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            memory,
            signals,
            queue_events,
            queues,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            queue_select: 0,
            status: 0,
            active: false,
            config_generation: 0,
        })
    }

    /// Tells the driver that the device's configuration space changed (a disk grew, a link
    /// went down): ConfigGeneration moves and, once the driver runs, a configuration-change
    /// interrupt is raised.
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & status::DRIVER_OK != 0 {
            self.signals.notify(super::INTERRUPT_CONFIG);
        }
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        if self.status & status::DRIVER_OK != 0 {
            return None; // queue layout is frozen once the driver is running
        }
        self.queues.get_mut(self.queue_select as usize)
    }

    fn read_register(&self, offset: u64) -> u32 {
        match offset {
            reg::MAGIC => MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_select {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_select as usize)
                .map_or(0, |q| q.max_size().into()),
            reg::QUEUE_READY => self
                .queues
                .get(self.queue_select as usize)
                .map_or(0, |q| q.ready().into()),
            reg::INTERRUPT_STATUS => self.signals.interrupt_status(),
            reg::STATUS => {
                self.status
                    | if self.signals.is_broken() {
                        status::DEVICE_NEEDS_RESET
                    } else {
                        0
                    }
            }
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_select = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_select = value,
            reg::DRIVER_FEATURES if self.status & status::FEATURES_OK == 0 => match self
                .driver_features_select
            {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value)
                }
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                }
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_select = value,
            reg::QUEUE_NUM => self.with_queue(|q| q.set_size(value as u16)),
            reg::QUEUE_READY => self.with_queue(|q| q.set_ready(value == 1)),
            reg::QUEUE_DESC_LOW => self.with_queue(|q| q.set_desc_table_address(Some(value), None)),
            reg::QUEUE_DESC_HIGH => {
                self.with_queue(|q| q.set_desc_table_address(None, Some(value)))
            }
            reg::QUEUE_DRIVER_LOW => {
                self.with_queue(|q| q.set_avail_ring_address(Some(value), None))
            }
            reg::QUEUE_DRIVER_HIGH => {
                self.with_queue(|q| q.set_avail_ring_address(None, Some(value)))
            }
            reg::QUEUE_DEVICE_LOW => {
                self.with_queue(|q| q.set_used_ring_address(Some(value), None))
            }
            reg::QUEUE_DEVICE_HIGH => {
                self.with_queue(|q| q.set_used_ring_address(None, Some(value)))
            }
            reg::QUEUE_NOTIFY => self.notify_queue(value),
            reg::INTERRUPT_ACK => self.signals.acknowledge(value),
            reg::STATUS => self.write_status(value),
            _ => {}
        }
    }

    fn with_queue(&mut self, set: impl FnOnce(&mut Queue)) {
        if let Some(queue) = self.selected_queue() {
            set(queue);
        }
    }

    /// A notification that was not caught by an ioeventfd: either a queue index the device does
    /// not have or one that is not running — the driver broke the protocol.
    fn notify_queue(&mut self, index: u32) {
        match self.queue_events.get(index as usize) {
            Some(event) if self.active => {
                let _ = event.write(1);
            }
            _ => self.signals.mark_broken(),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let newly_set = value & !self.status;
        let mut value = value;
        if newly_set & status::FEATURES_OK != 0 && !self.features_acceptable() {
            value &= !status::FEATURES_OK;
        }
        self.status = value;
        if newly_set & status::DRIVER_OK != 0
            && self.status & status::FEATURES_OK != 0
            && !self.active
        {
            self.activate();
        }
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.device.features();
        self.driver_features & !offered == 0
            && self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        for queue in &mut self.queues {
            queue.set_event_idx(event_idx);
        }
        if self.queues.iter().any(|q| !q.is_valid(&self.memory)) {
            self.signals.mark_broken();
            return;
        }
        let queue_events: Result<Vec<EventFd>, _> =
            self.queue_events.iter().map(EventFd::try_clone).collect();
        let queues: Result<Vec<Queue>, _> = self
            .queues
            .iter()
            .map(|q| Queue::try_from(q.state()))
            .collect();
        let (Ok(queue_events), Ok(queues)) = (queue_events, queues) else {
            self.signals.mark_broken();
            return;
        };
        let activation = Activation {
            memory: self.memory.clone(),
            queues,
            queue_events,
            acked_features: self.driver_features,
            signals: self.signals.clone(),
        };
        match self.device.activate(activation) {
            Ok(()) => self.active = true,
            Err(_) => self.signals.mark_broken(),
        }
    }

    /// Stops the device's worker so that its queues are idle (before a save).
    pub fn quiesce(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
    }

    /// Stops the device for good and lets go of its host resources (the VM is ending).
    pub fn release(&mut self) {
        self.quiesce();
        self.device.release();
    }

    /// Restarts an active device where its queues stand in guest memory: the requests it took
    /// and did not answer are taken again.
    pub fn restart(&mut self) {
        if self.active {
            self.quiesce();
            self.reactivate();
        }
    }

    /// Restarts a quiesced device where its queues stand in guest memory.
    pub fn reactivate(&mut self) {
        if self.status & status::DRIVER_OK != 0 && !self.active && !self.signals.is_broken() {
            for queue in &mut self.queues {
                if queue.ready() {
                    let used = queue
                        .used_idx(&self.memory, std::sync::atomic::Ordering::Acquire)
                        .map(|w| w.0)
                        .unwrap_or(0);
                    queue.set_next_avail(used);
                    queue.set_next_used(used);
                }
            }
            self.activate();
        }
    }

    /// The registers to save (call `quiesce` first).
    pub fn state(&self) -> TransportState {
        TransportState {
            device_type: self.device.device_type(),
            status: self.status,
            driver_features: self.driver_features,
            interrupt_status: self.signals.interrupt_status(),
            broken: self.signals.is_broken(),
            queues: self
                .queues
                .iter()
                .map(|q| QueueConfig {
                    size: q.size(),
                    ready: q.ready(),
                    desc_table: q.desc_table(),
                    avail_ring: q.avail_ring(),
                    used_ring: q.used_ring(),
                })
                .collect(),
        }
    }

    /// Loads saved registers into a fresh transport and restarts the device if it was running.
    pub fn restore(&mut self, state: &TransportState) -> Result<(), TransportRestoreError> {
        if state.device_type != self.device.device_type() || state.queues.len() != self.queues.len()
        {
            return Err(TransportRestoreError::Mismatch {
                saved: state.device_type,
                saved_queues: state.queues.len(),
                actual: self.device.device_type(),
                actual_queues: self.queues.len(),
            });
        }
        for (queue, saved) in self.queues.iter_mut().zip(&state.queues) {
            queue.set_size(saved.size);
            queue.set_desc_table_address(
                Some(saved.desc_table as u32),
                Some((saved.desc_table >> 32) as u32),
            );
            queue.set_avail_ring_address(
                Some(saved.avail_ring as u32),
                Some((saved.avail_ring >> 32) as u32),
            );
            queue.set_used_ring_address(
                Some(saved.used_ring as u32),
                Some((saved.used_ring >> 32) as u32),
            );
            queue.set_ready(saved.ready);
        }
        self.status = state.status;
        self.driver_features = state.driver_features;
        self.signals.restore(state.interrupt_status, state.broken);
        self.reactivate();
        Ok(())
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
        for queue in &mut self.queues {
            queue.reset();
        }
        for event in &self.queue_events {
            let _ = event.read();
        }
        self.signals.reset();
        self.status = 0;
        self.driver_features = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.queue_select = 0;
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            data.fill(0);
            self.device.read_config(offset - CONFIG_SPACE_OFFSET, data);
        } else if data.len() == 4 {
            data.copy_from_slice(&self.read_register(offset).to_le_bytes());
        } else {
            // Registers are 32-bit; other widths read as zero.
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.device.write_config(offset - CONFIG_SPACE_OFFSET, data);
        } else if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            self.write_register(offset, u32::from_le_bytes(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::queue::testing::memory;
    use crate::devices::virtio::ActivateError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Probe {
        activations: Arc<AtomicUsize>,
    }

    impl VirtioDevice for Probe {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[8]
        }
        fn features(&self) -> u64 {
            1 << VIRTIO_F_VERSION_1
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[1, 2, 3, 4], offset, data);
        }
        fn activate(&mut self, _: Activation) -> Result<(), ActivateError> {
            self.activations.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn reset(&mut self) {}
    }

    fn transport() -> (MmioTransport, Arc<AtomicUsize>, Arc<DeviceSignals>) {
        let activations = Arc::new(AtomicUsize::new(0));
        let signals = Arc::new(DeviceSignals::new(
            EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap(),
        ));
        let device = Box::new(Probe {
            activations: activations.clone(),
        });
        let t = MmioTransport::new(
            device,
            memory(),
            signals.clone(),
            vec![EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap()],
        )
        .unwrap();
        (t, activations, signals)
    }

    fn read(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        t.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn write(t: &mut MmioTransport, offset: u64, value: u32) {
        t.write(offset, &value.to_le_bytes());
    }

    fn bring_up(t: &mut MmioTransport, driver_features_high: u32) {
        write(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        write(t, reg::DRIVER_FEATURES_SEL, 1);
        write(t, reg::DRIVER_FEATURES, driver_features_high);
        write(
            t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        write(t, reg::QUEUE_SEL, 0);
        write(t, reg::QUEUE_NUM, 8);
        write(t, reg::QUEUE_DESC_LOW, 0x1000);
        write(t, reg::QUEUE_DRIVER_LOW, 0x2000);
        write(t, reg::QUEUE_DEVICE_LOW, 0x3000);
        write(t, reg::QUEUE_READY, 1);
    }

    #[test]
    fn identification_registers_and_config_space() {
        let (mut t, _, _) = transport();
        assert_eq!(read(&mut t, reg::MAGIC), 0x7472_6976);
        assert_eq!(read(&mut t, reg::VERSION), 2);
        assert_eq!(read(&mut t, reg::DEVICE_ID), 42);
        write(&mut t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(read(&mut t, reg::DEVICE_FEATURES), 1);
        assert_eq!(read(&mut t, reg::QUEUE_NUM_MAX), 8);
        assert_eq!(read(&mut t, CONFIG_SPACE_OFFSET), 0x0403_0201);
        let mut past_end = [0xffu8; 4];
        t.read(CONFIG_SPACE_OFFSET + 2, &mut past_end);
        assert_eq!(past_end, [3, 4, 0, 0]);
    }

    #[test]
    fn driver_ok_activates_once_negotiation_succeeds() {
        let (mut t, activations, signals) = transport();
        bring_up(&mut t, 1);
        assert_ne!(read(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
        write(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert_eq!(activations.load(Ordering::SeqCst), 1);
        assert!(!signals.is_broken());
        // A reset returns everything to the start.
        write(&mut t, reg::STATUS, 0);
        assert_eq!(read(&mut t, reg::STATUS), 0);
        assert_eq!(read(&mut t, reg::QUEUE_READY), 0);
    }

    #[test]
    fn features_the_device_did_not_offer_are_refused() {
        let (mut t, activations, _) = transport();
        bring_up(&mut t, 1 | 1 << 5);
        assert_eq!(
            read(&mut t, reg::STATUS) & status::FEATURES_OK,
            0,
            "FEATURES_OK not kept"
        );
        write(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
        );
        assert_eq!(activations.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn notifying_an_unconfigured_queue_marks_the_device_broken() {
        let (mut t, _, signals) = transport();
        write(&mut t, reg::QUEUE_NOTIFY, 5);
        assert!(signals.is_broken());
        assert_ne!(read(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
        assert_ne!(
            read(&mut t, reg::INTERRUPT_STATUS) & super::super::INTERRUPT_CONFIG,
            0
        );
        write(&mut t, reg::INTERRUPT_ACK, super::super::INTERRUPT_CONFIG);
        assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), 0);
        write(&mut t, reg::STATUS, 0);
        assert!(!signals.is_broken(), "a reset repairs the device");
    }

    #[test]
    fn a_config_change_moves_the_generation_and_interrupts_a_running_driver() {
        let (mut t, _, signals) = transport();
        t.config_changed();
        assert_eq!(read(&mut t, reg::CONFIG_GENERATION), 1);
        assert_eq!(signals.interrupt_status(), 0, "no driver yet: no interrupt");
        bring_up(&mut t, 1);
        write(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        t.config_changed();
        assert_eq!(read(&mut t, reg::CONFIG_GENERATION), 2);
        assert_eq!(
            read(&mut t, reg::INTERRUPT_STATUS),
            super::super::INTERRUPT_CONFIG
        );
    }

    #[test]
    fn queues_outside_memory_do_not_activate() {
        let (mut t, activations, signals) = transport();
        bring_up(&mut t, 1);
        write(&mut t, reg::QUEUE_DESC_HIGH, 0x10);
        write(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert_eq!(activations.load(Ordering::SeqCst), 0);
        assert!(signals.is_broken());
    }
}
