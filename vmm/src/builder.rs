//! The boot recipe, top to bottom: memory, VM, kernel and initrd, boot tables, devices, vCPUs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::IoEventAddress;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vireo_disk::block::open_disk;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::acpi::MmioDeviceInfo;
use crate::arch::regs::{self, EntryMode};
use crate::arch::zero_page::{self, InitrdRegion};
use crate::arch::{acpi, layout, memory_map, pvh};
use crate::config::{ConfigError, VmConfig};
use crate::devices::bus::{Bus, BusDevice, BusError};
use crate::devices::framebuffer::FramebufferInfo;
use crate::devices::irq::{InterruptLine, KvmIrqLine};
use crate::devices::legacy::boot_marker::{BootMarker, BOOT_MARKER_PORT};
use crate::devices::legacy::i8042::{self, I8042};
use crate::devices::legacy::pm::{PowerManagement, PM1A_EVT_PORT, PM_PORT_COUNT};
use crate::devices::legacy::rtc::{Cmos, RTC_PORT, RTC_PORT_COUNT};
use crate::devices::legacy::serial::{
    ConsoleSinks, SerialPort, COM1_IRQ, COM1_PORT, COM1_PORT_COUNT,
};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::console::Console;
use crate::devices::virtio::mmio::{MmioTransport, MMIO_WINDOW_SIZE, QUEUE_NOTIFY_OFFSET};
use crate::devices::virtio::net::tap::Tap;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::{DeviceSignals, VirtioDevice};
use crate::machine::Machine;
use crate::run_state::RunState;
use crate::vstate::memory::{create_guest_memory, MemoryError};
use crate::vstate::vcpu::{BootEntry, Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError};

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const BZIMAGE_HDRS_OFFSET: u64 = 0x202;
const BZIMAGE_HDRS_MAGIC: [u8; 4] = *b"HdrS";
const PAGE_SIZE: u64 = 4096;

