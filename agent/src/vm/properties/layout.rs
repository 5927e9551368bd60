//! The VM's files as clients see them: layoutEx (files, disk chains, snapshot layouts),
//! storage (per-datastore usage) and the files of its folder it does not own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Value};

use super::datastore;
use super::devices::DISK_KEY;
use crate::inventory::esxi::DatastoreDir;
use crate::inventory::now_micros;
use crate::vm::datastore_path::DatastorePath;
use crate::vm::disks::redo;
use crate::vm::disks::trees::{sidecar_of, DiskState};
use crate::vm::journal;
use crate::vm::logs::{self, SERIAL_LOG, VMM_LOG};
use crate::vm::snapshots;
use crate::vm::spec::DiskMode;
use crate::vm::{Vm, VmState};

/// One file of the VM as layoutEx lists it.
pub(super) struct VmFile {
    name: String,
    kind: &'static str,
    size: i64,
}

/// The datastore path of a layer file of disk `disk_file_name`: where it lies in a datastore
/// (a linked clone's parents may sit in another folder), else beside the base.
pub(super) fn layer_name(
    vm: &Vm,
    datastores: &[DatastoreDir],
    disk_file_name: &str,
    layer: &Path,
) -> String {
    if let Some(path) = DatastorePath::of_host_file(layer, datastores) {
        return path.to_string();
    }
    let file = layer
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match DatastorePath::parse(&vm.datastore_path_of(disk_file_name)) {
        Ok(base) => base.parent().join(&file).to_string(),
        Err(_) => vm.datastore_path_of(&file),
    }
}

/// Every layer file of every disk (the active chains and the snapshots' chains), once each.
pub(super) fn disk_layers(
    vm: &Vm,
    datastores: &[DatastoreDir],
    state: &VmState,
) -> Vec<(String, PathBuf)> {
    let mut layers: Vec<(String, PathBuf)> = Vec::new();
    for (disk, view) in state.spec.disks.iter().zip(&state.disk_views) {
        let chains = std::iter::once(&view.active).chain(view.snapshots.values());
        for path in chains.flat_map(|d| d.chain.iter().rev()) {
            if !layers.iter().any(|(_, p)| p == path) {
                layers.push((
                    layer_name(vm, datastores, &disk.file_name, path),
                    path.clone(),
                ));
            }
        }
    }
    layers
}

pub(super) fn files(vm: &Vm, datastores: &[DatastoreDir], state: &VmState) -> Vec<VmFile> {
    let size = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.len() as i64).ok();
    let mut out = vec![VmFile {
        name: vm.vmx_path.to_string(),
        kind: "config",
        size: size(&vm.vmx_file).unwrap_or(0),
    }];
    for (name, path) in disk_layers(vm, datastores, state) {
        out.push(VmFile {
            name,
            kind: "diskExtent",
            size: size(&path).unwrap_or(0),
        });
    }
    for overlay in redo_overlays(vm, datastores, state) {
        if let (Some(bytes), Some(name)) = (
            size(&overlay),
            DatastorePath::of_host_file(&overlay, datastores),
        ) {
            out.push(VmFile {
                name: name.to_string(),
                kind: "diskExtent",
                size: bytes,
            });
        }
    }
    let vmsd = snapshots::vmsd_path(vm);
    if let Some(bytes) = size(&vmsd) {
        let name = vmsd.file_name().unwrap_or_default().to_string_lossy();
        out.push(VmFile {
            name: vm.datastore_path_of(&name),
            kind: "snapshotList",
            size: bytes,
        });
    }
    for meta in &state.snapshots.snapshots {
        for (file, kind) in [("vm.state", "snapshotData"), ("vm.mem", "snapshotMemory")] {
            let name = format!("snapshot-{}/{file}", meta.uid);
            if let Some(bytes) = size(&vm.file(&name)) {
                out.push(VmFile {
                    name: vm.datastore_path_of(&name),
                    kind,
                    size: bytes,
                });
            }
        }
    }
    let live = [VMM_LOG, SERIAL_LOG].map(|name| vm.file(name));
    for path in live.into_iter().chain(logs::rotations(vm)) {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Some(bytes) = size(&path) {
            out.push(VmFile {
                name: vm.datastore_path_of(&name),
                kind: "log",
                size: bytes,
            });
        }
    }
    for (name, kind) in [
        ("suspend/vm.state", "suspend"),
        ("suspend/vm.mem", "suspendMemory"),
    ] {
        if let Some(bytes) = size(&vm.file(name)) {
            out.push(VmFile {
                name: vm.datastore_path_of(name),
                kind,
                size: bytes,
            });
        }
    }
    out
}

/// The redo overlays nonpersistent disks run on (while they exist).
fn redo_overlays(vm: &Vm, datastores: &[DatastoreDir], state: &VmState) -> Vec<PathBuf> {
    state
        .spec
        .disks
        .iter()
        .filter(|d| d.mode == DiskMode::IndependentNonpersistent)
        .filter_map(|d| vm.disk_path(&d.file_name, datastores).ok())
        .map(|base| redo::overlay_of(&base))
        .filter(|overlay| overlay.is_file())
        .collect()
}

