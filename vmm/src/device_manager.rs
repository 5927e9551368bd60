//! The devices of a machine: the legacy devices on the port bus, the virtio devices opened
//! from the configuration, and their wiring to KVM (irqfds, ioeventfds) and the MMIO bus.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::devices::virtio::block::disk::open_medium;
use kvm_ioctls::IoEventAddress;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::acpi::{self, MmioDeviceInfo};
use crate::arch::layout;
use crate::config::VmConfig;
use crate::devices::bus::BusError;
use crate::devices::bus::{Bus, BusDevice};
use crate::devices::framebuffer::FramebufferInfo;
use crate::devices::irq::{InterruptLine, KvmIrqLine};
use crate::devices::legacy::boot_marker::{BootMarker, BOOT_MARKER_PORT};
use crate::devices::legacy::i8042::{self, I8042};
use crate::devices::legacy::pit::{Pit, PortB, PIT_IRQ, PIT_PORT, PIT_PORT_COUNT, PORT_B};
use crate::devices::legacy::pm::{PowerManagement, PM1A_EVT_PORT, PM_PORT_COUNT};
use crate::devices::legacy::rtc::{Cmos, RTC_PORT, RTC_PORT_COUNT};
use crate::devices::legacy::serial::{
    ConsoleSinks, SerialPort, COM1_IRQ, COM1_PORT, COM1_PORT_COUNT,
};
use crate::devices::legacy::serial_log::RotatingLog;
use crate::devices::virtio::block::{Block, DiskSlot};
use crate::devices::virtio::console::Console;
use crate::devices::virtio::mmio::TransportError;
use crate::devices::virtio::mmio::{MmioTransport, MMIO_WINDOW_SIZE, QUEUE_NOTIFY_OFFSET};
use crate::devices::virtio::net::tap::Tap;
use crate::devices::virtio::net::{Net, NicLink};
use crate::devices::virtio::{DeviceSignals, VirtioDevice};
use crate::io_stall::IoStalls;
use crate::persist::VmSnapshot;
use crate::run_state::RunState;
use crate::vstate::vm::Vm;

