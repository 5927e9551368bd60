//! The restore recipe: a machine rebuilt from a save directory — memory mapped privately from
//! the memory file, KVM and device state loaded, vCPUs restored — that resumes where it stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vireo_vmm_protocol::{DiskConfig, LogRotation};

use super::{memory, read_state_file, vm, MEMORY_FILE, STATE_FILE};
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
use crate::standby::Premade;
use crate::vstate::vcpu::{Vcpu, VcpuError};
use crate::vstate::vm::{SlotsUnderway, VmError, VmUnderway};

/// Host-side settings of the restored process (everything else comes from the state file).
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Serial log file.
    pub serial_log: Option<PathBuf>,
    /// How it rotates.
    pub serial_log_rotation: LogRotation,
    /// Serial console on stdio.
    pub serial_stdio: bool,
    /// Control socket.
    pub control_socket: Option<PathBuf>,
    /// Tools channel socket.
    pub tools_socket: Option<PathBuf>,
    /// File to back the framebuffer with (its saved pixels are copied in).
    pub framebuffer_file: Option<PathBuf>,
    /// Replacement images for the disks (path and format), in order (revert to a memory
    /// snapshot resumes on new child layers); empty keeps the saved ones.
    pub disks: Vec<DiskConfig>,
}

/// Errors rebuilding a saved VM.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The saved state does not fit the options given (disk count, vCPUs).
    #[error("saved device state does not fit: {0}")]
    DoesNotFit(String),
    /// The state file could not be read.
    #[error(transparent)]
    StateFile(#[from] super::StateFileError),
    /// The memory file could not be mapped.
    #[error(transparent)]
    MemoryFile(#[from] memory::MemoryFileError),
    /// The framebuffer could not be backed by its file.
    #[error(transparent)]
    FramebufferFile(#[from] FramebufferFileError),
    /// The KVM VM could not be created.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// VM-wide KVM state could not be restored.
    #[error(transparent)]
    KvmState(#[from] vm::KvmStateError),
    /// A device could not be set up with its saved state.
    #[error(transparent)]
    Devices(#[from] DeviceError),
    /// The MSR index list could not be read.
    #[error("cannot read KVM's MSR index list: {0}")]
    MsrList(kvm_ioctls::Error),
    /// A vCPU could not be restored.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
}

/// Rebuilds the VM saved in `dir` — in the VM a standby VMM made ahead (`premade`) when its
/// memory is laid out as the saved one, else in a new one.
pub fn restore_vm(
    dir: &Path,
    options: &RestoreOptions,
    premade: Option<Premade>,
) -> Result<Machine, RestoreError> {
    // Without a VM made ahead, it is made on a thread while the files are read.
    let underway = premade.is_none().then(VmUnderway::start);
    let snapshot = read_state_file(&dir.join(STATE_FILE))?;
    let mut config = snapshot.config.clone();
    config.serial_log = options.serial_log.clone();
    config.serial_log_rotation = options.serial_log_rotation;
    config.serial_stdio = options.serial_stdio;
    config.control_socket = options.control_socket.clone();
    config.framebuffer_file = options.framebuffer_file.clone();
    // The channel's device must exist iff it did when saved; only its host path may change.
    if config.tools_socket.is_some() {
        config.tools_socket = options.tools_socket.clone().or(config.tools_socket);
    }
    if !options.disks.is_empty() {
        if options.disks.len() != config.disks.len() {
            return Err(RestoreError::DoesNotFit(format!(
                "{} disk paths given for {} saved disks",
                options.disks.len(),
                config.disks.len()
            )));
        }
        for (disk, given) in config.disks.iter_mut().zip(&options.disks) {
            disk.path = given.path.clone();
            disk.format = given.format;
            disk.no_medium = given.no_medium;
        }
    }
    if snapshot.vcpus.len() != usize::from(config.vcpus) {
        return Err(RestoreError::DoesNotFit(format!(
            "the state holds {} vCPUs for a {}-vCPU configuration",
            snapshot.vcpus.len(),
            config.vcpus
        )));
    }

    let framebuffer = FramebufferInfo::new(config.framebuffer.0, config.framebuffer.1);
    let memory_path = dir.join(MEMORY_FILE);
    let memory_file = memory::open(&memory_path, &snapshot.memory)?;
    let (premade_vm, guest_memory) = match premade {
        Some(Premade { vm, memory }) if memory::fits(&memory, &snapshot.memory) => (
            Some(vm),
            memory::restore_over(&memory_file, &memory_path, &snapshot.memory, memory)?,
        ),
        unfit => {
            // Made for another size: dropped off the way (destroying a VM takes grace periods).
            if let Some(unfit) = unfit {
                let _ = std::thread::Builder::new()
                    .name("drop-vm".into())
                    .spawn(move || drop(unfit));
            }
            (
                None,
                memory::restore(&memory_file, &memory_path, &snapshot.memory)?,
            )
        }
    };
    let guest_memory = match &config.framebuffer_file {
        Some(path) => {
            let offset = snapshot
                .memory
                .iter()
                .find(|entry| entry.guest_addr == framebuffer.addr)
                .ok_or_else(|| {
                    RestoreError::DoesNotFit("no framebuffer in the memory file".into())
                })?
                .file_offset;
            let first = FirstPixels::Saved {
                file: &memory_file,
                offset,
            };
            share_through_file(&guest_memory, &framebuffer, path, first)?
        }
        None => guest_memory,
    };
    let VirtioDevices {
        devices,
        disk_slots,
        nic_links,
        stalls,
    } = open_virtio_devices(&config)?;
    let (vm, memory_slots) = match premade_vm {
        Some(vm) => (vm, SlotsUnderway::registered()),
        None => underway
            .unwrap_or_else(VmUnderway::start)
            .finish(&guest_memory)?,
    };
    vm::restore(&vm.fd, &snapshot.kvm)?;

    let run_state = Arc::new(RunState::default());
    let legacy = attach_legacy_devices(&vm, &config, &run_state, Some(&snapshot))?;
    let slots = virtio_layout(devices.len());
    let (mmio, transports, io_events) =
        attach_virtio_devices(&vm, &guest_memory, devices, &slots, Some(&snapshot))?;

    let msr_indices = vm.msr_index_list().map_err(RestoreError::MsrList)?;
    // Restored MSRs may point into guest memory (kvmclock, steal time): slots first.
    memory_slots.wait()?;
    let vcpus = snapshot
        .vcpus
        .iter()
        .enumerate()
        .map(|(i, state)| Vcpu::restore(&vm.fd, i as u8, state, msr_indices.clone()))
        .collect::<Result<Vec<_>, _>>()?;
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
        guest_memory,
        vm,
        vcpus,
        devices,
        run_state,
        config,
    ))
}
