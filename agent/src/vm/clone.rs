//! VirtualMachine.CloneVM_Task: a new VM (or template) made from another's disks and config.
//! A full clone copies each disk flat into one new qcow2 in the clone's folder, sharing
//! nothing; a linked clone (createNewChildDiskBacking, from a snapshot) gets new child qcow2s
//! of the snapshot's frozen layers, which the source's trees then hold (`clone_holds`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vireo_api::{DataObject, Fault, MoRef, Value};
use vireo_disk::chain::{rebase, MergeError};
use vireo_disk::open::ImageFormat;
use vireo_disk::qcow2::{create as create_qcow2, CreateError};
use vireo_disk::OpenError;

use super::create::{apply_extra_config, check_new_name, child_of, io_fault, vmx_file_name};
use super::datastore_path::{make_private_dir, DatastorePath};
use super::journal::{Intent, Journal};
use super::reconfig::config::{checked_memory_mb, checked_num_cpus};
use super::recovery::CLONE_SNAPSHOT_PREFIX;
use super::slots::{self, DiskSlot};
use super::snapshots::{self, clone_holds, NewSnapshot};
use super::spec::{DiskSpec, VmSpec};
use super::{lifecycle, macs, question, uuid, Power, Vm};
use crate::events::post_event;
use crate::faults;
use crate::host::Host;

/// How the clone gets its disks (the relocate spec's diskMoveType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiskMove {
    /// Each disk copied flat into the clone's folder.
    Copy,
    /// Each disk a new child of the source snapshot's layer.
    Child,
}

/// What a VirtualMachineCloneSpec asks for.
struct CloneSpec {
    name: String,
    datastore: String,
    disk_move: DiskMove,
    snapshot: Option<u32>,
    template: bool,
    power_on: bool,
    config: Option<DataObject>,
    /// The clone's instanceUuid, chosen before anything is made: a linked clone's hold on the
    /// source's layers is named after it, and the journal records it.
    instance_uuid: String,
}

/// CloneVM_Task: makes the clone `name` of `source` as `spec` (a VirtualMachineCloneSpec)
/// says, powers it on when asked, and returns it.
pub fn clone_vm(
    host: &Arc<Host>,
    source: &Arc<Vm>,
    name: &str,
    spec: &DataObject,
    user: &str,
) -> Result<Arc<Vm>, Fault> {
    let wanted = read_spec(host, source, name, spec)?;
    check_new_name(host, &wanted.name, None)?;
    let datastore = DatastorePath {
        datastore: wanted.datastore.clone(),
        path: String::new(),
    };
    let vmx_path = datastore
        .join(&wanted.name)
        .join(&format!("{}.vmx", wanted.name));
    let vmx_file = vmx_path
        .parent()
        .resolve_new(&host.datastores())
        .map_err(|e| faults::invalid_datastore(host.schema, &vmx_path.datastore, e))?
        .join(vmx_file_name(&vmx_path));
    if vmx_file
        .parent()
        .is_some_and(|p| std::fs::symlink_metadata(p).is_ok())
    {
        return Err(faults::file_already_exists(
            host.schema,
            &vmx_path.parent().to_string(),
        ));
    }
    post_being_cloned(host, source, &wanted.name, user);
    let folder = vmx_file.parent().unwrap_or(Path::new("/")).to_path_buf();
    // A running VM without a chosen snapshot is copied from a temporary one (frozen layers),
    // whose uid is the next one: this is the VM's only task. Recovery deletes it when the
    // clone does not finish.
    let (power, next_uid) = {
        let state = source.state();
        (state.power, state.snapshots.last_uid + 1)
    };
    let temporary = (wanted.snapshot.is_none() && power == Power::On).then_some(next_uid);
    let intent = Intent::Clone {
        folder,
        vmx: vmx_path.to_string(),
        temporary,
        hold: (wanted.disk_move == DiskMove::Child).then(|| wanted.instance_uuid.clone()),
    };
    let schema = host.schema;
    let mut journal = Journal::begin(&source.dir, intent).map_err(|e| e.fault(schema))?;
    if temporary.is_some() {
        match temporary_snapshot(host, source, &wanted.name) {
            Ok(uid) if Some(uid) == temporary => {}
            taken => {
                journal.finish();
                let fault =
                    Fault::system_error(schema, "the temporary snapshot got another number");
                return Err(taken.err().unwrap_or(fault));
            }
        }
    }
    let made = make_clone(
        host,
        source,
        &wanted,
        &vmx_path,
        &vmx_file,
        temporary,
        &mut journal,
    );
    if let Some(uid) = temporary {
        match snapshots::remove(host, source, uid, false, true) {
            Ok(()) => journal
                .step("temporary-removed")
                .map_err(|e| e.fault(schema))?,
            Err(fault) => tracing::warn!(
                vm = source.id,
                "cannot remove the clone's temporary snapshot: {}",
                fault.message
            ),
        }
    }
    journal.finish();
    let clone = made?;
    post_cloned(host, source, &clone, user);
    if wanted.power_on {
        lifecycle::power_on(host, &clone, user)?;
    }
    Ok(clone)
}

