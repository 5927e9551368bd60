//! A running VM's disks handed to the host and back (ESXi's "stun"): pause the guest,
//! optionally save its machine state, detach the disks, let the caller change the disk trees,
//! attach the (possibly new) writable layers and resume. A VM that is not running needs none
//! of this: its layer files are closed already. Each step is recorded in the task's journal.

use std::fs::{File, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vireo_api::Fault;
use vireo_vmm_protocol::control::{Ack, Request, SaveReport};

use super::super::beneath::Access;
use super::super::disks::trees as disks;
use super::super::handoff::Handoff;
use super::super::jail::{self, VmmJail};
use super::super::journal::Journal;
use super::super::lifecycle::ms;
use super::super::spec::VmSpec;
use super::super::{control, Power, Vm, VmState};
use crate::faults;
use crate::host::Host;

/// How long a pause, detach, attach or resume may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long saving the machine state may take.
const SAVE_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `change` while the VM's disk images are closed, saving the machine state into
/// `save_to` first when given (the VM must then be running; the state is made durable once
/// the guest runs again). Marks in `journal` the steps
/// `vm-paused`, `state-saved`, `disks-detached`, `trees-changed`, `disks-attached` (not synced:
/// the guest is paused meanwhile, and recovery reads the disk trees and the VMM, not them).
pub fn with_disks_closed<T>(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    save_to: Option<&Path>,
    journal: &mut Journal,
    change: impl FnOnce() -> Result<T, Fault>,
) -> Result<T, Fault> {
    stunned(host, vm, state, save_to, journal, false, change)
}

/// Runs `grow` (which grows disk images) while the running VM's disks are closed; the guest
/// is told each new size when they are attached again. Records the steps of
/// [`with_disks_closed`].
pub fn with_disks_growing<T>(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    journal: &mut Journal,
    grow: impl FnOnce() -> Result<T, Fault>,
) -> Result<T, Fault> {
    stunned(host, vm, state, None, journal, true, grow)
}

fn stunned<T>(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    save_to: Option<&Path>,
    journal: &mut Journal,
    may_grow: bool,
    change: impl FnOnce() -> Result<T, Fault>,
) -> Result<T, Fault> {
    let schema = host.schema;
    let record =
        |journal: &mut Journal, step: &str| journal.mark(step).map_err(|e| e.fault(schema));
    if state.power != Power::On {
        let result = change()?;
        record(journal, "trees-changed")?;
        return Ok(result);
    }
    let socket = vm.run_dir.join("control.sock");
    let refused = |what: &str, e: control::ControlError| {
        Fault::system_error(schema, format!("cannot {what} the VM: {e}"))
    };
    let resume = || {
        if let Err(error) = control::command(&socket, Request::Resume, CONTROL_TIMEOUT) {
            tracing::error!(
                vm = vm.id,
                "cannot resume after a snapshot operation: {error}"
            );
        }
    };
    // A machine state is saved live: the guest runs while its memory is copied, and is paused
    // only for the last pages and the device state — the point the disks are frozen at.
    // It is made durable once the guest runs again.
    let paused = match save_to {
        Some(dir) => save(host, &socket, dir, true).map(Some),
        None => control::command(&socket, Request::Pause, CONTROL_TIMEOUT)
            .map(|()| None)
            .map_err(|e| refused("pause", e)),
    };
    let paused = paused.and_then(|saved| record(journal, "vm-paused").map(|()| saved));
    let saved = match save_to {
        Some(_) => paused.and_then(|saved| record(journal, "state-saved").map(|()| saved)),
        None => paused,
    };
    let unsynced = match saved {
        Ok(unsynced) => unsynced,
        Err(fault) => {
            resume();
            return Err(fault);
        }
    };
    let stunned_at = Instant::now();
    if let Err(error) = control::command(&socket, Request::DetachDisks, CONTROL_TIMEOUT) {
        resume();
        return Err(refused("detach the disks of", error));
    }
    let detached = stunned_at.elapsed();
    let result = record(journal, "disks-detached")
        .and_then(|()| change())
        .and_then(|result| record(journal, "trees-changed").map(|()| result));
    let changed = stunned_at.elapsed();
    if let Err(error) = attach_writable_layers(host, vm, &state.spec, &socket, may_grow) {
        // A guest without its disks cannot go on: power it off rather than leave it hanging.
        tracing::error!(
            vm = vm.id,
            "cannot reattach the disks, powering off: {}",
            error.message
        );
        let _ = control::command(&socket, Request::PowerOff, CONTROL_TIMEOUT);
        return Err(error);
    }
    let attached = record(journal, "disks-attached");
    resume();
    tracing::info!(
        vm = vm.id,
        "disks stunned for {:.1} ms: detached at {:.1} ms, trees changed at {:.1} ms",
        ms(stunned_at.elapsed()),
        ms(detached),
        ms(changed)
    );
    let kept = unsynced.map_or(Ok(()), |unsynced| unsynced.keep(host));
    attached.and(kept).and(result)
}

/// Hands the stunned VMM at `socket` each disk's writable layer as the trees say now (each
/// chain granted to the VMM's jail first); with `may_grow` a layer may be larger than before.
pub fn attach_writable_layers(
    host: &Host,
    vm: &Vm,
    spec: &VmSpec,
    socket: &Path,
    may_grow: bool,
) -> Result<(), Fault> {
    let schema = host.schema;
    let refused = |what: &str, e: control::ControlError| {
        Fault::system_error(schema, format!("cannot {what} the VM: {e}"))
    };
    let views = disks::views(vm, spec, &host.datastores());
    let layers = super::super::disks::writable_layers(host, vm, spec, &views)
        .map_err(|e| Fault::system_error(schema, format!("cannot find the disks: {e}")))?;
    let chains = views.iter().flat_map(|v| &v.active.chain);
    VmmJail::of(&host.config, vm.id)
        .and_then(|jail| jail::grant_chains(jail, chains))
        .map_err(|e| refused("give the disks to", control::ControlError::Grant(e)))?;
    let mut handoff = Handoff::default();
    let mut paths = Vec::with_capacity(layers.len());
    let mut formats = Vec::with_capacity(layers.len());
    for (path, format) in layers {
        let handed = handoff
            .add_chain(&host.datastores(), &path, format, false)
            .map_err(|e| {
                faults::file_fault(
                    schema,
                    &path.display().to_string(),
                    format!("cannot open the disk for the VM: {e}"),
                )
            })?;
        paths.push(handed);
        formats.push(super::super::disks::vmm_format(format));
    }
    let request = Request::AttachDisks {
        paths,
        formats,
        may_grow,
        files: handoff.paths(),
    };
    control::call_with_files::<Ack>(socket, &request, &handoff.fds(), CONTROL_TIMEOUT)
        .map(drop)
        .map_err(|e| refused("reattach the disks of", e))
}

/// The files of a saved VM, in the order the VMM takes them: its state, then its memory.
pub const SAVED_FILES: [&str; 2] = ["vm.state", "vm.mem"];
/// The state file while it is written (renamed to `vm.state` once the save is whole).
const PARTIAL_STATE: &str = "vm.state.partial";

/// Saves the running VM's machine state into `dir` (the VM is left paused), copying memory
/// while the guest runs with `live`. vireod makes the folder and the files beneath the
/// datastore and sends them open with the request, so the VMM opens nothing by path. The
/// state is not durable yet: [`Unsynced::keep`] makes it so (the guest may run meanwhile). On
/// failure the directory is removed and the fault names it.
pub fn save(host: &Host, socket: &Path, dir: &Path, live: bool) -> Result<Unsynced, Fault> {
    send_save(host, socket, dir, live).map_err(|error| save_fault(host, dir, error))
}

/// Removes the half-saved `dir`; the fault says why.
fn save_fault(host: &Host, dir: &Path, error: String) -> Fault {
    let _ = std::fs::remove_dir_all(dir);
    faults::file_fault(
        host.schema,
        &dir.display().to_string(),
        format!("cannot save the VM: {error}"),
    )
}

/// A machine state the VMM has written, not yet on the disk: the state file still has its
/// partial name, so that nothing restores from it until [`Unsynced::keep`].
#[must_use = "the saved state is only kept by `keep`"]
pub struct Unsynced {
    dir: PathBuf,
}

impl Unsynced {
    /// Syncs both files, makes the memory file read-only and names the state file (the folder
    /// synced too): the state is whole and durable. On failure the directory is removed.
    pub fn keep(self, host: &Host) -> Result<(), Fault> {
        let [state_name, memory_name] = SAVED_FILES;
        let (memory, partial) = (self.dir.join(memory_name), self.dir.join(PARTIAL_STATE));
        let kept = File::open(&memory)
            .and_then(|file| file.sync_all())
            .and_then(|()| std::fs::set_permissions(&memory, Permissions::from_mode(0o400)))
            .and_then(|()| File::open(&partial)?.sync_all())
            .and_then(|()| std::fs::rename(&partial, self.dir.join(state_name)))
            .and_then(|()| File::open(&self.dir)?.sync_all());
        kept.map_err(|e| save_fault(host, &self.dir, format!("cannot keep the saved state: {e}")))
    }
}

/// Makes `dir` and the empty memory and state files in it and has the VMM save into them.
fn send_save(host: &Host, socket: &Path, dir: &Path, live: bool) -> Result<Unsynced, String> {
    jail::ensure_private_dir(dir).map_err(|e| e.to_string())?;
    let datastores = host.datastores();
    let [_, memory_name] = SAVED_FILES;
    let mut files = Handoff::default();
    files
        .add_opened(&datastores, &dir.join(memory_name), Access::New)
        .map_err(|e| e.to_string())?;
    files
        .add_opened(&datastores, &dir.join(PARTIAL_STATE), Access::Replace)
        .map_err(|e| e.to_string())?;
    let request = Request::Save {
        dir: dir.to_owned(),
        live,
        files_sent: true,
    };
    let report =
        control::call_with_files::<SaveReport>(socket, &request, &files.fds(), SAVE_TIMEOUT)
            .map_err(|e| e.to_string())?;
    tracing::info!(
        live,
        rounds = report.rounds,
        "machine state saved in {:.1} ms, the guest paused for the last {:.1} ms of it",
        report.elapsed_ms,
        report.paused_ms
    );
    Ok(Unsynced {
        dir: dir.to_owned(),
    })
}
