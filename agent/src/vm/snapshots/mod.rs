//! VM snapshots: a tree of named points in a VM's life, each freezing every disk (a layer of
//! that disk's `DiskTree`) and, when taken from a running or suspended VM with memory, its
//! machine state (`snapshot-<uid>/vm.state` + `vm.mem`). The list lives in `<name>.vmsd`
//! ([`vmsd`]); `disks::trees` maps it onto the disk trees, [`live`] stuns a running VM around
//! disk-tree changes, [`properties`] publishes what clients read, [`promote`] unlinks and
//! consolidates a linked clone's disks, [`clone_holds`] keeps layers linked clones are built on.

pub mod clone_holds;
pub mod live;
pub mod promote;
pub mod properties;
pub mod reconcile;
pub mod vmsd;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use vireo_api::{DataObject, Fault, MoRef, Value};
use vireo_disk::tree::{DiskTree, TreeError};
use vireo_tools::protocol::Operation;

use super::disks::trees::{each, open_snapshotted, tree_snapshot_name, DiskTreeError};
use super::disks::{apply_tracking, disk_fault, refresh, tracking_configured};
use super::journal::{Intent, Journal};
use super::{lifecycle, paced_delete, tools_host, Power, Vm, VmState};
use crate::faults;
use crate::host::Host;
use crate::inventory::now_micros;
use vmsd::{CapturedPower, SnapshotList, SnapshotMeta};

/// A snapshot to take (CreateSnapshot_Task's arguments).
pub struct NewSnapshot {
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Include the running machine's memory.
    pub memory: bool,
    /// Freeze the guest's filesystems (through the tools) around the disk snapshot.
    pub quiesce: bool,
}

/// The VM's `.vmsd`.
pub fn vmsd_path(vm: &Vm) -> PathBuf {
    vm.vmx_file.with_extension("vmsd")
}

/// Where snapshot `uid` keeps its machine state.
pub fn memory_dir(vm: &Vm, uid: u32) -> PathBuf {
    vm.file(&format!("snapshot-{uid}"))
}

/// `VirtualMachineSnapshot:<vm>-snapshot-<uid>`.
pub fn snapshot_moref(vm: &Vm, uid: u32) -> MoRef {
    MoRef::new(
        "VirtualMachineSnapshot",
        format!("{}-snapshot-{uid}", vm.id),
    )
}

/// The VM and snapshot uid a VirtualMachineSnapshot reference names.
pub fn resolve(host: &Host, snapshot: &MoRef) -> Option<(Arc<Vm>, u32)> {
    if &*snapshot.ty != "VirtualMachineSnapshot" {
        return None;
    }
    let (vm_id, uid) = snapshot.id.split_once("-snapshot-")?;
    let vm = host.vms.get(&MoRef::new("VirtualMachine", vm_id))?;
    let uid: u32 = uid.parse().ok()?;
    vm.state().snapshots.get(uid)?;
    Some((vm, uid))
}

/// Reads the snapshot list and the disks' views into a just-registered VM's state.
pub fn load(host: &Host, vm: &Vm, state: &mut VmState) {
    match SnapshotList::load(&vmsd_path(vm)) {
        Ok(list) => state.snapshots = list,
        Err(error) => tracing::warn!(vm = vm.id, "cannot read the snapshot list: {error}"),
    }
    refresh(host, vm, state);
}

fn not_found(host: &Host, uid: u32) -> Fault {
    Fault::not_found(host.schema, format!("snapshot {uid} does not exist"))
}

fn save_list(host: &Host, vm: &Vm, list: &SnapshotList) -> Result<(), Fault> {
    list.save(&vmsd_path(vm)).map_err(|e| {
        faults::file_fault(
            host.schema,
            &vm.datastore_path_of(&file_name(&vmsd_path(vm))),
            format!("cannot write the snapshot list: {e}"),
        )
    })
}

