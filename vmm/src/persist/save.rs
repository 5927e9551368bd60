//! Saving a running VM: pause, quiesce the devices, collect vCPU and KVM state, write the
//! memory and state files, and restart the devices (the VM stays paused). Files the VMM made
//! are synced before it replies; files vireod sent are vireod's to sync, which it does once the
//! guest runs again, so that the pause does not wait for the disk. A live save copies
//! memory while the guest runs first — a full pass, then rounds of the pages written since
//! (KVM's dirty log and the VMM's own writes) until a round is small — so that the pause only
//! writes the last dirty pages and the device state.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vireo_vmm_protocol::SaveReport;

use super::dirty::{DirtyLog, DirtyLogError};
use super::memory::MemoryFileWriter;
use super::{memory, vm, write_state_file, write_state_into, VmSnapshot, MEMORY_FILE, STATE_FILE};
use crate::devices::bus::lock;
use crate::handle::VmHandle;

/// How long vCPUs get to hand over their state.
const VCPU_SAVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pre-copy ends after a round that wrote at most this many pages (16 MiB)...
const SMALL_ROUND_PAGES: u64 = 4096;
/// ...or after this many rounds (a guest writing faster than the save copies).
const MAX_ROUNDS: u32 = 8;

/// Why a save failed (a VM the save paused stays paused; running devices are restarted).
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
    /// Dirty pages could not be tracked (live save).
    #[error(transparent)]
    DirtyLog(#[from] DirtyLogError),
    /// The memory file could not be written.
    #[error(transparent)]
    Memory(#[from] memory::MemoryFileError),
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] super::StateFileError),
}

/// The files of a save that vireod made and sent open (empty): the VMM opens nothing by path.
#[derive(Debug)]
pub struct SentFiles {
    /// The memory file.
    pub memory: File,
    /// The state file.
    pub state: File,
}

/// Saves the VM behind `handle` into `dir` — into the files `sent`, or files it creates there
/// — with `live`, memory is copied while the guest runs and the VM is paused only for the
/// rest.
pub fn save_vm(
    handle: &VmHandle,
    dir: &Path,
    live: bool,
    sent: Option<SentFiles>,
) -> Result<SaveReport, SaveError> {
    let started = Instant::now();
    let memory_file = dir.join(MEMORY_FILE);
    let (mut writer, state) = match sent {
        Some(files) => (
            MemoryFileWriter::new(files.memory, &memory_file, &handle.memory)?,
            Some(files.state),
        ),
        None => {
            std::fs::create_dir_all(dir).map_err(|source| SaveError::Dir {
                path: dir.to_owned(),
                source,
            })?;
            (
                MemoryFileWriter::create(&memory_file, &handle.memory)?,
                None,
            )
        }
    };
    let precopied = if live {
        Some(precopy(handle, &mut writer)?)
    } else {
        None
    };
    let rounds = precopied.as_ref().map_or(0, |(_, rounds)| *rounds);
    if !handle.kicker.pause(&handle.run_state) {
        return Err(SaveError::Pause);
    }
    let paused = Instant::now();
    for transport in &handle.transports {
        lock(transport).quiesce();
    }
    let result = write_snapshot(handle, dir, writer, precopied.map(|(log, _)| log), state);
    for transport in &handle.transports {
        lock(transport).reactivate();
    }
    let (memory_bytes, state_file) = result?;
    Ok(SaveReport {
        state_file,
        memory_file,
        memory_bytes,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        paused_ms: paused.elapsed().as_secs_f64() * 1e3,
        rounds,
    })
}

/// Starts dirty logging (with the devices briefly quiesced, so that none holds a request taken
/// before), then copies memory in rounds while the guest runs; returns the log and the rounds.
fn precopy<'a>(
    handle: &'a VmHandle,
    writer: &mut MemoryFileWriter,
) -> Result<(DirtyLog<'a>, u32), SaveError> {
    let log = {
        let mut transports: Vec<_> = handle.transports.iter().map(|t| lock(t)).collect();
        for transport in &mut transports {
            transport.quiesce();
        }
        let log = DirtyLog::start(&handle.vm_fd, &handle.memory);
        for transport in &mut transports {
            transport.reactivate();
        }
        log?
    };
    writer.write_all(&handle.memory)?;
    // The bulk goes to the disk now: the rounds then copy what the guest wrote meanwhile.
    writer.sync_data()?;
    let mut rounds = 1;
    while rounds < MAX_ROUNDS {
        let dirty = log.take_vcpu_writes()?;
        rounds += 1;
        if writer.write_dirty(&handle.memory, &dirty)? <= SMALL_ROUND_PAGES {
            break;
        }
    }
    Ok((log, rounds))
}

/// Writes the state file (into `state` when it was sent) and the rest of the memory file (all
/// of it, or after a pre-copy the pages written since its last round); returns the memory
/// size and the state file.
fn write_snapshot(
    handle: &VmHandle,
    dir: &Path,
    mut writer: MemoryFileWriter,
    log: Option<DirtyLog>,
    state: Option<File>,
) -> Result<(u64, PathBuf), SaveError> {
    let vcpus = handle
        .run_state
        .collect_vcpu_states(handle.kicker.count(), VCPU_SAVE_TIMEOUT)
        .map_err(SaveError::Vcpu)?;
    let kvm = vm::save(&handle.vm_fd)?;
    match log {
        Some(log) => {
            let dirty = log.finish()?;
            writer.write_dirty(&handle.memory, &dirty)?;
        }
        None => writer.write_all(&handle.memory)?,
    }
    let regions = writer.finish()?;
    let snapshot = VmSnapshot {
        config: lock(&handle.config).clone(),
        vcpus,
        kvm,
        serial: lock(&handle.serial).state(),
        pm: lock(&handle.pm).state(),
        cmos: lock(&handle.cmos).state(),
        pit: Some(lock(&handle.pit).state()),
        virtio: handle.transports.iter().map(|t| lock(t).state()).collect(),
        memory: regions.clone(),
    };
    let state_file = dir.join(STATE_FILE);
    match state {
        Some(file) => write_state_into(file, &state_file, &snapshot)?,
        None => write_state_file(&state_file, &snapshot)?,
    }
    Ok((regions.iter().map(|r| r.len).sum(), state_file))
}