/// Errors building a VM from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is out of range.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A file could not be opened or read.
    #[error("cannot read {what} {path}: {source}")]
    File {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The kernel is neither a PVH ELF nor a bzImage.
    #[error(
        "{0} is not a bootable kernel: expected an ELF with a PVH entry note or a Linux bzImage"
    )]
    NotAKernel(PathBuf),
    /// An ELF kernel without the PVH entry note.
    #[error("{0} is an ELF without a PVH entry (XEN_ELFNOTE_PHYS32_ENTRY); build the kernel with CONFIG_PVH")]
    NoPvhEntry(PathBuf),
    /// A bzImage older than boot protocol 2.12.
    #[error("{path}: boot protocol {version:#06x} is older than the 2.12 this VMM needs")]
    OldBootProtocol {
        /// The kernel.
        path: PathBuf,
        /// Its protocol version.
        version: u16,
    },
    /// The loader rejected the kernel.
    #[error("cannot load kernel {path}: {source}")]
    KernelLoad {
        /// The kernel.
        path: PathBuf,
        /// The loader error.
        source: linux_loader::loader::Error,
    },
    /// The initrd does not fit in guest memory.
    #[error("initrd of {size} bytes does not fit below {limit:#x} in guest memory")]
    InitrdTooLarge {
        /// Its size.
        size: u64,
        /// The highest address it may end at.
        limit: u64,
    },
    /// Guest memory could not be created.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Writing into guest memory failed.
    #[error("cannot write boot data into guest memory: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
    /// KVM setup failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// vCPU setup failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// Boot register structures failed.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    /// The CPUID KVM supports could not be read.
    #[error("cannot read the CPUID KVM supports: {0}")]
    SupportedCpuid(kvm_ioctls::Error),
    /// Two devices claimed the same ports.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A disk image could not be opened.
    #[error("cannot open disk {path}: {source}")]
    Disk {
        /// The image.
        path: PathBuf,
        /// Why.
        source: vireo_disk::block::OpenError,
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
    Transport(#[from] crate::devices::virtio::mmio::TransportError),
    /// The serial log could not be opened.
    #[error("cannot open serial log {path}: {source}")]
    SerialLog {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What kind of kernel image a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KernelFormat {
    Elf,
    BzImage,
}

fn open(what: &'static str, path: &Path) -> Result<File, BuildError> {
    File::open(path).map_err(|source| BuildError::File {
        what,
        path: path.to_owned(),
        source,
    })
}

fn detect_format(file: &mut File, path: &Path) -> Result<KernelFormat, BuildError> {
    let io = |source| BuildError::File {
        what: "kernel",
        path: path.to_owned(),
        source,
    };
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_ok() && magic == ELF_MAGIC {
        return Ok(KernelFormat::Elf);
    }
    file.seek(SeekFrom::Start(BZIMAGE_HDRS_OFFSET))
        .map_err(io)?;
    if file.read_exact(&mut magic).is_ok() && magic == BZIMAGE_HDRS_MAGIC {
        return Ok(KernelFormat::BzImage);
    }
    Err(BuildError::NotAKernel(path.to_owned()))
}

/// A kernel placed in guest memory.
struct LoadedKernel {
    entry: BootEntry,
    /// bzImage setup header, for the zero page.
    setup_header: Option<linux_loader::bootparam::setup_header>,
}

fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BuildError> {
    let mut file = open("kernel", path)?;
    let format = detect_format(&mut file, path)?;
    let load_error = |source| BuildError::KernelLoad {
        path: path.to_owned(),
        source,
    };
    let start = Some(GuestAddress(layout::HIGH_MEMORY_START));
    match format {
        KernelFormat::Elf => {
            let result = Elf::load(mem, None, &mut file, start).map_err(load_error)?;
            match result.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(entry) => Ok(LoadedKernel {
                    entry: BootEntry {
                        mode: EntryMode::Pvh,
                        address: entry.0,
                    },
                    setup_header: None,
                }),
                _ => Err(BuildError::NoPvhEntry(path.to_owned())),
            }
        }
        KernelFormat::BzImage => {
            let result = BzImage::load(mem, None, &mut file, start).map_err(load_error)?;
            let header = result
                .setup_header
                .ok_or_else(|| BuildError::NotAKernel(path.to_owned()))?;
            let version = header.version;
            if version < zero_page::MIN_BOOT_PROTOCOL {
                return Err(BuildError::OldBootProtocol {
                    path: path.to_owned(),
                    version,
                });
            }
            // The 64-bit entry point is 0x200 past the protected-mode kernel's load address.
            let address = result.kernel_load.0 + 0x200;
            Ok(LoadedKernel {
                entry: BootEntry {
                    mode: EntryMode::Linux64,
                    address,
                },
                setup_header: Some(header),
            })
        }
    }
}

/// Loads the initrd at the highest page-aligned address below `limit`.
fn load_initrd(mem: &GuestMemoryMmap, path: &Path, limit: u64) -> Result<InitrdRegion, BuildError> {
    let io = |source| BuildError::File {
        what: "initrd",
        path: path.to_owned(),
        source,
    };
    let mut file = open("initrd", path)?;
    let size = file.metadata().map_err(io)?.len();
    let too_large = BuildError::InitrdTooLarge { size, limit };
    let addr = limit.checked_sub(size).ok_or(too_large)? & !(PAGE_SIZE - 1);
    if addr < layout::HIGH_MEMORY_START {
        return Err(BuildError::InitrdTooLarge { size, limit });
    }
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)?;
    Ok(InitrdRegion { addr, size })
}

fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<usize, BuildError> {
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(layout::CMDLINE_START))?;
    Ok(bytes.len())
}

fn console_sinks(config: &VmConfig) -> Result<ConsoleSinks, BuildError> {
    let mut sinks: Vec<Box<dyn std::io::Write + Send>> = Vec::new();
    if config.serial_stdio {
        sinks.push(Box::new(std::io::stdout()));
    }
    if let Some(path) = &config.serial_log {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| BuildError::SerialLog {
                path: path.clone(),
                source,
            })?;
        sinks.push(Box::new(file));
    }
    Ok(ConsoleSinks(sinks))
}