/// QueryUnownedFiles: the files in the VM's folder and its subfolders that are none of its
/// own (not in layoutEx, not a disk's tree sidecar, not a task's journal), as datastore paths.
pub fn unowned_files(vm: &Vm, datastores: &[DatastoreDir], state: &VmState) -> Vec<String> {
    let mut owned: BTreeSet<String> = files(vm, datastores, state)
        .into_iter()
        .map(|f| f.name)
        .collect();
    for (_, layer) in disk_layers(vm, datastores, state) {
        if let Some(name) = DatastorePath::of_host_file(&sidecar_of(&layer), datastores) {
            owned.insert(name.to_string());
        }
    }
    let mut unowned = Vec::new();
    let mut folders = vec![vm.dir.clone()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                folders.push(path);
                continue;
            }
            let journal = entry
                .file_name()
                .to_string_lossy()
                .starts_with(journal::PREFIX);
            let name = DatastorePath::of_host_file(&path, datastores).map(|p| p.to_string());
            if let Some(name) = name.filter(|n| !journal && !owned.contains(n)) {
                unowned.push(name);
            }
        }
    }
    unowned.sort();
    unowned
}

/// layoutEx.disk entries for one view of every disk: each chain base first, as file keys.
pub(super) fn disk_layouts(
    schema: &Schema,
    vm: &Vm,
    datastores: &[DatastoreDir],
    state: &VmState,
    files: &[VmFile],
    disks: &[&DiskState],
) -> Value {
    let key_of = |name: &str| files.iter().position(|f| f.name == name).map(|k| k as i32);
    let layouts: Vec<Value> = state
        .spec
        .disks
        .iter()
        .zip(disks)
        .enumerate()
        .map(|(n, (disk, view))| {
            let units: Vec<Value> = view
                .chain
                .iter()
                .rev()
                .filter_map(|path| key_of(&layer_name(vm, datastores, &disk.file_name, path)))
                .map(|key| {
                    DataObject::of(schema, "VirtualMachineFileLayoutExDiskUnit")
                        .with(
                            schema,
                            "fileKey",
                            Value::Array(schema.known_type("int"), vec![Value::Int(key)]),
                        )
                        .into()
                })
                .collect();
            DataObject::of(schema, "VirtualMachineFileLayoutExDiskLayout")
                .with(schema, "key", DISK_KEY + n as i32)
                .with(
                    schema,
                    "chain",
                    Value::Array(
                        schema.known_type("VirtualMachineFileLayoutExDiskUnit"),
                        units,
                    ),
                )
                .into()
        })
        .collect();
    Value::Array(
        schema.known_type("VirtualMachineFileLayoutExDiskLayout"),
        layouts,
    )
}

pub(super) fn layout_ex(
    schema: &Schema,
    vm: &Vm,
    datastores: &[DatastoreDir],
    state: &VmState,
    files: &[VmFile],
) -> DataObject {
    let infos: Vec<Value> = files
        .iter()
        .enumerate()
        .map(|(key, f)| {
            DataObject::of(schema, "VirtualMachineFileLayoutExFileInfo")
                .with(schema, "key", key as i32)
                .with(schema, "name", f.name.as_str())
                .with(schema, "type", f.kind)
                .with(schema, "size", f.size)
                .with(schema, "uniqueSize", f.size)
                .with(schema, "accessible", true)
                .into()
        })
        .collect();
    let key_of = |name: &str| files.iter().position(|f| f.name == name).map(|k| k as i32);
    let active: Vec<&DiskState> = state.disk_views.iter().map(|v| &v.active).collect();
    let snapshots: Vec<Value> = state
        .snapshots
        .snapshots
        .iter()
        .map(|meta| {
            let data = |file: &str| {
                key_of(&vm.datastore_path_of(&format!("snapshot-{}/{file}", meta.uid)))
            };
            let vmsd = snapshots::vmsd_path(vm);
            let vmsd_key = key_of(
                &vm.datastore_path_of(&vmsd.file_name().unwrap_or_default().to_string_lossy()),
            );
            let disks: Vec<&DiskState> = state
                .disk_views
                .iter()
                .map(|v| v.snapshots.get(&meta.uid).unwrap_or(&v.active))
                .collect();
            DataObject::of(schema, "VirtualMachineFileLayoutExSnapshotLayout")
                .with(schema, "key", snapshots::snapshot_moref(vm, meta.uid))
                .with(
                    schema,
                    "dataKey",
                    data("vm.state").or(vmsd_key).unwrap_or(-1),
                )
                .with(schema, "memoryKey", data("vm.mem").unwrap_or(-1))
                .with(
                    schema,
                    "disk",
                    disk_layouts(schema, vm, datastores, state, files, &disks),
                )
                .into()
        })
        .collect();
    let mut layout = DataObject::of(schema, "VirtualMachineFileLayoutEx")
        .with(
            schema,
            "file",
            Value::Array(
                schema.known_type("VirtualMachineFileLayoutExFileInfo"),
                infos,
            ),
        )
        .with(
            schema,
            "disk",
            disk_layouts(schema, vm, datastores, state, files, &active),
        )
        .with(schema, "timestamp", Value::DateTime(now_micros()));
    if !snapshots.is_empty() {
        layout.set(
            schema,
            "snapshot",
            Value::Array(
                schema.known_type("VirtualMachineFileLayoutExSnapshotLayout"),
                snapshots,
            ),
        );
    }
    layout
}