/// Reads and checks the clone spec.
fn read_spec(host: &Host, source: &Vm, name: &str, spec: &DataObject) -> Result<CloneSpec, Fault> {
    let schema = host.schema;
    let get = |field: &str| spec.get(schema, field);
    if name.trim().is_empty() {
        return Err(Fault::invalid_argument(
            schema,
            "name",
            "The clone needs a name.",
        ));
    }
    if get("customization").is_some() {
        return Err(Fault::not_supported(
            schema,
            "Guest customization is not supported on this host.",
        ));
    }
    let location = get("location").and_then(Value::as_data);
    let at = |field: &str| location.and_then(|l| l.get(schema, field));
    if !at("disk").map(Value::items).unwrap_or_default().is_empty() {
        return Err(Fault::not_supported(
            schema,
            "Per-disk placement (location.disk) is not supported; the clone's disks go to its folder.",
        ));
    }
    let disk_move = match at("diskMoveType").and_then(Value::as_str) {
        None
        | Some("moveAllDiskBackingsAndDisallowSharing")
        | Some("moveAllDiskBackingsAndAllowSharing")
        | Some("moveAllDiskBackingsAndConsolidate") => DiskMove::Copy,
        Some("createNewChildDiskBacking") => DiskMove::Child,
        Some("moveChildMostDiskBacking") => {
            return Err(Fault::not_supported(
                schema,
                "moveChildMostDiskBacking is not supported; use createNewChildDiskBacking or a full copy.",
            ))
        }
        Some(other) => {
            return Err(Fault::invalid_argument(
                schema,
                "spec.location.diskMoveType",
                format!("unknown disk move type '{other}'"),
            ))
        }
    };
    let datastore = match at("datastore").and_then(Value::as_moref) {
        Some(ds) => host
            .datastores()
            .iter()
            .find(|d| d.moref() == *ds)
            .map(|d| d.name.clone())
            .ok_or_else(|| faults::invalid_datastore(schema, &ds.id, "no such datastore"))?,
        None => source.vmx_path.datastore.clone(),
    };
    let snapshot = match get("snapshot").and_then(Value::as_moref) {
        Some(snapshot) => Some(snapshot_of(host, source, snapshot)?),
        None => None,
    };
    if disk_move == DiskMove::Child && snapshot.is_none() {
        return Err(Fault::invalid_argument(
            schema,
            "spec.snapshot",
            "A linked clone (createNewChildDiskBacking) is made from a snapshot of the source.",
        ));
    }
    let template = get("template").and_then(Value::as_bool).unwrap_or(false);
    let power_on = get("powerOn").and_then(Value::as_bool).unwrap_or(false);
    if template && power_on {
        return Err(Fault::invalid_argument(
            schema,
            "spec.powerOn",
            "A template cannot be powered on.",
        ));
    }
    Ok(CloneSpec {
        name: name.to_string(),
        datastore,
        disk_move,
        snapshot,
        template,
        power_on,
        config: get("config").and_then(Value::as_data).cloned(),
        instance_uuid: uuid::random(),
    })
}

/// The uid of `snapshot`, which must be one of the source's snapshots (InvalidArgument).
fn snapshot_of(host: &Host, source: &Vm, snapshot: &MoRef) -> Result<u32, Fault> {
    match snapshots::resolve(host, snapshot) {
        Some((vm, uid)) if vm.id == source.id => Ok(uid),
        _ => Err(Fault::invalid_argument(
            host.schema,
            "spec.snapshot",
            format!("{} is not a snapshot of this virtual machine", snapshot.id),
        )),
    }
}

