//! The boot recipe, top to bottom: memory, VM, kernel and initrd, boot tables, devices, vCPUs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use linux_loader::bootparam::setup_header;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::acpi::MmioDeviceInfo;
use crate::arch::regs::{self, EntryMode};
use crate::arch::zero_page::{self, InitrdRegion};
use crate::arch::{acpi, cpuid, kvm_pvm, layout, memory_map, pvh};
use crate::config::{ConfigError, VmConfig};
use crate::device_manager::{
    attach_legacy_devices, attach_virtio_devices, open_virtio_devices, virtio_layout, DeviceError,
    MachineDevices, VirtioDevices,
};
use crate::devices::framebuffer::shared_file::{
    share_through_file, FirstPixels, FramebufferFileError,
};
use crate::devices::framebuffer::FramebufferInfo;
use crate::machine::Machine;
use crate::run_state::RunState;
use crate::vstate::memory::{create_guest_memory, MemoryError};
use crate::vstate::vcpu::{BootEntry, Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError, VmUnderway};

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
    /// A bzImage's payload could not be extracted for PVH boot on kvm-pvm.
    #[error("cannot extract the kernel from bzImage {path}: {source}")]
    Payload {
        /// The kernel.
        path: PathBuf,
        /// Why.
        source: kvm_pvm::PayloadError,
    },
    /// The loader rejected the kernel.
    #[error("cannot load kernel {path}: {source}")]
    KernelLoad {
        /// The kernel.
        path: PathBuf,
        /// The loader error.
        source: linux_loader::loader::Error,
    },
    /// A compressed initrd could not be decompressed for a Linux guest on kvm-pvm.
    #[error("cannot decompress initrd {path}: {source}")]
    Initrd {
        /// The initrd.
        path: PathBuf,
        /// Why.
        source: kvm_pvm::InitrdError,
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
    /// The framebuffer could not be backed by its file.
    #[error(transparent)]
    FramebufferFile(#[from] FramebufferFileError),
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
    /// The TSC frequency (for a Linux guest's options on kvm-pvm) could not be read.
    #[error("cannot read the guest TSC frequency (KVM_GET_TSC_KHZ): {0}")]
    TscKhz(std::io::Error),
    /// The MSR index list could not be read.
    #[error("cannot read KVM's MSR index list: {0}")]
    MsrList(kvm_ioctls::Error),
    /// A device could not be set up.
    #[error(transparent)]
    Devices(#[from] DeviceError),
}

/// What kind of kernel image a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KernelFormat {
    Elf,
    BzImage,
}

fn open(what: &'static str, path: &Path) -> Result<File, BuildError> {
    crate::handed::open(path, true).map_err(|source| BuildError::File {
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
    /// Whether it is Linux (a bzImage, booted either way), which takes kvm-pvm's options.
    linux: bool,
}

/// Loads an ELF kernel through its PVH entry.
fn load_pvh_elf<F>(
    mem: &GuestMemoryMmap,
    image: &mut F,
    path: &Path,
) -> Result<LoadedKernel, BuildError>
where
    F: std::io::Read + vm_memory::ReadVolatile + Seek,
{
    let start = Some(GuestAddress(layout::HIGH_MEMORY_START));
    let result = Elf::load(mem, None, image, start).map_err(|source| BuildError::KernelLoad {
        path: path.to_owned(),
        source,
    })?;
    match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => Ok(LoadedKernel {
            entry: BootEntry {
                mode: EntryMode::Pvh,
                address: entry.0,
            },
            setup_header: None,
            linux: false,
        }),
        _ => Err(BuildError::NoPvhEntry(path.to_owned())),
    }
}

/// On kvm-pvm, a bzImage's payload (vmlinux) decompressed here and entered where the bzImage's
/// own decompressor would have jumped: its 64-bit entry (the ELF entry, `startup_64`) with the
/// zero page built from the bzImage's setup header. The decompressor would run in interpreted
/// ring 0 for minutes; the zero page carries what a PVH start info cannot, among it the
/// framebuffer (`screen_info`) that efifb takes.
fn load_bzimage_payload(
    mem: &GuestMemoryMmap,
    file: &mut File,
    path: &Path,
) -> Result<LoadedKernel, BuildError> {
    let io = |source| BuildError::File {
        what: "kernel",
        path: path.to_owned(),
        source,
    };
    let mut image = Vec::new();
    file.rewind().map_err(io)?;
    file.read_to_end(&mut image).map_err(io)?;
    let header = kvm_pvm::bzimage_setup_header(&image).map_err(|source| BuildError::Payload {
        path: path.to_owned(),
        source,
    })?;
    check_boot_protocol(&header, path)?;
    let elf = kvm_pvm::bzimage_payload(&image).map_err(|source| BuildError::Payload {
        path: path.to_owned(),
        source,
    })?;
    let start = Some(GuestAddress(layout::HIGH_MEMORY_START));
    let loaded = Elf::load(mem, None, &mut std::io::Cursor::new(elf), start).map_err(|source| {
        BuildError::KernelLoad {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(LoadedKernel {
        entry: BootEntry {
            mode: EntryMode::Linux64,
            address: loaded.kernel_load.0,
        },
        setup_header: Some(header),
        linux: true,
    })
}

/// Refuses a bzImage older than the boot protocol this VMM drives.
fn check_boot_protocol(header: &setup_header, path: &Path) -> Result<(), BuildError> {
    let version = header.version;
    if version < zero_page::MIN_BOOT_PROTOCOL {
        return Err(BuildError::OldBootProtocol {
            path: path.to_owned(),
            version,
        });
    }
    Ok(())
}

fn load_kernel(mem: &GuestMemoryMmap, path: &Path, pvm: bool) -> Result<LoadedKernel, BuildError> {
    let mut file = open("kernel", path)?;
    let format = detect_format(&mut file, path)?;
    let load_error = |source| BuildError::KernelLoad {
        path: path.to_owned(),
        source,
    };
    let start = Some(GuestAddress(layout::HIGH_MEMORY_START));
    match format {
        KernelFormat::Elf => load_pvh_elf(mem, &mut file, path),
        KernelFormat::BzImage => {
            if pvm {
                return load_bzimage_payload(mem, &mut file, path);
            }
            let result = BzImage::load(mem, None, &mut file, start).map_err(load_error)?;
            let header = result
                .setup_header
                .ok_or_else(|| BuildError::NotAKernel(path.to_owned()))?;
            check_boot_protocol(&header, path)?;
            // The 64-bit entry point is 0x200 past the protected-mode kernel's load address.
            let address = result.kernel_load.0 + 0x200;
            Ok(LoadedKernel {
                entry: BootEntry {
                    mode: EntryMode::Linux64,
                    address,
                },
                setup_header: Some(header),
                linux: true,
            })
        }
    }
}

/// Loads the initrd at the highest page-aligned address below `limit`; for a Linux guest on
/// kvm-pvm, a gzip-compressed one is decompressed on the host first (`kvm_pvm::initrd_for_guest`).
fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    limit: u64,
    pvm_linux: bool,
) -> Result<InitrdRegion, BuildError> {
    let io = |source| BuildError::File {
        what: "initrd",
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    open("initrd", path)?.read_to_end(&mut bytes).map_err(io)?;
    if pvm_linux {
        bytes = kvm_pvm::initrd_for_guest(bytes).map_err(|source| BuildError::Initrd {
            path: path.to_owned(),
            source,
        })?;
    }
    let size = bytes.len() as u64;
    let too_large = BuildError::InitrdTooLarge { size, limit };
    let addr = limit.checked_sub(size).ok_or(too_large)? & !(PAGE_SIZE - 1);
    if addr < layout::HIGH_MEMORY_START {
        return Err(BuildError::InitrdTooLarge { size, limit });
    }
    mem.write_slice(&bytes, GuestAddress(addr))?;
    Ok(InitrdRegion { addr, size })
}

fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<usize, BuildError> {
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(layout::CMDLINE_START))?;
    Ok(bytes.len())
}

/// Builds a ready-to-run VM from `config`.
pub fn build_vm(config: &VmConfig) -> Result<Machine, BuildError> {
    config.validate()?;
    let vm = VmUnderway::start();
    // Check the files before committing guest memory.
    open("kernel", &config.kernel)?;
    if let Some(initrd) = &config.initrd {
        open("initrd", initrd)?;
    }
    let VirtioDevices {
        devices,
        disk_slots,
        nic_links,
        stalls,
    } = open_virtio_devices(config)?;
    let virtio_slots = virtio_layout(devices.len());
    let framebuffer = FramebufferInfo::new(config.framebuffer.0, config.framebuffer.1);
    let cmdline = cmdline_with_devices(&config.cmdline, &virtio_slots, &framebuffer)?;

    let memory = create_guest_memory(
        config.memory_bytes(),
        &[(framebuffer.addr, framebuffer.size())],
    )?;
    let memory = match &config.framebuffer_file {
        Some(path) => share_through_file(&memory, &framebuffer, path, FirstPixels::Blank)?,
        None => memory,
    };
    let (vm, memory_slots) = vm.finish(&memory)?;
    let entry = write_boot_data(&memory, &vm, config, &cmdline, &virtio_slots, &framebuffer)?;

    let run_state = Arc::new(RunState::default());
    let legacy = attach_legacy_devices(&vm, config, &run_state, None)?;
    let (mmio, transports, io_events) =
        attach_virtio_devices(&vm, &memory, devices, &virtio_slots, None)?;

    let supported_cpuid = vm
        .kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(BuildError::SupportedCpuid)?;
    let msr_indices = vm.msr_index_list().map_err(BuildError::MsrList)?;
    let vcpus = (0..config.vcpus)
        .map(|i| {
            let entry = (i == 0).then_some(entry);
            Vcpu::new(
                &vm.fd,
                &supported_cpuid,
                i,
                cpuid::Topology::of(config.vcpus, config.cores_per_socket),
                entry,
                msr_indices.clone(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The vCPUs were set up while KVM registered the slots; they run only once it has.
    memory_slots.wait()?;
    let devices = MachineDevices {
        legacy,
        mmio,
        transports,
        disk_slots,
        nic_links,
        stalls,
        framebuffer,
        io_events,
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
    vm: &Vm,
    config: &VmConfig,
    cmdline: &str,
    virtio_slots: &[MmioDeviceInfo],
    framebuffer: &FramebufferInfo,
) -> Result<BootEntry, BuildError> {
    let pvm = kvm_pvm::detected();
    let kernel = load_kernel(memory, &config.kernel, pvm)?;
    let cmdline_size = if pvm && kernel.linux {
        let tsc_khz = kvm_pvm::tsc_khz(&vm.fd).map_err(BuildError::TscKhz)?;
        let full = format!("{cmdline} {}", kvm_pvm::linux_cmdline(tsc_khz));
        if full.len() >= layout::CMDLINE_MAX_SIZE {
            return Err(ConfigError::CmdlineTooLong(full.len()).into());
        }
        write_cmdline(memory, &full)?
    } else {
        write_cmdline(memory, cmdline)?
    };
    let ram = layout::ram_regions(config.memory_bytes());
    let initrd = match &config.initrd {
        Some(path) => {
            let max = kernel
                .setup_header
                .map_or(u64::MAX, |h| u64::from(h.initrd_addr_max) + 1);
            Some(load_initrd(
                memory,
                path,
                ram[0].1.min(max),
                pvm && kernel.linux,
            )?)
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

/// The command line with a `virtio_mmio.device=` entry per device (the DSDT lists them too)
/// and the framebuffer's `vireo.fb=` entry.
pub(crate) fn cmdline_with_devices(
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
