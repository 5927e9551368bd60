//! Recovery at start, per VM as it is registered: a save the re-adopted VMM is still writing is
//! waited for, a VMM that is paused (or whose VM has a task journal) is stunned, every
//! interrupted task in the VM's journals is rolled forward or back, the snapshot list is made to
//! agree with the disk trees, debris (half-made clone folders, orphaned `snapshot-N/` folders,
//! temporary snapshots, stale TAPs) goes, and the VMM is resumed. When resuming is unsafe (the
//! disk trees cannot be repaired, the VMM refuses its disks, or its save does not end) the VM is
//! left paused with a `runtime.question` (Retry runs [`retry`], Cancel powers it off) and its
//! journals are kept. Each step is logged; the sentences returned become an event on the VM.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vireo_api::Fault;
use vireo_disk::tree::DiskTree;
use vireo_vmm_protocol::control::{Request, RunPhase};

use super::disks::refresh;
use super::disks::trees::{base_paths, each, open_snapshotted, sidecar_of, tree_snapshot_name};
use super::journal::{self, Intent, Record};
use super::process::VmmProcess;
use super::question::Question;
use super::snapshots::reconcile::reconcile;
use super::snapshots::{self, clone_holds, memory_dir};
use super::{control, network, Vm, VmState};
use crate::host::Host;

/// How the temporary snapshot of a clone of a running VM is named (`clone <name>`).
pub const CLONE_SNAPSHOT_PREFIX: &str = "clone ";

/// How long a control request during recovery may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long recovery waits for a save the VMM was writing when vireod died (as long as a
/// save may take).
const SAVE_WAIT: Duration = Duration::from_secs(600);
/// How often the VMM is asked whether its save ended.
const SAVE_POLL: Duration = Duration::from_millis(100);

/// Why a paused VM cannot safely be resumed: its guest would run on disks other than those it
/// last saw, or under a save still being written.
#[derive(Debug, thiserror::Error)]
pub enum ResumeUnsafe {
    /// The VMM's save did not end in time (its files are still being written).
    #[error("the VMM was still saving the VM's state after {} s", SAVE_WAIT.as_secs())]
    SaveUnderWay,
    /// The disk trees could not be repaired.
    #[error("its disk trees cannot be repaired: {0}")]
    Trees(String),
    /// The VMM could not be given its disks back, or resumed.
    #[error("its disks cannot be given back: {0}")]
    Disks(String),
}

/// What recovery did, one sentence each (each also logged).
#[derive(Default)]
pub struct Recovered(Vec<String>);

impl Recovered {
    fn note(&mut self, vm: &Vm, what: String) {
        tracing::info!(vm = vm.id, "recovery: {what}");
        self.0.push(what);
    }

    /// Whether anything was done.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Everything done, as one message.
    pub fn message(&self) -> String {
        self.0.join("; ")
    }
}

/// Brings a just-registered VM to a state the API can describe: `process` is its re-adopted
/// VMM (taken when recovery has to end it); the snapshot list in `state` is loaded.
pub fn recover(
    host: &Host,
    vm: &Vm,
    state: &mut VmState,
    process: &mut Option<VmmProcess>,
) -> Recovered {
    let mut done = Recovered::default();
    let journals = journal::pending(&vm.dir);
    for (_, record) in &journals {
        done.note(
            vm,
            format!(
                "found the task {} interrupted after step '{}'",
                record.intent.task(),
                record.steps.last().map_or("", String::as_str)
            ),
        );
    }
    let settled = if process.is_some() {
        settle_running(host, vm, state, &journals, process, &mut done)
    } else {
        if let Err(error) = repair_snapshots(host, vm, state, &journals, &mut done) {
            tracing::warn!(vm = vm.id, "recovery: {error}");
        }
        finish_tasks(host, vm, &journals, process, &mut done);
        Ok(())
    };
    if process.is_none() {
        remove_stale_taps(host, vm, state, &mut done);
    }
    match settled {
        Ok(()) => journals.iter().for_each(|(path, _)| journal::remove(path)),
        Err(why) => ask(vm, state, &why, &mut done),
    }
    refresh(host, vm, state);
    done
}