fn temporary_snapshot(host: &Arc<Host>, source: &Arc<Vm>, clone: &str) -> Result<u32, Fault> {
    let taken = snapshots::create(
        host,
        source,
        NewSnapshot {
            name: format!("{CLONE_SNAPSHOT_PREFIX}{clone}"),
            description: "taken to clone the running VM; removed when the copy is made".into(),
            memory: false,
            quiesce: false,
        },
    )?;
    snapshots::resolve(host, &taken)
        .map(|(_, uid)| uid)
        .ok_or_else(|| Fault::system_error(host.schema, "the temporary snapshot vanished"))
}

/// Makes the clone's folder, disks and `.vmx` and registers it; undoes everything on failure.
fn make_clone(
    host: &Arc<Host>,
    source: &Vm,
    wanted: &CloneSpec,
    vmx_path: &DatastorePath,
    vmx_file: &Path,
    snapshot: Option<u32>,
    journal: &mut Journal,
) -> Result<Arc<Vm>, Fault> {
    let schema = host.schema;
    let folder = vmx_file.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut spec = clone_spec(host, source, wanted)?;
    let snapshot = snapshot.or(wanted.snapshot);
    // The layers to read: the snapshot's (frozen) or the powered-off VM's current ones.
    let (layers, held) = {
        let state = source.state();
        match (wanted.disk_move, snapshot) {
            (DiskMove::Child, Some(uid)) => {
                let layers = clone_holds::hold(host, source, &state, uid, &spec.instance_uuid)?;
                (layers, true)
            }
            (_, Some(uid)) => (snapshot_layers(host, &state, uid)?, false),
            (_, None) => (
                state
                    .disk_views
                    .iter()
                    .filter_map(|v| v.active.chain.first().cloned())
                    .collect(),
                false,
            ),
        }
    };
    // Each copied disk keeps its controller and unit.
    let recorded: Vec<Option<DiskSlot>> = {
        let state = source.state();
        (0..layers.len())
            .map(|n| state.spec.disks.get(n).map(|d| d.slot))
            .collect()
    };
    let disk_slots = slots::settle(&recorded);
    let made = (|| {
        make_private_dir(&folder)
            .map_err(|e| io_fault(schema, &vmx_path.parent().to_string(), e))?;
        for (n, layer) in layers.iter().enumerate() {
            let file_name = if n == 0 {
                format!("{}.qcow2", wanted.name)
            } else {
                format!("{}_{n}.qcow2", wanted.name)
            };
            let target = folder.join(&file_name);
            make_disk(layer, &target, wanted.disk_move).map_err(|why| {
                let file = vmx_path.parent().join(&file_name).to_string();
                faults::file_fault(schema, &file, format!("{file}: {why}"))
            })?;
            spec.disks.push(DiskSpec {
                file_name,
                format: Some(ImageFormat::Qcow2),
                mode: Default::default(),
                slot: disk_slots[n],
                cache: Default::default(),
            });
        }
        journal.step("disks-copied").map_err(|e| e.fault(schema))?;
        spec.to_vmx()
            .write(vmx_file)
            .map_err(|e| io_fault(schema, &vmx_path.to_string(), e))?;
        let vm = host
            .vms
            .register(host, vmx_path, None)
            .map_err(|e| Fault::system_error(schema, e.to_string()))?;
        host.vms
            .record()
            .map_err(|e| Fault::system_error(schema, e.to_string()))?;
        journal.step("registered").map_err(|e| e.fault(schema))?;
        Ok(vm)
    })();
    if made.is_err() {
        if held {
            clone_holds::release(host, &layers, &spec.instance_uuid);
        }
        let _ = std::fs::remove_dir_all(&folder);
    }
    made
}

/// Every disk's layer of the source's snapshot `uid`.
fn snapshot_layers(host: &Host, state: &super::VmState, uid: u32) -> Result<Vec<PathBuf>, Fault> {
    state
        .disk_views
        .iter()
        .map(|view| {
            view.snapshots
                .get(&uid)
                .and_then(|s| s.chain.first().cloned())
                .ok_or_else(|| {
                    faults::invalid_state(
                        host.schema,
                        format!("a disk has no layer for snapshot {uid}"),
                    )
                })
        })
        .collect()
}