/// Saves the snapshot list at the end of a task, with the task's reserved space if the
/// datastore is full.
fn save_list_of_task(
    host: &Host,
    vm: &Vm,
    list: &SnapshotList,
    journal: &mut Journal,
) -> Result<(), Fault> {
    save_list(host, vm, list).or_else(|fault| match journal.make_room() {
        true => save_list(host, vm, list),
        false => Err(fault),
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Makes `to` hold the machine state files of `from` (hard links; copies across filesystems).
fn link_machine_state(from: &Path, to: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to)?;
    for name in ["vm.state", "vm.mem"] {
        let (source, target) = (from.join(name), to.join(name));
        if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

/// CreateSnapshot(Ex): freezes every disk (and the machine state when asked, or when the VM
/// is suspended) under a new snapshot, child of the current one. Returns its reference.
pub fn create(host: &Arc<Host>, vm: &Arc<Vm>, new: NewSnapshot) -> Result<MoRef, Fault> {
    let schema = host.schema;
    if new.name.is_empty() || new.name.len() > 80 {
        return Err(faults::invalid_snapshot_name(schema, &new.name));
    }
    let quiesce = new.quiesce && vm.state().power == Power::On;
    if quiesce {
        tools_request(host, vm, Operation::Freeze)?;
    }
    let result = create_locked(host, vm, &new, quiesce);
    if result.is_ok() && new.memory {
        lifecycle::keep_standby_ready(host, vm, &vm.state());
    }
    if quiesce {
        if let Err(fault) = tools_request(host, vm, Operation::Thaw) {
            tracing::warn!(
                vm = vm.id,
                "thaw after a quiesced snapshot failed: {}",
                fault.message
            );
        }
    }
    result
}

fn tools_request(host: &Host, vm: &Vm, op: Operation) -> Result<(), Fault> {
    let schema = host.schema;
    tools_host::request(vm, op).map_err(|error| match error {
        tools_host::ToolsRequestError::Unavailable => {
            faults::tools_unavailable(schema, "quiesce the guest")
        }
        other => faults::snapshot_fault(
            schema,
            format!("the guest could not quiesce its filesystems: {other}"),
        ),
    })
}

fn create_locked(host: &Host, vm: &Vm, new: &NewSnapshot, quiesced: bool) -> Result<MoRef, Fault> {
    let schema = host.schema;
    let mut state = vm.edit(host);
    if state.spec.template {
        return Err(Fault::not_supported(schema, "A template has no snapshots."));
    }
    let uid = state.snapshots.last_uid + 1;
    let captured = match state.power {
        Power::On if new.memory => CapturedPower::On,
        Power::On | Power::Off => CapturedPower::Off,
        Power::Suspended => CapturedPower::Suspended,
    };
    let meta = SnapshotMeta {
        uid,
        parent: state.snapshots.current,
        name: new.name.clone(),
        description: new.description.clone(),
        create_time: now_micros(),
        power: captured,
        quiesced,
    };
    let mut journal = begin(host, vm, Intent::SnapshotCreate { meta: meta.clone() })?;
    let dir = memory_dir(vm, uid);
    let taken = take_layers(host, vm, &state, &dir, &mut journal);
    if let Err(fault) = taken {
        let _ = std::fs::remove_dir_all(&dir);
        refresh(host, vm, &mut state);
        journal.finish();
        return Err(fault);
    }
    state.snapshots.last_uid = uid;
    state.snapshots.current = Some(uid);
    state.snapshots.snapshots.push(meta);
    save_list_of_task(host, vm, &state.snapshots, &mut journal)?;
    step(host, &mut journal, "listed")?;
    journal.finish();
    refresh(host, vm, &mut state);
    let message = format!("Created snapshot '{}' of {}", new.name, state.spec.name);
    lifecycle::post_vm_event(host, vm, &state, "VmMessageEvent", message, "");
    Ok(snapshot_moref(vm, uid))
}

/// The disk (and machine state) part of a snapshot: the suspended state linked into `dir`, or
/// the running VM saved there, and every disk tree's snapshot taken.
fn take_layers(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    dir: &Path,
    journal: &mut Journal,
) -> Result<(), Fault> {
    let Intent::SnapshotCreate { meta } = journal.intent().clone() else {
        return Err(Fault::system_error(host.schema, "not a snapshot journal"));
    };
    if meta.power == CapturedPower::Suspended {
        link_machine_state(&vm.suspend_dir(), dir).map_err(|e| {
            faults::file_fault(
                host.schema,
                &dir.display().to_string(),
                format!("cannot keep the suspended state: {e}"),
            )
        })?;
        step(host, journal, "state-linked")?;
    }
    let mut trees =
        open_snapshotted(vm, &state.spec, &host.datastores()).map_err(|e| disk_fault(host, e))?;
    let tracking = tracking_configured(state);
    let save_to = (meta.power == CapturedPower::On).then_some(dir);
    let name = tree_snapshot_name(meta.uid);
    live::with_disks_closed(host, vm, state, save_to, journal, || {
        apply_tracking(host, &mut trees, tracking)?;
        snapshot_all(&mut trees, &name).map_err(|e| disk_fault(host, e))
    })
}

/// Deletes snapshot `uid`'s saved state, if it has one: set aside at once, its files freed step
/// by step ([`paced_delete`]) now on a thread of their own, or once the VM's VMM, which may map
/// its memory file, has exited.
fn discard_memory(vm: &Vm, state: &VmState, uid: u32) {
    let dir = memory_dir(vm, uid);
    if !dir.exists() {
        return;
    }
    let Some(aside) = paced_delete::set_aside_or_remove(&dir) else {
        return;
    };
    match &state.process {
        Some(process) if process.after_exit.may_map(&aside) => {
            process.after_exit.delete_later(aside);
        }
        _ => paced_delete::remove_in_background(aside),
    }
}

/// Starts the journal of a task on `vm`.
pub(crate) fn begin(host: &Host, vm: &Vm, intent: Intent) -> Result<Journal, Fault> {
    Journal::begin(&vm.dir, intent).map_err(|e| e.fault(host.schema))
}

/// Records a step of a task.
fn step(host: &Host, journal: &mut Journal, name: &str) -> Result<(), Fault> {
    journal.step(name).map_err(|e| e.fault(host.schema))
}

/// Takes tree snapshot `name` on every disk; undoes the ones taken when one fails.
fn snapshot_all(trees: &mut [DiskTree], name: &str) -> Result<(), DiskTreeError> {
    let mut done = 0;
    let result = each(trees, |tree| {
        tree.create_snapshot(name)?;
        done += 1;
        Ok(())
    });
    if result.is_err() {
        for tree in trees.iter_mut().take(done) {
            if let Err(error) = tree.delete(name, &mut |_, _| true) {
                tracing::error!("cannot undo a partial snapshot: {error}");
            }
        }
    }
    result
}

/// RevertToSnapshot / RevertToCurrentSnapshot (`uid` None: the current one; nothing to do
/// without snapshots). The disks read as at the snapshot; the VM ends as it was then
/// (running from the saved memory, suspended, or off), or suspended with `suppress_power_on`.
pub fn revert(
    host: &Arc<Host>,
    vm: &Arc<Vm>,
    uid: Option<u32>,
    suppress_power_on: bool,
    user: &str,
) -> Result<(), Fault> {
    let Some(uid) = uid.or(vm.state().snapshots.current) else {
        return Ok(());
    };
    let began = Instant::now();
    // A VMM for the saved state: the one kept ready while the VM ran, else one made ready (on
    // a thread) while the running one powers off.
    let (kept, starting) = {
        let mut state = vm.state();
        let resumes = state
            .snapshots
            .get(uid)
            .is_some_and(|meta| meta.power == CapturedPower::On && !suppress_power_on);
        let memory_mb = state.spec.memory_mb;
        // A suspended VM keeps its standby until the revert has discarded its saved state.
        let kept = (resumes && state.power == Power::On)
            .then(|| state.standby.take())
            .flatten()
            .filter(|s| s.fits(memory_mb));
        drop(state);
        let (host, vm) = (host.clone(), vm.clone());
        let starting = (resumes && kept.is_none()).then(|| {
            std::thread::Builder::new()
                .name("standby".into())
                .spawn(move || lifecycle::standby_for(&host, &vm, memory_mb))
        });
        (kept, starting)
    };
    if vm.state().power == Power::On {
        lifecycle::power_off_released(host, vm)?;
    }
    let powered_off = began.elapsed();
    let mut state = vm.edit(host);
    let meta = state
        .snapshots
        .get(uid)
        .cloned()
        .ok_or_else(|| not_found(host, uid))?;
    if state.power == Power::On {
        return Err(faults::invalid_power_state(
            host.schema,
            Some(Power::Off),
            state.power,
        ));
    }
    if state.power == Power::Suspended {
        // Nothing maps it: the VMM that saved it has exited.
        if let Some(aside) = paced_delete::set_aside_or_remove(&vm.suspend_dir()) {
            paced_delete::remove_in_background(aside);
        }
        state.standby = None;
        state.power = Power::Off;
        state.suspend_time = None;
    }
    let mut journal = begin(host, vm, Intent::SnapshotRevert { uid })?;
    let mut trees =
        open_snapshotted(vm, &state.spec, &host.datastores()).map_err(|e| disk_fault(host, e))?;
    let name = tree_snapshot_name(uid);
    each(&mut trees, |tree| tree.revert(&name).map(drop)).map_err(|e| disk_fault(host, e))?;
    step(host, &mut journal, "trees-changed")?;
    state.snapshots.current = Some(uid);
    save_list_of_task(host, vm, &state.snapshots, &mut journal)?;
    // The list is durable itself; recovery does not read this step.
    journal.mark("listed").map_err(|e| e.fault(host.schema))?;
    refresh(host, vm, &mut state);
    let dir = memory_dir(vm, uid);
    let reverted = began.elapsed();
    match meta.power {
        CapturedPower::Off => {}
        CapturedPower::On if !suppress_power_on => {
            let was_kept = kept.is_some();
            let standby = kept.or_else(|| {
                starting
                    .and_then(Result::ok)
                    .and_then(|thread| thread.join().ok())
                    .flatten()
            });
            let standby_ready = began.elapsed();
            lifecycle::resume_from(host, vm, &mut state, &dir, standby, user)?;
            let running = began.elapsed();
            lifecycle::keep_standby_ready(host, vm, &state);
            tracing::info!(
                vm = vm.id,
                "reverted and running {:.1} ms after the revert began: old VMM off at {:.1} ms, disk trees reverted at {:.1} ms, standby ({}) at {:.1} ms",
                lifecycle::ms(running),
                lifecycle::ms(powered_off),
                lifecycle::ms(reverted),
                if was_kept { "kept" } else { "made now" },
                lifecycle::ms(standby_ready),
            );
        }
        CapturedPower::On | CapturedPower::Suspended => {
            link_machine_state(&dir, &vm.suspend_dir()).map_err(|e| {
                faults::file_fault(
                    host.schema,
                    &dir.display().to_string(),
                    format!("cannot restore the saved state: {e}"),
                )
            })?;
            state.power = Power::Suspended;
            state.suspend_time = Some(now_micros());
            step(host, &mut journal, "state-linked")?;
        }
    }
    journal.finish();
    let message = format!("Reverted {} to snapshot '{}'", state.spec.name, meta.name);
    lifecycle::post_vm_event(host, vm, &state, "VmMessageEvent", message, user);
    Ok(())
}

/// RemoveSnapshot: deletes snapshot `uid` (and its descendants with `remove_children`). With
/// `consolidate` the disk layers nobody needs any more are merged, every other snapshot
/// reading as before; without it they stay in the chain (runtime.consolidationNeeded) until
/// ConsolidateVMDisks.
pub fn remove(
    host: &Host,
    vm: &Vm,
    uid: u32,
    remove_children: bool,
    consolidate: bool,
) -> Result<(), Fault> {
    let mut state = vm.edit(host);
    if state.snapshots.get(uid).is_none() {
        return Err(not_found(host, uid));
    }
    let mut uids = if remove_children {
        state.snapshots.subtree(uid)
    } else {
        vec![uid]
    };
    uids.reverse();
    delete_snapshots(host, vm, &mut state, &uids, consolidate)
}

/// RemoveAllSnapshots: deletes every snapshot; with `consolidate` each disk is merged into
/// its base file, without it the layers stay until ConsolidateVMDisks.
pub fn remove_all(host: &Host, vm: &Vm, consolidate: bool) -> Result<(), Fault> {
    let mut state = vm.edit(host);
    let mut uids: Vec<u32> = state.snapshots.snapshots.iter().map(|s| s.uid).collect();
    uids.reverse();
    delete_snapshots(host, vm, &mut state, &uids, consolidate)
}

fn delete_snapshots(
    host: &Host,
    vm: &Vm,
    state: &mut VmState,
    uids: &[u32],
    consolidate: bool,
) -> Result<(), Fault> {
    let intent = Intent::SnapshotRemove {
        uids: uids.to_vec(),
        consolidate,
    };
    let mut journal = begin(host, vm, intent)?;
    let mut trees =
        open_snapshotted(vm, &state.spec, &host.datastores()).map_err(|e| disk_fault(host, e))?;
    // Only the VM's own snapshots go: a linked clone's hold on a layer stays (see `clone_holds`).
    let forget = |tree: &mut DiskTree| {
        for &uid in uids {
            match tree.forget(&tree_snapshot_name(uid)) {
                Err(TreeError::NoSnapshot(_)) | Ok(()) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    };
    let result = if consolidate {
        live::with_disks_closed(host, vm, state, None, &mut journal, || {
            each(&mut trees, |tree| {
                forget(tree)?;
                tree.consolidate(&mut |_, _| true)
            })
            .map_err(|e| disk_fault(host, e))
        })
    } else {
        // Only the sidecars change: the running VM keeps its open layers.
        each(&mut trees, forget)
            .map_err(|e| disk_fault(host, e))
            .and_then(|()| step(host, &mut journal, "trees-changed"))
    };
    if result.is_ok() {
        for &uid in uids {
            state.snapshots.remove(uid);
        }
    }
    // The list follows the trees, whichever snapshots they dropped before a failure.
    let changed = reconcile::reconcile(&mut state.snapshots, &mut trees, None);
    if let Err(error) = &changed {
        tracing::warn!(vm = vm.id, "cannot re-read the disk trees: {error}");
    }
    save_list_of_task(host, vm, &state.snapshots, &mut journal)?;
    step(host, &mut journal, "listed")?;
    for &uid in uids {
        discard_memory(vm, state, uid);
    }
    journal.finish();
    refresh(host, vm, state);
    result
}

/// ConsolidateVMDisks: merges whatever layers no snapshot needs (after a failed removal).
pub fn consolidate(host: &Host, vm: &Vm) -> Result<(), Fault> {
    let mut state = vm.edit(host);
    let mut journal = begin(host, vm, Intent::Consolidate)?;
    let mut trees =
        open_snapshotted(vm, &state.spec, &host.datastores()).map_err(|e| disk_fault(host, e))?;
    let merged = live::with_disks_closed(host, vm, &state, None, &mut journal, || {
        each(&mut trees, |tree| tree.consolidate(&mut |_, _| true)).map_err(|e| disk_fault(host, e))
    });
    journal.finish();
    refresh(host, vm, &mut state);
    merged
}

/// EstimateStorageForConsolidateSnapshots: per datastore, the space removing every snapshot
/// would need while merging (StorageRequirement[]).
pub fn estimate_consolidation(host: &Host, vm: &Vm) -> Result<Value, Fault> {
    let schema = host.schema;
    let state = vm.state();
    let trees =
        open_snapshotted(vm, &state.spec, &host.datastores()).map_err(|e| disk_fault(host, e))?;
    let mut per_datastore: Vec<(String, u64)> = Vec::new();
    let persistent = state.spec.disks.iter().filter(|d| !d.mode.is_independent());
    for (tree, disk) in trees.iter().zip(persistent) {
        let estimate = super::disks::trees::estimate_without_snapshots(tree)
            .map_err(|e| disk_fault(host, e))?;
        let datastore =
            super::datastore_path::DatastorePath::parse(&vm.datastore_path_of(&disk.file_name))
                .map(|p| p.datastore)
                .unwrap_or_else(|_| vm.vmx_path.datastore.clone());
        match per_datastore.iter_mut().find(|(d, _)| *d == datastore) {
            Some((_, bytes)) => *bytes += estimate.space_needed,
            None => per_datastore.push((datastore, estimate.space_needed)),
        }
    }
    let items = per_datastore
        .into_iter()
        .map(|(datastore, bytes)| {
            DataObject::of(schema, "StorageRequirement")
                .with(schema, "datastore", MoRef::new("Datastore", datastore))
                .with(schema, "freeSpaceRequiredInKb", bytes.div_ceil(1024) as i64)
                .into()
        })
        .collect();
    Ok(Value::Array(schema.known_type("StorageRequirement"), items))
}

/// RenameSnapshot: new name and/or description.
pub fn rename(
    host: &Host,
    vm: &Vm,
    uid: u32,
    name: Option<String>,
    description: Option<String>,
) -> Result<(), Fault> {
    let schema = host.schema;
    let mut state = vm.edit(host);
    if let Some(name) = name.as_deref().filter(|n| n.is_empty() || n.len() > 80) {
        return Err(faults::invalid_snapshot_name(schema, name));
    }
    let meta = state
        .snapshots
        .get_mut(uid)
        .ok_or_else(|| not_found(host, uid))?;
    if let Some(name) = name {
        meta.name = name;
    }
    if let Some(description) = description {
        meta.description = description;
    }
    save_list(host, vm, &state.snapshots)?;
    Ok(())
}