/// Builds a ready-to-run VM from `config`.
pub fn build_vm(config: &VmConfig) -> Result<Machine, BuildError> {
    config.validate()?;
    // Check the files before committing guest memory.
    open("kernel", &config.kernel)?;
    if let Some(initrd) = &config.initrd {
        open("initrd", initrd)?;
    }
    let devices = open_virtio_devices(config)?;
    let virtio_slots = virtio_layout(devices.len());
    let framebuffer = FramebufferInfo::new(config.framebuffer.0, config.framebuffer.1);
    let cmdline = cmdline_with_devices(&config.cmdline, &virtio_slots, &framebuffer)?;

    let memory = create_guest_memory(
        config.memory_bytes(),
        &[(framebuffer.addr, framebuffer.size())],
    )?;
    let vm = Vm::new(&memory)?;
    let entry = write_boot_data(&memory, config, &cmdline, &virtio_slots, &framebuffer)?;

    let run_state = Arc::new(RunState::default());
    let legacy = attach_legacy_devices(&vm, config, &run_state)?;
    let mmio_bus = attach_virtio_devices(&vm, &memory, devices, &virtio_slots)?;

    let supported_cpuid = vm
        .kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(BuildError::SupportedCpuid)?;
    let vcpus = (0..config.vcpus)
        .map(|i| {
            Vcpu::new(
                &vm.fd,
                &supported_cpuid,
                i,
                config.vcpus,
                (i == 0).then_some(entry),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let devices = MachineDevices {
        legacy,
        mmio: mmio_bus,
        framebuffer,
    };
    Ok(Machine::new(
        memory,
        vm,
        vcpus,
        devices,
        run_state,
        config.clone(),
    ))
}

/// Loads the kernel, initrd and command line and writes the tables the kernel reads at entry.
fn write_boot_data(
    memory: &GuestMemoryMmap,
    config: &VmConfig,
    cmdline: &str,
    virtio_slots: &[MmioDeviceInfo],
    framebuffer: &FramebufferInfo,
) -> Result<BootEntry, BuildError> {
    let kernel = load_kernel(memory, &config.kernel)?;
    let cmdline_size = write_cmdline(memory, cmdline)?;
    let ram = layout::ram_regions(config.memory_bytes());
    let initrd = match &config.initrd {
        Some(path) => {
            let max = kernel
                .setup_header
                .map_or(u64::MAX, |h| u64::from(h.initrd_addr_max) + 1);
            Some(load_initrd(memory, path, ram[0].1.min(max))?)
        }
        None => None,
    };
    let map = memory_map(&ram);
    let tables = acpi::build_tables(config.vcpus, virtio_slots);
    for (addr, bytes) in &tables.blobs {
        memory.write_slice(bytes, GuestAddress(*addr))?;
    }
    regs::write_boot_gdt(memory)?;
    match kernel.setup_header {
        Some(header) => {
            regs::write_identity_page_tables(memory)?;
            zero_page::write(
                memory,
                zero_page::build(
                    header,
                    cmdline_size,
                    initrd,
                    &map,
                    tables.rsdp_addr,
                    framebuffer.screen_info(),
                ),
            )?;
        }
        None => pvh::write_start_info(memory, &map, tables.rsdp_addr, initrd)?,
    }
    Ok(kernel.entry)
}

/// Everything a running machine needs from its devices.
pub(crate) struct MachineDevices {
    pub legacy: LegacyDevices,
    pub mmio: Bus,
    pub framebuffer: FramebufferInfo,
}

/// The legacy devices and the port bus they sit on.
pub(crate) struct LegacyDevices {
    pub bus: Bus,
    pub serial: Arc<Mutex<SerialPort>>,
    pub pm: Arc<Mutex<PowerManagement>>,
}

fn attach_legacy_devices(
    vm: &Vm,
    config: &VmConfig,
    run_state: &Arc<RunState>,
) -> Result<LegacyDevices, BuildError> {
    let irq =
        |gsi: u32| -> Arc<dyn InterruptLine> { Arc::new(KvmIrqLine::new(vm.fd.clone(), gsi)) };
    let serial = Arc::new(Mutex::new(SerialPort::new(
        irq(COM1_IRQ),
        console_sinks(config)?,
    )));
    let pm = Arc::new(Mutex::new(PowerManagement::new(
        irq(acpi::SCI_IRQ),
        run_state.clone(),
    )));
    let i8042 = Arc::new(Mutex::new(I8042::new(run_state.clone())));
    let marker = Arc::new(Mutex::new(BootMarker::new(run_state.clone())));
    let mut bus = Bus::default();
    let mut add = |base: u16, count: u16, device: Arc<Mutex<dyn BusDevice>>| {
        bus.insert(base.into(), count.into(), device)
    };
    add(COM1_PORT, COM1_PORT_COUNT, serial.clone())?;
    add(PM1A_EVT_PORT, PM_PORT_COUNT, pm.clone())?;
    add(
        i8042::DATA_PORT,
        i8042::COMMAND_PORT - i8042::DATA_PORT + 1,
        i8042,
    )?;
    add(
        RTC_PORT,
        RTC_PORT_COUNT,
        Arc::new(Mutex::new(Cmos::default())),
    )?;
    add(BOOT_MARKER_PORT, 1, marker)?;
    Ok(LegacyDevices { bus, serial, pm })
}

/// Opens every disk, the tools channel and every TAP of `config` as virtio devices, in that
/// order.
fn open_virtio_devices(config: &VmConfig) -> Result<Vec<Box<dyn VirtioDevice>>, BuildError> {
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for (i, disk) in config.disks.iter().enumerate() {
        let image = open_disk(&disk.path, disk.read_only).map_err(|source| BuildError::Disk {
            path: disk.path.clone(),
            source,
        })?;
        let serial = disk
            .serial
            .clone()
            .unwrap_or_else(|| format!("vireo-disk-{i}"));
        devices.push(Box::new(Block::new(
            image,
            &serial,
            format!("virtio-blk{i}"),
        )));
    }
    if let Some(socket) = &config.tools_socket {
        devices.push(Box::new(Console::listen(socket, "virtio-console0".into())?));
    }
    for (i, net) in config.nets.iter().enumerate() {
        let tap = Tap::open(&net.tap)?;
        devices.push(Box::new(Net::new(
            tap,
            net.mac_address(),
            format!("virtio-net{i}"),
        )));
    }
    Ok(devices)
}

/// Register windows and GSIs of `count` virtio-mmio devices.
fn virtio_layout(count: usize) -> Vec<MmioDeviceInfo> {
    (0..count)
        .map(|i| MmioDeviceInfo {
            addr: layout::VIRTIO_MMIO_START + i as u64 * MMIO_WINDOW_SIZE,
            len: MMIO_WINDOW_SIZE,
            irq: layout::VIRTIO_GSIS[i],
        })
        .collect()
}

/// The command line with a `virtio_mmio.device=` entry per device (the DSDT lists them too)
/// and the framebuffer's `vireo.fb=` entry.
fn cmdline_with_devices(
    cmdline: &str,
    slots: &[MmioDeviceInfo],
    framebuffer: &FramebufferInfo,
) -> Result<String, BuildError> {
    let mut full = format!("{cmdline} {}", framebuffer.cmdline_entry());
    for slot in slots {
        full.push_str(&format!(
            " virtio_mmio.device=4K@{:#x}:{}",
            slot.addr, slot.irq
        ));
    }
    if full.len() >= layout::CMDLINE_MAX_SIZE {
        return Err(ConfigError::CmdlineTooLong(full.len()).into());
    }
    Ok(full.trim_start().to_owned())
}

fn attach_virtio_devices(
    vm: &Vm,
    memory: &GuestMemoryMmap,
    devices: Vec<Box<dyn VirtioDevice>>,
    slots: &[MmioDeviceInfo],
) -> Result<Bus, BuildError> {
    let mut bus = Bus::default();
    for (device, slot) in devices.into_iter().zip(slots) {
        let transport = virtio_transport(vm, memory, device, slot)?;
        bus.insert(slot.addr, slot.len, Arc::new(Mutex::new(transport)))?;
    }
    Ok(bus)
}

/// Wires `device` to KVM: an irqfd on its GSI and an ioeventfd per queue on QueueNotify.
fn virtio_transport(
    vm: &Vm,
    memory: &GuestMemoryMmap,
    device: Box<dyn VirtioDevice>,
    slot: &MmioDeviceInfo,
) -> Result<MmioTransport, BuildError> {
    let kvm = |what: &'static str| move |source| BuildError::VirtioWiring { what, source };
    let eventfd = || {
        EventFd::new(EFD_NONBLOCK).map_err(|e| BuildError::VirtioWiring {
            what: "eventfd",
            source: e.into(),
        })
    };
    let irq = eventfd()?;
    vm.fd
        .register_irqfd(&irq, slot.irq)
        .map_err(kvm("KVM_IRQFD"))?;
    let notify = IoEventAddress::Mmio(slot.addr + QUEUE_NOTIFY_OFFSET);
    let mut queue_events = Vec::new();
    for index in 0..device.queue_max_sizes().len() as u32 {
        let event = eventfd()?;
        vm.fd
            .register_ioevent(&event, &notify, index)
            .map_err(kvm("KVM_IOEVENTFD"))?;
        queue_events.push(event);
    }
    let signals = Arc::new(DeviceSignals::new(irq));
    Ok(MmioTransport::new(
        device,
        memory.clone(),
        signals,
        queue_events,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("vireo-builder-{}-{name}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        path
    }

    #[test]
    fn kernel_format_is_detected_by_magic() {
        let elf = temp_file("elf", b"\x7fELF\x02\x01\x01");
        assert_eq!(
            detect_format(&mut File::open(&elf).unwrap(), &elf).unwrap(),
            KernelFormat::Elf
        );
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let bz_path = temp_file("bz", &bz);
        assert_eq!(
            detect_format(&mut File::open(&bz_path).unwrap(), &bz_path).unwrap(),
            KernelFormat::BzImage
        );
        let text = temp_file("text", b"#!/bin/sh\necho not a kernel\n");
        let err = detect_format(&mut File::open(&text).unwrap(), &text).unwrap_err();
        assert!(
            err.to_string().contains("is not a bootable kernel"),
            "{err}"
        );
        for p in [elf, bz_path, text] {
            std::fs::remove_file(p).unwrap();
        }
    }
}