/// AnswerVM Retry on the question of a VM recovery left paused: settles it again (waits for
/// its save, repairs, finishes its tasks, resumes); the question is asked again, with a new
/// id, while resuming is still unsafe.
pub fn retry(host: &Host, vm: &Vm) {
    let mut state = vm.edit(host);
    let journals = journal::pending(&vm.dir);
    let mut done = Recovered::default();
    // The VMM is the watcher's now; a VM with a saved suspend was never asked about.
    let mut process = None;
    match settle_running(host, vm, &mut state, &journals, &mut process, &mut done) {
        Ok(()) => journals.iter().for_each(|(path, _)| journal::remove(path)),
        Err(why) => ask(vm, &mut state, &why, &mut done),
    }
    refresh(host, vm, &mut state);
    let message = format!("{}: {}", state.spec.name, done.message());
    super::lifecycle::post_vm_event(host, vm, &state, "VmMessageEvent", message, "");
}

/// Leaves the VM paused with the question of `why` (its journals stay for [`retry`]).
fn ask(vm: &Vm, state: &mut VmState, why: &ResumeUnsafe, done: &mut Recovered) {
    let question = Question::resume_unsafe(why.to_string());
    done.note(
        vm,
        format!(
            "left the VM paused: resuming it is unsafe ({why}); asked question {}",
            question.id()
        ),
    );
    state.question = Some(question);
}

/// Settles a VM whose VMM runs: waits for a save it is writing, stuns it when it is paused or
/// has a journal, repairs the snapshots, finishes the tasks and resumes it.
fn settle_running(
    host: &Host,
    vm: &Vm,
    state: &mut VmState,
    journals: &[(std::path::PathBuf, Record)],
    process: &mut Option<VmmProcess>,
    done: &mut Recovered,
) -> Result<(), ResumeUnsafe> {
    let socket = vm.run_dir.join("control.sock");
    wait_for_save(vm, &socket, done)?;
    let stunned = stun(vm, &socket, !journals.is_empty(), done);
    if stunned || journals.is_empty() {
        // Without a journal only sidecars change (the VMM may hold the layers open).
        let repaired = repair_snapshots(host, vm, state, journals, done);
        if stunned {
            repaired?;
        } else if let Err(error) = repaired {
            tracing::warn!(vm = vm.id, "recovery: {error}");
        }
    } else {
        tracing::warn!(
            vm = vm.id,
            "recovery: the VMM could not be stunned; disk trees left as found"
        );
    }
    let suspended = journals.iter().any(|(_, r)| suspend_saved(vm, r));
    finish_tasks(host, vm, journals, process, done);
    if stunned && !suspended {
        resume(host, vm, state, done)?;
    }
    Ok(())
}

/// Waits while the VMM at `socket` is writing a save (vireod died before its reply): its files
/// are complete, or removed by the task's recovery, only once it ends.
fn wait_for_save(vm: &Vm, socket: &Path, done: &mut Recovered) -> Result<(), ResumeUnsafe> {
    let deadline = std::time::Instant::now() + SAVE_WAIT;
    let mut waited = false;
    loop {
        match control::status(socket, CONTROL_TIMEOUT) {
            Ok(status) if status.saving => {}
            // Not saving, or gone (the rest of recovery finds out).
            _ => break,
        }
        if std::time::Instant::now() > deadline {
            return Err(ResumeUnsafe::SaveUnderWay);
        }
        if !waited {
            tracing::info!(vm = vm.id, "recovery: waiting for the VMM's save to end");
        }
        waited = true;
        std::thread::sleep(SAVE_POLL);
    }
    if waited {
        done.note(vm, "waited for the save the VMM was writing to end".into());
    }
    Ok(())
}

/// Rolls each task forward or back where the snapshot repair did not already.
fn finish_tasks(
    host: &Host,
    vm: &Vm,
    journals: &[(std::path::PathBuf, Record)],
    process: &mut Option<VmmProcess>,
    done: &mut Recovered,
) {
    for (_, record) in journals {
        finish_task(host, vm, record, process, done);
    }
}

/// Pauses a re-adopted VMM that is paused already or whose VM has a journal, and closes its
/// disks; returns whether its disks are closed.
fn stun(vm: &Vm, socket: &Path, has_journal: bool, done: &mut Recovered) -> bool {
    let paused = control::status(socket, CONTROL_TIMEOUT)
        .map(|status| status.state == RunPhase::Paused)
        .unwrap_or_else(|error| {
            tracing::warn!(vm = vm.id, "recovery: cannot read the VMM's state: {error}");
            false
        });
    if !paused && !has_journal {
        return false;
    }
    if paused {
        done.note(vm, "found the VM paused by an interrupted task".into());
    } else if let Err(error) = control::command(socket, Request::Pause, CONTROL_TIMEOUT) {
        tracing::warn!(vm = vm.id, "recovery: cannot pause the VM: {error}");
        return false;
    }
    match control::command(socket, Request::DetachDisks, CONTROL_TIMEOUT) {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(vm = vm.id, "recovery: cannot close the VM's disks: {error}");
            false
        }
    }
}

