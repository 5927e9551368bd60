//! Saving a running VM: pause, quiesce the devices, collect vCPU and KVM state, write the
//! memory and state files, and restart the devices (the VM stays paused).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vireo_vmm_protocol::SaveReport;

use super::{memory, vm, write_state_file, VmSnapshot, MEMORY_FILE, STATE_FILE};
use crate::devices::bus::lock;
use crate::handle::VmHandle;

/// How long vCPUs get to hand over their state.
const VCPU_SAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a save failed (the VM is left paused and running devices restarted).
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The directory could not be created.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The vCPUs could not be paused.
    #[error("cannot pause the VM (it may be ending)")]
    Pause,
    /// A vCPU could not save its state.
    #[error("vCPU state: {0}")]
    Vcpu(String),
    /// KVM's VM state could not be read.
    #[error(transparent)]
    Kvm(#[from] vm::KvmStateError),
    /// The memory file could not be written.
    #[error(transparent)]
    Memory(#[from] memory::MemoryFileError),
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] super::StateFileError),
}

/// Saves the VM behind `handle` into `dir`.
pub fn save_vm(handle: &VmHandle, dir: &Path) -> Result<SaveReport, SaveError> {
    let started = Instant::now();
    std::fs::create_dir_all(dir).map_err(|source| SaveError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    if !handle.kicker.pause(&handle.run_state) {
        return Err(SaveError::Pause);
    }
    for transport in &handle.transports {
        lock(transport).quiesce();
    }
    let result = write_snapshot(handle, dir);
    for transport in &handle.transports {
        lock(transport).reactivate();
    }
    let (memory_bytes, state_file, memory_file) = result?;
    Ok(SaveReport {
        state_file,
        memory_file,
        memory_bytes,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

fn write_snapshot(handle: &VmHandle, dir: &Path) -> Result<(u64, PathBuf, PathBuf), SaveError> {
    let vcpus = handle
        .run_state
        .collect_vcpu_states(handle.kicker.count(), VCPU_SAVE_TIMEOUT)
        .map_err(SaveError::Vcpu)?;
    let kvm = vm::save(&handle.vm_fd)?;
    let memory_file = dir.join(MEMORY_FILE);
    let regions = memory::save(&handle.memory, &memory_file)?;
    let snapshot = VmSnapshot {
        config: lock(&handle.config).clone(),
        vcpus,
        kvm,
        serial: lock(&handle.serial).state(),
        pm: lock(&handle.pm).state(),
        cmos: lock(&handle.cmos).state(),
        virtio: handle.transports.iter().map(|t| lock(t).state()).collect(),
        memory: regions.clone(),
    };
    let state_file = dir.join(STATE_FILE);
    write_state_file(&state_file, &snapshot)?;
    Ok((regions.iter().map(|r| r.len).sum(), state_file, memory_file))
}