/// Errors setting up the machine's devices (on boot and on restore).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Saved device state does not fit this machine.
    #[error("saved device state does not fit: {0}")]
    DeviceState(String),
    /// Two devices claimed the same ports.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A disk image could not be opened.
    #[error("cannot open disk {path}: {source}")]
    Disk {
        /// The image.
        path: PathBuf,
        /// Why.
        source: vireo_disk::open::OpenError,
    },
    /// The tools channel could not be created.
    #[error(transparent)]
    Console(#[from] crate::devices::virtio::console::ConsoleError),
    /// A TAP could not be opened.
    #[error(transparent)]
    Tap(#[from] crate::devices::virtio::net::tap::TapError),
    /// A virtio device could not be wired to KVM.
    #[error("cannot wire a virtio device to KVM ({what}): {source}")]
    VirtioWiring {
        /// The step.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// A virtio transport could not be created.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The serial log could not be opened.
    #[error("cannot open serial log {path}: {source}")]
    SerialLog {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A virtio transport shared by the MMIO bus and the save path.
pub(crate) type SharedTransport = Arc<Mutex<MmioTransport>>;

/// Everything a running machine needs from its devices.
pub(crate) struct MachineDevices {
    pub legacy: LegacyDevices,
    pub mmio: Bus,
    pub transports: Vec<SharedTransport>,
    /// Image slots of the disks; disk `i` is behind `transports[i]`.
    pub disk_slots: Vec<DiskSlot>,
    /// The NICs' links, in `--net` order (behind the last transports).
    pub nic_links: Vec<NicLink>,
    /// The disks' held requests.
    pub stalls: Arc<IoStalls>,
    pub framebuffer: FramebufferInfo,
    /// The queues' ioeventfds, registered once the vCPUs run.
    pub io_events: Vec<PendingIoEvent>,
}

/// The legacy devices and the port bus they sit on.
pub(crate) struct LegacyDevices {
    pub bus: Bus,
    pub serial: Arc<Mutex<SerialPort>>,
    pub pm: Arc<Mutex<PowerManagement>>,
    pub cmos: Arc<Mutex<Cmos>>,
    pub pit: Arc<Mutex<Pit>>,
}

/// Creates the legacy devices (restoring their state from `saved`) and puts them on a port bus.
pub(crate) fn attach_legacy_devices(
    vm: &Vm,
    config: &VmConfig,
    run_state: &Arc<RunState>,
    saved: Option<&VmSnapshot>,
) -> Result<LegacyDevices, DeviceError> {
    let irq =
        |gsi: u32| -> Arc<dyn InterruptLine> { Arc::new(KvmIrqLine::new(vm.fd.clone(), gsi)) };
    let sinks = console_sinks(config)?;
    let serial = match saved {
        Some(snapshot) => SerialPort::from_state(irq(COM1_IRQ), sinks, &snapshot.serial)
            .ok_or_else(|| {
                DeviceError::DeviceState("serial receive buffer larger than its FIFO".into())
            })?,
        None => SerialPort::new(irq(COM1_IRQ), sinks),
    };
    let serial = Arc::new(Mutex::new(serial));
    let mut pm = PowerManagement::new(irq(acpi::SCI_IRQ), run_state.clone());
    let mut cmos = Cmos::default();
    if let Some(snapshot) = saved {
        pm.restore(&snapshot.pm);
        cmos.restore(&snapshot.cmos);
    }
    let mut pit = Pit::new(irq(PIT_IRQ), std::time::Instant::now);
    if let Some(state) = saved.and_then(VmSnapshot::pit_state) {
        pit.restore(&state)
            .map_err(|e| DeviceError::DeviceState(e.to_string()))?;
    }
    let pm = Arc::new(Mutex::new(pm));
    let cmos = Arc::new(Mutex::new(cmos));
    let pit = Arc::new(Mutex::new(pit));
    let marker = Arc::new(Mutex::new(BootMarker::new(run_state.clone())));
    let mut bus = Bus::default();
    let mut add = |base: u16, count: u16, device: Arc<Mutex<dyn BusDevice>>| {
        bus.insert(base.into(), count.into(), device)
    };
    add(COM1_PORT, COM1_PORT_COUNT, serial.clone())?;
    add(PM1A_EVT_PORT, PM_PORT_COUNT, pm.clone())?;
    add(
        i8042::DATA_PORT,
        1,
        Arc::new(Mutex::new(I8042::data_port())),
    )?;
    add(
        i8042::COMMAND_PORT,
        1,
        Arc::new(Mutex::new(I8042::command_port(run_state.clone()))),
    )?;
    add(PIT_PORT, PIT_PORT_COUNT, pit.clone())?;
    add(PORT_B, 1, Arc::new(Mutex::new(PortB(pit.clone()))))?;
    add(RTC_PORT, RTC_PORT_COUNT, cmos.clone())?;
    add(BOOT_MARKER_PORT, 1, marker)?;
    Ok(LegacyDevices {
        bus,
        serial,
        pm,
        cmos,
        pit,
    })
}

fn console_sinks(config: &VmConfig) -> Result<ConsoleSinks, DeviceError> {
    let mut sinks: Vec<Box<dyn std::io::Write + Send>> = Vec::new();
    if config.serial_stdio {
        sinks.push(Box::new(std::io::stdout()));
    }
    if let Some(path) = &config.serial_log {
        let log = RotatingLog::open(path, config.serial_log_rotation).map_err(|source| {
            DeviceError::SerialLog {
                path: path.clone(),
                source,
            }
        })?;
        sinks.push(Box::new(log));
    }
    Ok(ConsoleSinks(sinks))
}

/// The virtio devices of a configuration, and the image slots of its disks.
pub(crate) struct VirtioDevices {
    pub devices: Vec<Box<dyn VirtioDevice>>,
    pub disk_slots: Vec<DiskSlot>,
    pub nic_links: Vec<NicLink>,
    /// Where the disks report requests held for lack of space.
    pub stalls: Arc<IoStalls>,
}

/// Opens every disk, the tools channel and every TAP of `config` as virtio devices, in that
/// order.
pub(crate) fn open_virtio_devices(config: &VmConfig) -> Result<VirtioDevices, DeviceError> {
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    let mut disk_slots = Vec::new();
    let mut nic_links = Vec::new();
    let stalls = Arc::new(IoStalls::default());
    for (i, disk) in config.disks.iter().enumerate() {
        let image = open_medium(disk).map_err(|source| DeviceError::Disk {
            path: disk.path.clone(),
            source,
        })?;
        let serial = disk
            .serial
            .clone()
            .unwrap_or_else(|| format!("vireo-disk-{i}"));
        let block = Block::new(image, disk.read_only, &serial, (i, stalls.clone()));
        disk_slots.push(block.slot());
        devices.push(Box::new(block));
    }
    if let Some(socket) = &config.tools_socket {
        devices.push(Box::new(Console::listen(socket, "virtio-console0".into())?));
    }
    for (i, net) in config.nets.iter().enumerate() {
        let tap = Tap::open(&net.tap)?;
        let link = NicLink::new(!net.link_down);
        nic_links.push(link.clone());
        devices.push(Box::new(Net::new(
            tap,
            net.mac_address(),
            link,
            format!("virtio-net{i}"),
        )));
    }
    Ok(VirtioDevices {
        devices,
        disk_slots,
        nic_links,
        stalls,
    })
}

/// Register windows and GSIs of `count` virtio-mmio devices.
pub(crate) fn virtio_layout(count: usize) -> Vec<MmioDeviceInfo> {
    (0..count)
        .map(|i| MmioDeviceInfo {
            addr: layout::VIRTIO_MMIO_START + i as u64 * MMIO_WINDOW_SIZE,
            len: MMIO_WINDOW_SIZE,
            irq: layout::VIRTIO_GSIS[i],
        })
        .collect()
}

/// Puts each device behind a transport on the MMIO bus (restoring transports from `saved`).
pub(crate) fn attach_virtio_devices(
    vm: &Vm,
    memory: &GuestMemoryMmap,
    devices: Vec<Box<dyn VirtioDevice>>,
    slots: &[MmioDeviceInfo],
    saved: Option<&VmSnapshot>,
) -> Result<(Bus, Vec<SharedTransport>, Vec<PendingIoEvent>), DeviceError> {
    if let Some(snapshot) = saved {
        if snapshot.virtio.len() != devices.len() {
            return Err(DeviceError::DeviceState(format!(
                "the state has {} virtio devices, the configuration {}",
                snapshot.virtio.len(),
                devices.len()
            )));
        }
    }
    let mut bus = Bus::default();
    let mut transports = Vec::new();
    let mut io_events = Vec::new();
    for (i, (device, slot)) in devices.into_iter().zip(slots).enumerate() {
        let (mut transport, pending) = virtio_transport(vm, memory, device, slot)?;
        io_events.extend(pending);
        if let Some(state) = saved.map(|s| &s.virtio[i]) {
            transport
                .restore(state)
                .map_err(|e| DeviceError::DeviceState(e.to_string()))?;
        }
        let transport = Arc::new(Mutex::new(transport));
        bus.insert(slot.addr, slot.len, transport.clone())?;
        transports.push(transport);
    }
    Ok((bus, transports, io_events))
}

/// A queue's ioeventfd, handed to KVM once the guest runs ([`register_io_events`]).
pub(crate) struct PendingIoEvent {
    event: EventFd,
    notify_address: u64,
    queue: u32,
}

/// Registers `pending` with KVM, on a thread of its own so that the guest need not wait: each
/// registration waits for a KVM grace period (milliseconds on a loaded host). Until its
/// ioeventfd is in place a queue's notify reaches the transport as an MMIO exit, which signals
/// the same eventfd, so the device sees no difference.
pub(crate) fn register_io_events(vm: Arc<kvm_ioctls::VmFd>, pending: Vec<PendingIoEvent>) {
    let spawned = std::thread::Builder::new()
        .name("ioeventfds".into())
        .spawn(move || {
            for io_event in pending {
                let address = IoEventAddress::Mmio(io_event.notify_address);
                if let Err(e) = vm.register_ioevent(&io_event.event, &address, io_event.queue) {
                    exits_instead(&e.to_string());
                }
            }
        });
    if let Err(e) = spawned {
        exits_instead(&e.to_string());
    }
}

/// Logs why ioeventfds are missing: harmless, notifies keep coming through MMIO exits.
fn exits_instead(why: &str) {
    // Not eprintln!, which panics when the log's file system is full.
    let line = format!("vireo-vmm: no ioeventfd ({why}); queue notifies exit to the VMM");
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Wires `device` to KVM: an irqfd on its GSI now, and an ioeventfd per queue on QueueNotify
/// returned for [`register_io_events`].
pub(crate) fn virtio_transport(
    vm: &Vm,
    memory: &GuestMemoryMmap,
    device: Box<dyn VirtioDevice>,
    slot: &MmioDeviceInfo,
) -> Result<(MmioTransport, Vec<PendingIoEvent>), DeviceError> {
    let kvm = |what: &'static str| move |source| DeviceError::VirtioWiring { what, source };
    let eventfd = || {
        EventFd::new(EFD_NONBLOCK).map_err(|e| DeviceError::VirtioWiring {
            what: "eventfd",
            source: e.into(),
        })
    };
    let irq = eventfd()?;
    vm.fd
        .register_irqfd(&irq, slot.irq)
        .map_err(kvm("KVM_IRQFD"))?;
    let mut queue_events = Vec::new();
    let mut pending = Vec::new();
    for queue in 0..device.queue_max_sizes().len() as u32 {
        let event = eventfd()?;
        pending.push(PendingIoEvent {
            event: event.try_clone().map_err(|e| DeviceError::VirtioWiring {
                what: "eventfd",
                source: e.into(),
            })?,
            notify_address: slot.addr + QUEUE_NOTIFY_OFFSET,
            queue,
        });
        queue_events.push(event);
    }
    let signals = Arc::new(DeviceSignals::new(irq));
    let transport = MmioTransport::new(device, memory.clone(), signals, queue_events)?;
    Ok((transport, pending))
}