/// Makes the disk trees and the snapshot list agree, finishing reverts and removals and
/// dropping temporary clone snapshots, then removes `snapshot-N/` folders no snapshot owns.
fn repair_snapshots(
    host: &Host,
    vm: &Vm,
    state: &mut VmState,
    journals: &[(std::path::PathBuf, Record)],
    done: &mut Recovered,
) -> Result<(), ResumeUnsafe> {
    let before = state.snapshots.clone();
    let has_trees = !state.snapshots.snapshots.is_empty()
        || base_paths(vm, &state.spec, &host.datastores())
            .unwrap_or_default()
            .iter()
            .any(|base| sidecar_of(base).exists());
    let mut trees = if has_trees {
        open_snapshotted(vm, &state.spec, &host.datastores())
            .map_err(|e| ResumeUnsafe::Trees(format!("cannot open the disk trees: {e}")))?
    } else {
        Vec::new()
    };
    for tree in &trees {
        match tree.remove_leftover_layer() {
            Ok(true) => done.note(
                vm,
                format!(
                    "removed a layer file never recorded in {}",
                    tree.sidecar_path().display()
                ),
            ),
            Ok(false) => {}
            Err(error) => tracing::warn!(vm = vm.id, "recovery: {error}"),
        }
    }
    let mut created = None;
    for (_, record) in journals {
        match &record.intent {
            Intent::SnapshotCreate { meta } => created = Some(meta.clone()),
            Intent::SnapshotRevert { uid } if !record.did("trees-changed") => {
                let name = tree_snapshot_name(*uid);
                match each(&mut trees, |tree| tree.revert(&name).map(drop)) {
                    Ok(()) => done.note(
                        vm,
                        format!("finished reverting every disk to snapshot {uid}"),
                    ),
                    Err(error) => {
                        tracing::warn!(vm = vm.id, "recovery: cannot finish the revert: {error}")
                    }
                }
            }
            _ => {}
        }
    }
    reconcile(&mut state.snapshots, &mut trees, created.as_ref())
        .map_err(|e| ResumeUnsafe::Trees(format!("cannot reconcile the snapshots: {e}")))?
        .into_iter()
        .for_each(|c| done.note(vm, c));
    for (_, record) in journals {
        let Intent::Clone {
            temporary,
            hold,
            vmx,
            ..
        } = &record.intent
        else {
            continue;
        };
        if let Some(uid) = *temporary {
            let temporary = state.snapshots.get(uid);
            if temporary.is_some_and(|s| s.name.starts_with(CLONE_SNAPSHOT_PREFIX)) {
                drop_snapshot(vm, state, &mut trees, uid, done);
            }
        }
        if let Some(instance_uuid) = hold.as_deref().filter(|_| !clone_registered(host, vmx)) {
            release_hold(vm, &mut trees, instance_uuid, done);
        }
    }
    if trees.iter().any(DiskTree::needs_consolidation) && journals.iter().any(|(_, r)| merges(r)) {
        match each(&mut trees, |tree| tree.consolidate(&mut |_, _| true)) {
            Ok(()) => done.note(
                vm,
                "finished merging the disk layers no snapshot needs".into(),
            ),
            Err(error) => tracing::warn!(vm = vm.id, "recovery: cannot consolidate: {error}"),
        }
    }
    remove_orphan_memory_dirs(vm, state, done);
    if state.snapshots != before {
        let path = snapshots::vmsd_path(vm);
        state
            .snapshots
            .save(&path)
            .map_err(|e| ResumeUnsafe::Trees(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Whether the task was merging layers (its merge is finished on recovery).
fn merges(record: &Record) -> bool {
    match &record.intent {
        Intent::SnapshotRemove { consolidate, .. } => *consolidate,
        Intent::Consolidate | Intent::Clone { .. } => true,
        _ => false,
    }
}

/// Whether the clone whose `.vmx` is `vmx` was registered (in the table or the inventory file).
fn clone_registered(host: &Host, vmx: &str) -> bool {
    host.vms
        .all()
        .iter()
        .any(|v| v.vmx_path.to_string() == *vmx)
        || recorded_in_inventory(host, vmx)
}

/// Forgets the hold a linked clone that was never made took on the VM's layers.
fn release_hold(vm: &Vm, trees: &mut [DiskTree], instance_uuid: &str, done: &mut Recovered) {
    let name = clone_holds::hold_name(instance_uuid);
    let mut released = false;
    let forgotten = each(trees, |tree| {
        if tree.snapshot_layer(&name).is_err() {
            return Ok(());
        }
        released = true;
        tree.forget(&name)
    });
    match forgotten {
        Ok(()) if released => done.note(
            vm,
            format!("released the hold of the linked clone {instance_uuid}, never made"),
        ),
        Ok(()) => {}
        Err(error) => tracing::warn!(vm = vm.id, "recovery: cannot release a hold: {error}"),
    }
}

/// Deletes snapshot `uid` (a clone's temporary one) from the trees and the list.
fn drop_snapshot(
    vm: &Vm,
    state: &mut VmState,
    trees: &mut [DiskTree],
    uid: u32,
    done: &mut Recovered,
) {
    let name = tree_snapshot_name(uid);
    match each(trees, |tree| tree.forget(&name)) {
        Ok(()) => {
            state.snapshots.remove(uid);
            done.note(vm, format!("deleted the temporary clone snapshot {uid}"));
        }
        Err(error) => tracing::warn!(
            vm = vm.id,
            "recovery: cannot delete snapshot {uid}: {error}"
        ),
    }
}

/// Removes `snapshot-N/` folders of snapshots that do not exist; their numbers stay used.
fn remove_orphan_memory_dirs(vm: &Vm, state: &mut VmState, done: &mut Recovered) {
    let Ok(entries) = std::fs::read_dir(&vm.dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(uid) = name
            .strip_prefix("snapshot-")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        state.snapshots.last_uid = state.snapshots.last_uid.max(uid);
        if state.snapshots.get(uid).is_none() {
            match std::fs::remove_dir_all(memory_dir(vm, uid)) {
                Ok(()) => done.note(
                    vm,
                    format!("removed the folder {name} of a snapshot never taken"),
                ),
                Err(error) => tracing::warn!(vm = vm.id, "recovery: cannot remove {name}: {error}"),
            }
        }
    }
}

/// Rolls the task of `record` forward or back where the snapshot repair did not already.
fn finish_task(
    host: &Host,
    vm: &Vm,
    record: &Record,
    process: &mut Option<VmmProcess>,
    done: &mut Recovered,
) {
    match &record.intent {
        Intent::Suspend => finish_suspend(vm, record, process, done),
        Intent::SnapshotRevert { .. }
            if !record.did("state-linked") && vm.suspend_dir().exists() =>
        {
            let _ = std::fs::remove_dir_all(vm.suspend_dir());
            done.note(
                vm,
                "removed a half-restored suspended state: the VM is powered off".into(),
            );
        }
        Intent::Clone { folder, vmx, .. } => {
            let registered = clone_registered(host, vmx);
            // A journal sits on a datastore: only a VM folder on a datastore is touched.
            let a_vm_folder = *folder != vm.dir
                && host.datastores().iter().any(|ds| {
                    confined(folder, &ds.dir) && folder.parent() == Some(ds.dir.as_path())
                });
            if !registered && a_vm_folder && folder.exists() {
                match remove_clone_debris(folder) {
                    Ok(()) => done.note(vm, format!("removed the half-made clone folder {vmx}")),
                    Err(error) => tracing::warn!(
                        vm = vm.id,
                        "recovery: cannot remove {}: {error}",
                        folder.display()
                    ),
                }
            }
        }
        Intent::Destroy { .. } => {
            done.note(vm, "the deletion had not started: the VM stays".into())
        }
        _ => {}
    }
}

/// Removes what a clone makes in its folder `<name>/` (`<name>.vmx`, `<name>.qcow2`,
/// `<name>_<n>.qcow2`, their sidecars and temporary files), then the folder if that emptied it:
/// a journal is a file on a datastore, so nothing else is touched.
fn remove_clone_debris(folder: &Path) -> std::io::Result<()> {
    let name = folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for entry in std::fs::read_dir(folder)?.filter_map(Result::ok) {
        let file = entry.file_name().to_string_lossy().into_owned();
        let made = file
            .strip_prefix(&name)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('_'));
        if made && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
        }
    }
    std::fs::remove_dir(folder)
}

/// Whether `path` is inside `dir`, with no `..` on the way.
pub fn confined(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// Whether `<data_dir>/vm-inventory` lists the `.vmx` at datastore path `vmx`.
fn recorded_in_inventory(host: &Host, vmx: &str) -> bool {
    std::fs::read_to_string(host.config.data_dir.join("vm-inventory")).is_ok_and(|text| {
        text.lines()
            .any(|l| l.split_once('\t').is_some_and(|(_, p)| p == vmx))
    })
}

/// Whether `record` is a suspend whose state was saved whole (the VM ends suspended).
fn suspend_saved(vm: &Vm, record: &Record) -> bool {
    record.intent == Intent::Suspend
        && record.did("saved")
        && vm.suspend_dir().join("vm.state").exists()
}

/// A suspend whose state was saved ends the VMM (the VM is suspended); otherwise the partial
/// state goes and the VM runs on.
fn finish_suspend(
    vm: &Vm,
    record: &Record,
    process: &mut Option<VmmProcess>,
    done: &mut Recovered,
) {
    if suspend_saved(vm, record) {
        if let Some(vmm) = process.take() {
            end_vmm(vm, &vmm);
        }
        done.note(vm, "finished suspending the VM".into());
    } else if vm.suspend_dir().exists() {
        let _ = std::fs::remove_dir_all(vm.suspend_dir());
        done.note(
            vm,
            "undid the suspend: removed the partial saved state".into(),
        );
    }
}

/// Powers the VMM off and waits for it (killing it if it does not go).
fn end_vmm(vm: &Vm, vmm: &VmmProcess) {
    let socket = vm.run_dir.join("control.sock");
    if control::command(&socket, Request::PowerOff, CONTROL_TIMEOUT).is_err() {
        vmm.killer().signal(nix::sys::signal::Signal::SIGKILL);
    }
    vmm.wait();
    let _ = std::fs::remove_file(vm.run_dir.join("vmm.pid"));
}

/// Hands a stunned VMM its disks' writable layers and resumes it (a VMM that refuses them is
/// left paused: its guest never runs on other disks than it saw).
fn resume(
    host: &Host,
    vm: &Vm,
    state: &mut VmState,
    done: &mut Recovered,
) -> Result<(), ResumeUnsafe> {
    refresh(host, vm, state);
    let socket = vm.run_dir.join("control.sock");
    // A reconfigure may have grown a disk before the crash: its guest is told the new size.
    snapshots::live::attach_writable_layers(host, vm, &state.spec, &socket, true)
        .and_then(|()| {
            control::command(&socket, Request::Resume, CONTROL_TIMEOUT)
                .map_err(|e| Fault::system_error(host.schema, format!("cannot resume: {e}")))
        })
        .map_err(|fault| ResumeUnsafe::Disks(fault.message))?;
    state.question = None;
    done.note(vm, "resumed the VM".into());
    Ok(())
}

/// Deletes TAPs left by a VMM that is no longer running.
fn remove_stale_taps(host: &Host, vm: &Vm, state: &VmState, done: &mut Recovered) {
    let net = match network::Network::of(&host.config.data_dir) {
        Ok(net) => net,
        Err(error) => return tracing::warn!(vm = vm.id, "recovery: {error}"),
    };
    for index in 0..state.spec.nics.len() {
        let tap = net.tap_name(vm.id, index);
        if !network::interface_exists(&tap) {
            continue;
        }
        match network::delete_tap(&tap) {
            Ok(()) => done.note(vm, format!("deleted the stale network device {tap}")),
            Err(error) => tracing::warn!(vm = vm.id, "recovery: {error}"),
        }
    }
}

/// Finishes deletions cut short after the VM left the inventory: a folder on a datastore
/// holding a destroy journal and no registered `.vmx` loses what the VM owned, its holds on
/// other disks released.
pub fn finish_destroys(host: &Arc<Host>) {
    for ds in host.datastores().iter() {
        let Ok(entries) = std::fs::read_dir(&ds.dir) else {
            continue;
        };
        for folder in entries.filter_map(Result::ok).map(|e| e.path()) {
            for (path, record) in journal::pending(&folder) {
                let Intent::Destroy {
                    parents,
                    instance_uuid,
                    owned,
                } = record.intent
                else {
                    continue;
                };
                if host.vms.all().iter().any(|vm| vm.dir == folder) {
                    continue;
                }
                let on_datastores = parents
                    .iter()
                    .all(|p| host.datastores().iter().any(|ds| confined(p, &ds.dir)));
                if !owned.all_within(&folder) || !on_datastores {
                    tracing::warn!(journal = %path.display(), "recovery: ignoring a deletion journal naming files elsewhere");
                    continue;
                }
                tracing::info!(folder = %folder.display(), "recovery: finishing an interrupted deletion");
                snapshots::clone_holds::release(host, &parents, &instance_uuid);
                for kept in owned.and_last(path).remove() {
                    tracing::warn!(folder = %kept.display(), "recovery: left in place: it holds files the VM does not own");
                }
            }
        }
    }
}