pub(super) fn storage_info(schema: &Schema, vm: &Vm, files: &[VmFile]) -> DataObject {
    let used: i64 = files.iter().map(|f| f.size).sum();
    let usage = DataObject::of(schema, "VirtualMachineUsageOnDatastore")
        .with(schema, "datastore", datastore(vm))
        .with(schema, "committed", used)
        .with(schema, "uncommitted", 0i64)
        .with(schema, "unshared", used);
    DataObject::of(schema, "VirtualMachineStorageInfo")
        .with(
            schema,
            "perDatastoreUsage",
            Value::Array(
                schema.known_type("VirtualMachineUsageOnDatastore"),
                vec![usage.into()],
            ),
        )
        .with(schema, "timestamp", Value::DateTime(now_micros()))
}

/// summary.storage: what the VM's files take.
pub(super) fn storage_summary(schema: &Schema, files: &[VmFile]) -> DataObject {
    let used: i64 = files.iter().map(|f| f.size).sum();
    DataObject::of(schema, "VirtualMachineStorageSummary")
        .with(schema, "committed", used)
        .with(schema, "uncommitted", 0i64)
        .with(schema, "unshared", used)
        .with(schema, "timestamp", Value::DateTime(now_micros()))
}

/// The legacy `layout` (VirtualMachineFileLayout) of the same files as layoutEx: config and
/// log files relative to the VM folder, each disk's chain and each snapshot's files as
/// datastore paths.
pub(super) fn layout(
    schema: &Schema,
    vm: &Vm,
    datastores: &[DatastoreDir],
    state: &VmState,
    files: &[VmFile],
) -> DataObject {
    let folder = format!("{}/", vm.vmx_path.parent());
    let relative = |kind: &str| {
        let names: Vec<&str> = files
            .iter()
            .filter(|f| f.kind == kind)
            .filter_map(|f| f.name.strip_prefix(&folder))
            .collect();
        Value::strings(schema, names)
    };
    let chain = |disk_file_name: &str, view: &DiskState| {
        let names: Vec<String> = view
            .chain
            .iter()
            .rev()
            .map(|path| layer_name(vm, datastores, disk_file_name, path))
            .collect();
        Value::strings(schema, names)
    };
    let disks: Vec<Value> = state
        .spec
        .disks
        .iter()
        .zip(&state.disk_views)
        .enumerate()
        .map(|(n, (disk, view))| {
            DataObject::of(schema, "VirtualMachineFileLayoutDiskLayout")
                .with(schema, "key", DISK_KEY + n as i32)
                .with(schema, "diskFile", chain(&disk.file_name, &view.active))
                .into()
        })
        .collect();
    let snapshots: Vec<Value> = state
        .snapshots
        .snapshots
        .iter()
        .map(|meta| {
            let prefix = vm.datastore_path_of(&format!("snapshot-{}/", meta.uid));
            let own = files
                .iter()
                .filter(|f| f.name.starts_with(&prefix))
                .map(|f| f.name.clone());
            let disk_files =
                state
                    .spec
                    .disks
                    .iter()
                    .zip(&state.disk_views)
                    .filter_map(|(disk, view)| {
                        let frozen = view.snapshots.get(&meta.uid)?;
                        Some(layer_name(
                            vm,
                            datastores,
                            &disk.file_name,
                            frozen.chain.first()?,
                        ))
                    });
            DataObject::of(schema, "VirtualMachineFileLayoutSnapshotLayout")
                .with(schema, "key", snapshots::snapshot_moref(vm, meta.uid))
                .with(
                    schema,
                    "snapshotFile",
                    Value::strings(schema, own.chain(disk_files).collect::<Vec<_>>()),
                )
                .into()
        })
        .collect();
    let mut layout = DataObject::of(schema, "VirtualMachineFileLayout")
        .with(schema, "configFile", relative("snapshotList"))
        .with(schema, "logFile", relative("log"))
        .with(
            schema,
            "disk",
            Value::Array(
                schema.known_type("VirtualMachineFileLayoutDiskLayout"),
                disks,
            ),
        );
    if !snapshots.is_empty() {
        layout.set(
            schema,
            "snapshot",
            Value::Array(
                schema.known_type("VirtualMachineFileLayoutSnapshotLayout"),
                snapshots,
            ),
        );
    }
    layout
}