/// Why a clone disk could not be made.
#[derive(Debug, thiserror::Error)]
enum CloneDiskError {
    /// The source layer could not be read.
    #[error("cannot read {0}")]
    Read(#[from] OpenError),
    /// The new image could not be created.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Copying the source's data failed.
    #[error(transparent)]
    Copy(#[from] MergeError),
}

/// Makes one clone disk at `target` from the source layer `layer`: a child of it, or (Copy)
/// a child that then takes in everything its chain provides and drops the link.
fn make_disk(layer: &Path, target: &Path, how: DiskMove) -> Result<(), CloneDiskError> {
    create_qcow2(target, &child_of(target, layer)?)?;
    if how == DiskMove::Copy {
        rebase(target, None, &mut |_, _| true)?;
    }
    Ok(())
}

/// The clone's configuration: the source's, with its own name, identities and MACs, the
/// template flag asked for, and spec.config's CPU, memory, annotation, guest and extraConfig.
fn clone_spec(host: &Host, source: &Vm, wanted: &CloneSpec) -> Result<VmSpec, Fault> {
    let schema = host.schema;
    let mut spec = source.state().spec.clone();
    spec.name = wanted.name.clone();
    spec.renew_identity(&macs::in_use(host, None));
    // Its location is recorded when it first powers on (no "moved or copied?" for a clone).
    spec.set_extra(question::UUID_LOCATION, "");
    spec.instance_uuid = wanted.instance_uuid.clone();
    spec.template = wanted.template;
    spec.disks.clear();
    let Some(config) = &wanted.config else {
        return Ok(spec);
    };
    let get = |field: &str| config.get(schema, field);
    if !get("deviceChange")
        .map(Value::items)
        .unwrap_or_default()
        .is_empty()
    {
        return Err(Fault::not_supported(
            schema,
            "Device changes while cloning are not supported; reconfigure the clone afterwards.",
        ));
    }
    if let Some(n) = get("numCPUs").and_then(Value::as_i64) {
        spec.num_cpus = checked_num_cpus(host, n)?;
    }
    if let Some(mb) = get("memoryMB").and_then(Value::as_i64) {
        spec.memory_mb = checked_memory_mb(host, mb)?;
    }
    if let Some(annotation) = get("annotation").and_then(Value::as_str) {
        spec.annotation = annotation.to_string();
    }
    if let Some(guest_id) = get("guestId").and_then(Value::as_str) {
        spec.guest_id = guest_id.to_string();
    }
    apply_extra_config(host, &mut spec, config)?;
    Ok(spec)
}

/// VmBeingClonedEvent on the source.
fn post_being_cloned(host: &Host, source: &Vm, clone: &str, user: &str) {
    let schema = host.schema;
    let state = source.state();
    let folder = DataObject::of(schema, "FolderEventArgument")
        .with(schema, "name", "vm")
        .with(schema, "folder", MoRef::new("Folder", "ha-folder-vm"));
    let event = DataObject::of(schema, "VmBeingClonedEvent")
        .with(schema, "template", state.spec.template)
        .with(schema, "destName", clone)
        .with(schema, "destFolder", folder)
        .with(
            schema,
            "fullFormattedMessage",
            format!("Cloning {} to {clone}", state.spec.name),
        );
    drop(state);
    post_event(host, event, Some(&source.moref), user);
}

/// VmClonedEvent on the clone.
fn post_cloned(host: &Host, source: &Vm, clone: &Vm, user: &str) {
    let schema = host.schema;
    let source_name = source.state().spec.name.clone();
    let state = clone.state();
    let source_vm = DataObject::of(schema, "VmEventArgument")
        .with(schema, "name", source_name.as_str())
        .with(schema, "vm", source.moref.clone());
    let event = DataObject::of(schema, "VmClonedEvent")
        .with(schema, "template", state.spec.template)
        .with(schema, "sourceVm", source_vm)
        .with(
            schema,
            "fullFormattedMessage",
            format!("Clone of {source_name} completed: {}", state.spec.name),
        );
    drop(state);
    post_event(host, event, Some(&clone.moref), user);
}
