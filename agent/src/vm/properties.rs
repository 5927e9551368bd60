//! What clients read of a VM: the VirtualMachine object's properties (config with devices,
//! runtime, guest, summary with quickStats, storage, layoutEx, capability, ...) built from its
//! spec and runtime state, and its links into the host tree (folder, pool, host, datastore,
//! network). [`publish`] rewrites them after every change, which wakes WaitForUpdates callers.

use std::path::{Path, PathBuf};

use vireo_api::schema::Schema;
use vireo_api::{DataObject, MoRef, Value};

use super::datastore_path::DatastorePath;
use super::disks::{self, trees::DiskState};
use super::snapshots::{self, properties as snapshot_properties};
use super::{guest_os, reconfig, Power, Vm, VmState};
use crate::host::Host;
use crate::inventory::esxi::{refs, DatastoreDir};
use crate::inventory::{now_micros, Inventory};

/// Device keys, as ESXi numbers them.
const PCI_KEY: i32 = 100;
const VIDEO_KEY: i32 = 500;
const SCSI_KEY: i32 = 1000;
/// Key of the first virtual disk (the others follow in device order).
pub const DISK_KEY: i32 = 2000;
const NIC_KEY: i32 = 4000;

/// Writes every property of `vm` into the inventory (inserting and linking it if new).
pub fn publish(host: &Host, vm: &Vm, state: &VmState) {
    if state.removed {
        return;
    }
    let schema = host.schema;
    let built = Built::new(host, vm, state);
    host.mutate(|inv| {
        let obj = &vm.moref;
        if inv.get(obj).is_none() {
            inv.insert(schema, obj.clone(), None);
            inv.set(schema, obj, "parent", refs::vm_folder());
            let green = Value::enumeration(schema, "ManagedEntityStatus", "green");
            inv.set(schema, obj, "overallStatus", green);
            let gray = Value::enumeration(schema, "ManagedEntityStatus", "gray");
            inv.set(schema, obj, "configStatus", gray);
            inv.set(schema, obj, "alarmActionsEnabled", false);
            inv.set(schema, obj, "recentTask", Value::refs(schema, []));
        }
        link(schema, inv, vm, state);
        for (name, value) in built.properties {
            inv.set(schema, obj, name, value);
        }
        for (name, value) in built.optional {
            match value {
                Some(value) => inv.set(schema, obj, name, value),
                None => inv.unset(schema, obj, name),
            }
        }
        snapshot_properties::publish_objects(schema, inv, vm, state, |meta| {
            let disks: Vec<DiskState> = state
                .disk_views
                .iter()
                .map(|v| v.snapshots.get(&meta.uid).cloned().unwrap_or_default())
                .collect();
            config_info(host, vm, state, &disks)
        });
    });
}

/// Adds the VM to its folder, pool, host, datastore and network lists (templates have no pool).
fn link(schema: &Schema, inv: &mut Inventory, vm: &Vm, state: &VmState) {
    let obj = &vm.moref;
    inv.push_ref(schema, &refs::vm_folder(), "childEntity", obj);
    inv.push_ref(schema, &refs::host(), "vm", obj);
    inv.push_ref(schema, &datastore(vm), "vm", obj);
    if !state.spec.nics.is_empty() {
        inv.push_ref(schema, &refs::vm_network(), "vm", obj);
    }
    if state.spec.template {
        unlink_ref(schema, inv, &refs::root_pool(), "vm", obj);
    } else {
        inv.push_ref(schema, &refs::root_pool(), "vm", obj);
    }
}

/// Removes the VM object and every reference to it.
pub fn withdraw(host: &Host, vm: &Vm) {
    let schema = host.schema;
    host.mutate(|inv| {
        let obj = &vm.moref;
        unlink_ref(schema, inv, &refs::vm_folder(), "childEntity", obj);
        unlink_ref(schema, inv, &refs::host(), "vm", obj);
        unlink_ref(schema, inv, &refs::root_pool(), "vm", obj);
        unlink_ref(schema, inv, &datastore(vm), "vm", obj);
        unlink_ref(schema, inv, &refs::vm_network(), "vm", obj);
        snapshot_properties::withdraw_objects(schema, inv, vm, |_| false);
        inv.remove(obj);
    });
}

fn unlink_ref(schema: &Schema, inv: &mut Inventory, obj: &MoRef, name: &str, item: &MoRef) {
    if inv.get(obj).is_none() {
        return;
    }
    let kept: Vec<MoRef> = inv
        .refs(schema, obj, name)
        .into_iter()
        .filter(|r| r != item)
        .collect();
    inv.set(schema, obj, name, Value::refs(schema, &kept));
}

fn datastore(vm: &Vm) -> MoRef {
    MoRef::new("Datastore", vm.vmx_path.datastore.as_str())
}

fn enum_value(schema: &Schema, ty: &str, value: &str) -> Value {
    Value::enumeration(schema, ty, value)
}

/// The properties of one VM, computed outside the inventory lock.
struct Built {
    properties: Vec<(&'static str, Value)>,
    /// Optional properties: unset when `None`.
    optional: Vec<(&'static str, Option<Value>)>,
}

impl Built {
    fn new(host: &Host, vm: &Vm, state: &VmState) -> Built {
        let schema = host.schema;
        let files = files(vm, &host.datastores, state);
        let active: Vec<DiskState> = state.disk_views.iter().map(|v| v.active.clone()).collect();
        let config = config_info(host, vm, state, &active);
        let runtime = runtime_info(schema, state);
        let guest = guest_info(schema, state);
        let storage = storage_info(schema, vm, &files);
        let quick_stats = quick_stats(schema, state);
        let summary = DataObject::of(schema, "VirtualMachineSummary")
            .with(schema, "vm", vm.moref.clone())
            .with(schema, "runtime", runtime.clone())
            .with(schema, "guest", guest_summary(schema, state))
            .with(schema, "config", config_summary(schema, vm, state))
            .with(
                schema,
                "storage",
                DataObject::of(schema, "VirtualMachineStorageSummary")
                    .with(
                        schema,
                        "committed",
                        files.iter().map(|f| f.size).sum::<i64>(),
                    )
                    .with(schema, "uncommitted", 0i64)
                    .with(
                        schema,
                        "unshared",
                        files.iter().map(|f| f.size).sum::<i64>(),
                    )
                    .with(schema, "timestamp", Value::DateTime(now_micros())),
            )
            .with(schema, "quickStats", quick_stats)
            .with(
                schema,
                "overallStatus",
                enum_value(schema, "ManagedEntityStatus", "green"),
            );
        let mut properties: Vec<(&'static str, Value)> = vec![
            ("name", state.spec.name.as_str().into()),
            ("config", config.into()),
            ("runtime", runtime.into()),
            ("guest", guest.into()),
            ("summary", summary.into()),
            ("storage", storage.into()),
            (
                "layoutEx",
                layout_ex(schema, vm, &host.datastores, state, &files).into(),
            ),
            ("capability", capability(schema).into()),
            (
                "guestHeartbeatStatus",
                enum_value(schema, "ManagedEntityStatus", state.tools.heartbeat_color()),
            ),
            ("datastore", Value::refs(schema, [&datastore(vm)])),
            (
                "network",
                Value::refs(
                    schema,
                    state.spec.nics.first().map(|_| refs::vm_network()).as_ref(),
                ),
            ),
        ];
        if !state.spec.template {
            properties.push(("resourcePool", refs::root_pool().into()));
        }
        let optional = vec![
            (
                "snapshot",
                snapshot_properties::snapshot_info(schema, vm, state).map(Value::from),
            ),
            (
                "rootSnapshot",
                snapshot_properties::root_snapshots(schema, vm, state),
            ),
        ];
        Built {
            properties,
            optional,
        }
    }
}

/// One file of the VM as layoutEx lists it.
struct VmFile {
    name: String,
    kind: &'static str,
    size: i64,
}

/// The datastore path of a layer file of disk `disk_file_name`: where it lies in a datastore
/// (a linked clone's parents may sit in another folder), else beside the base.
fn layer_name(vm: &Vm, datastores: &[DatastoreDir], disk_file_name: &str, layer: &Path) -> String {
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
fn disk_layers(vm: &Vm, datastores: &[DatastoreDir], state: &VmState) -> Vec<(String, PathBuf)> {
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

fn files(vm: &Vm, datastores: &[DatastoreDir], state: &VmState) -> Vec<VmFile> {
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
    for (name, kind) in [("vireo-vmm.log", "log"), ("serial.log", "log")] {
        if let Some(bytes) = size(&vm.file(name)) {
            out.push(VmFile {
                name: vm.datastore_path_of(name),
                kind,
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

/// layoutEx.disk entries for one view of every disk: each chain base first, as file keys.
fn disk_layouts(
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

fn layout_ex(
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

fn storage_info(schema: &Schema, vm: &Vm, files: &[VmFile]) -> DataObject {
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

/// Capability flags this host honours; every other required flag is false.
const CAPABILITIES: &[&str] = &[
    "snapshotOperationsSupported",
    "multipleSnapshotsSupported",
    "snapshotConfigSupported",
    "poweredOffSnapshotsSupported",
    "memorySnapshotsSupported",
    "revertToSnapshotSupported",
    "quiescedSnapshotsSupported",
    "changeTrackingSupported",
];

fn capability(schema: &Schema) -> DataObject {
    let mut cap = DataObject::of(schema, "VirtualMachineCapability");
    let boolean = schema.known_type("boolean");
    for (i, field) in schema.fields(cap.ty).iter().enumerate() {
        if field.ty.ty == boolean && !field.ty.array && !field.optional {
            cap.fields[i] = Some(Value::Bool(CAPABILITIES.contains(&&*field.name)));
        }
    }
    cap
}

fn description(schema: &Schema, label: &str, summary: &str) -> DataObject {
    DataObject::of(schema, "Description")
        .with(schema, "label", label)
        .with(schema, "summary", summary)
}

/// A disk's backing: its top layer, the layers below as `parent`s, the top's changeId.
fn disk_backing(
    schema: &Schema,
    vm: &Vm,
    datastores: &[DatastoreDir],
    state: &VmState,
    index: usize,
    disk: &DiskState,
) -> DataObject {
    let file_name = &state.spec.disks[index].file_name;
    let mut backing: Option<DataObject> = None;
    let base = vec![PathBuf::from(file_name)];
    let chain = if disk.chain.is_empty() {
        &base
    } else {
        &disk.chain
    };
    for (depth, layer) in chain.iter().enumerate().rev() {
        let name = if disk.chain.is_empty() {
            vm.datastore_path_of(file_name)
        } else {
            layer_name(vm, datastores, file_name, layer)
        };
        let mut info = DataObject::of(schema, "VirtualDiskFlatVer2BackingInfo")
            .with(schema, "fileName", name)
            .with(schema, "datastore", datastore(vm))
            .with(schema, "diskMode", "persistent")
            .with(schema, "thinProvisioned", true)
            .with(schema, "split", false)
            .with(schema, "writeThrough", false)
            .with(schema, "uuid", disk_uuid(&state.spec.uuid, index));
        if depth > 0 || chain.len() > 1 {
            info.set(schema, "deltaDiskFormat", "redoLogFormat");
        }
        if depth == 0 {
            if let Some(change_id) = &disk.change_id {
                info.set(schema, "changeId", change_id.as_str());
            }
        }
        if let Some(parent) = backing.take() {
            info.set(schema, "parent", parent);
        }
        backing = Some(info);
    }
    backing.expect("a chain has a top")
}

fn devices(host: &Host, vm: &Vm, state: &VmState, disks: &[DiskState]) -> Vec<Value> {
    let schema = host.schema;
    let disk_keys: Vec<i32> = (0..state.spec.disks.len() as i32)
        .map(|n| DISK_KEY + n)
        .collect();
    let int_array = |keys: &[i32]| {
        Value::Array(
            schema.known_type("int"),
            keys.iter().map(|&k| Value::Int(k)).collect(),
        )
    };
    let mut devices: Vec<Value> = vec![
        DataObject::of(schema, "VirtualPCIController")
            .with(schema, "key", PCI_KEY)
            .with(
                schema,
                "deviceInfo",
                description(schema, "PCI controller 0", "PCI controller 0"),
            )
            .with(schema, "busNumber", 0)
            .with(schema, "device", int_array(&[VIDEO_KEY, SCSI_KEY]))
            .into(),
        DataObject::of(schema, "VirtualMachineVideoCard")
            .with(schema, "key", VIDEO_KEY)
            .with(
                schema,
                "deviceInfo",
                description(schema, "Video card ", "Video card"),
            )
            .with(schema, "controllerKey", PCI_KEY)
            .with(schema, "unitNumber", 0)
            .with(schema, "videoRamSizeInKB", 4096i64)
            .with(schema, "numDisplays", 1)
            .with(schema, "useAutoDetect", false)
            .with(schema, "enable3DSupport", false)
            .into(),
        DataObject::of(schema, "ParaVirtualSCSIController")
            .with(schema, "key", SCSI_KEY)
            .with(
                schema,
                "deviceInfo",
                description(schema, "SCSI controller 0", "VMware paravirtual SCSI"),
            )
            .with(schema, "controllerKey", PCI_KEY)
            .with(schema, "unitNumber", 3)
            .with(schema, "busNumber", 0)
            .with(schema, "device", int_array(&disk_keys))
            .with(schema, "hotAddRemove", true)
            .with(
                schema,
                "sharedBus",
                enum_value(schema, "VirtualSCSISharing", "noSharing"),
            )
            .with(schema, "scsiCtlrUnitNumber", 7)
            .into(),
    ];
    for n in 0..state.spec.disks.len() {
        let capacity = state.disk_capacities.get(n).copied().unwrap_or(0) as i64;
        let shown = disks.get(n).cloned().unwrap_or_default();
        let backing = disk_backing(schema, vm, &host.datastores, state, n, &shown);
        let label = format!("Hard disk {}", n + 1);
        devices.push(
            DataObject::of(schema, "VirtualDisk")
                .with(schema, "key", DISK_KEY + n as i32)
                .with(
                    schema,
                    "deviceInfo",
                    description(schema, &label, &format!("{} KB", capacity / 1024)),
                )
                .with(schema, "backing", backing)
                .with(schema, "controllerKey", SCSI_KEY)
                .with(
                    schema,
                    "unitNumber",
                    if n >= 7 { n as i32 + 1 } else { n as i32 },
                )
                .with(schema, "capacityInKB", capacity / 1024)
                .with(schema, "capacityInBytes", capacity)
                .into(),
        );
    }
    let connected = state.power == Power::On;
    for (n, nic) in state.spec.nics.iter().enumerate() {
        let ty = match nic.virtual_dev.as_str() {
            "e1000" => "VirtualE1000",
            "e1000e" => "VirtualE1000e",
            "vmxnet2" => "VirtualVmxnet2",
            "pcnet32" => "VirtualPCNet32",
            _ => "VirtualVmxnet3",
        };
        let backing = DataObject::of(schema, "VirtualEthernetCardNetworkBackingInfo")
            .with(schema, "deviceName", nic.network.as_str())
            .with(schema, "useAutoDetect", false)
            .with(schema, "network", refs::vm_network());
        let connectable = DataObject::of(schema, "VirtualDeviceConnectInfo")
            .with(schema, "startConnected", true)
            .with(schema, "allowGuestControl", true)
            .with(schema, "connected", connected)
            .with(schema, "status", "ok");
        let label = format!("Network adapter {}", n + 1);
        devices.push(
            DataObject::of(schema, ty)
                .with(schema, "key", NIC_KEY + n as i32)
                .with(
                    schema,
                    "deviceInfo",
                    description(schema, &label, &nic.network),
                )
                .with(schema, "backing", backing)
                .with(schema, "connectable", connectable)
                .with(schema, "controllerKey", PCI_KEY)
                .with(schema, "unitNumber", 7 + n as i32)
                .with(schema, "addressType", "manual")
                .with(schema, "macAddress", nic.mac.as_str())
                .with(schema, "wakeOnLanEnabled", false)
                .into(),
        );
    }
    devices
}

/// A disk's backing UUID derived from the VM's UUID and its index.
fn disk_uuid(vm_uuid: &str, index: usize) -> String {
    let mut uuid = vm_uuid.to_string();
    if uuid.len() == 36 {
        uuid.replace_range(34..36, &format!("{:02x}", index));
    }
    uuid
}

/// When the `.vmx` was last written, in µs since the epoch (0 when unknown).
fn modified_micros(vm: &Vm) -> i64 {
    std::fs::metadata(&vm.vmx_file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// config.changeVersion: it moves whenever the `.vmx` is written.
pub fn change_version(vm: &Vm) -> String {
    modified_micros(vm).to_string()
}

/// config as it is with `disks` as the disks' views (the VM's now, or a snapshot's).
fn config_info(host: &Host, vm: &Vm, state: &VmState, disks: &[DiskState]) -> DataObject {
    let schema = host.schema;
    let spec = &state.spec;
    let modified = modified_micros(vm);
    let dir = format!("{}/", vm.vmx_path.parent());
    let files = DataObject::of(schema, "VirtualMachineFileInfo")
        .with(schema, "vmPathName", vm.vmx_path.to_string())
        .with(schema, "logDirectory", dir.as_str())
        .with(schema, "snapshotDirectory", dir.as_str())
        .with(schema, "suspendDirectory", dir.as_str());
    let hardware = DataObject::of(schema, "VirtualHardware")
        .with(schema, "numCPU", spec.num_cpus)
        .with(schema, "memoryMB", spec.memory_mb as i32)
        .with(
            schema,
            "device",
            Value::Array(
                schema.known_type("VirtualDevice"),
                devices(host, vm, state, disks),
            ),
        );
    let extra: Vec<Value> = spec
        .extra_config
        .iter()
        .map(|(k, v)| {
            DataObject::of(schema, "OptionValue")
                .with(schema, "key", k.as_str())
                .with(schema, "value", v.as_str())
                .into()
        })
        .collect();
    let mut info = DataObject::of(schema, "VirtualMachineConfigInfo")
        .with(schema, "changeVersion", modified.to_string())
        .with(schema, "modified", Value::DateTime(modified))
        .with(schema, "name", spec.name.as_str())
        .with(schema, "guestFullName", guest_full_name(state))
        .with(schema, "version", format!("vmx-{}", spec.hw_version))
        .with(schema, "uuid", spec.uuid.as_str())
        .with(schema, "instanceUuid", spec.instance_uuid.as_str())
        .with(schema, "template", spec.template)
        .with(schema, "guestId", spec.guest_id.as_str())
        .with(schema, "alternateGuestName", "")
        .with(schema, "annotation", spec.annotation.as_str())
        .with(schema, "files", files)
        .with(schema, "firmware", "bios")
        .with(schema, "hardware", hardware)
        .with(
            schema,
            "extraConfig",
            Value::Array(schema.known_type("OptionValue"), extra),
        )
        .with(
            schema,
            "changeTrackingEnabled",
            disks::tracking_configured(state),
        );
    reconfig::settings::show(schema, spec, &mut info);
    info
}

fn guest_full_name(state: &VmState) -> String {
    state
        .tools
        .info
        .as_ref()
        .map(|i| i.os_name.clone())
        .unwrap_or_else(|| guest_os::full_name(&state.spec.guest_id))
}

fn runtime_info(schema: &Schema, state: &VmState) -> DataObject {
    let mut runtime = DataObject::of(schema, "VirtualMachineRuntimeInfo")
        .with(schema, "host", refs::host())
        .with(
            schema,
            "connectionState",
            enum_value(schema, "VirtualMachineConnectionState", "connected"),
        )
        .with(
            schema,
            "powerState",
            enum_value(schema, "VirtualMachinePowerState", state.power.as_str()),
        )
        .with(
            schema,
            "faultToleranceState",
            enum_value(schema, "VirtualMachineFaultToleranceState", "notConfigured"),
        )
        .with(schema, "toolsInstallerMounted", false)
        .with(schema, "suspendInterval", 0i64)
        .with(schema, "maxMemoryUsage", state.spec.memory_mb as i32)
        .with(schema, "numMksConnections", 0)
        .with(
            schema,
            "recordReplayState",
            enum_value(schema, "VirtualMachineRecordReplayState", "inactive"),
        )
        .with(schema, "onlineStandby", false)
        .with(
            schema,
            "consolidationNeeded",
            state.disk_views.iter().any(|v| v.consolidation_needed),
        )
        .with(schema, "paused", false);
    if let Some(boot) = state.boot_time {
        runtime.set(schema, "bootTime", Value::DateTime(boot));
    }
    if let Some(suspended) = state.suspend_time {
        runtime.set(schema, "suspendTime", Value::DateTime(suspended));
    }
    runtime
}

/// guest.toolsStatus and guest.toolsRunningStatus.
fn tools_status(state: &VmState) -> (&'static str, &'static str) {
    match (&state.tools.version, state.tools.running) {
        (Some(_), true) => ("toolsOk", "guestToolsRunning"),
        (Some(_), false) => ("toolsNotRunning", "guestToolsNotRunning"),
        (None, _) => ("toolsNotInstalled", "guestToolsNotRunning"),
    }
}

/// The address clients show: the first IPv4, else the first non-link-local address.
fn primary_ip(state: &VmState) -> Option<String> {
    let info = state.tools.info.as_ref()?;
    let all: Vec<&str> = info
        .nics
        .iter()
        .flat_map(|n| n.ips.iter())
        .map(|ip| ip.split('/').next().unwrap_or(ip))
        .collect();
    all.iter()
        .find(|ip| ip.contains('.'))
        .or_else(|| all.iter().find(|ip| !ip.starts_with("fe80")))
        .map(|ip| ip.to_string())
}

fn guest_info(schema: &Schema, state: &VmState) -> DataObject {
    let (status, running) = tools_status(state);
    let mut guest = DataObject::of(schema, "GuestInfo")
        .with(
            schema,
            "toolsStatus",
            enum_value(schema, "VirtualMachineToolsStatus", status),
        )
        .with(schema, "toolsRunningStatus", running)
        .with(
            schema,
            "toolsVersionStatus2",
            if state.tools.version.is_some() {
                "guestToolsUnmanaged"
            } else {
                "guestToolsNotInstalled"
            },
        )
        .with(schema, "guestId", state.spec.guest_id.as_str())
        .with(
            schema,
            "guestState",
            if state.power == Power::On {
                "running"
            } else {
                "notRunning"
            },
        )
        .with(schema, "appHeartbeatStatus", "appStatusGray")
        .with(schema, "guestOperationsReady", false)
        .with(schema, "interactiveGuestOperationsReady", false)
        .with(schema, "guestStateChangeSupported", state.tools.running);
    if let Some(version) = &state.tools.version {
        guest.set(schema, "toolsVersion", version.as_str());
    }
    if let Some(info) = state.tools.info.as_ref().filter(|_| state.tools.running) {
        guest.set(schema, "guestFullName", info.os_name.as_str());
        guest.set(schema, "guestFamily", format!("{}Guest", info.os_family));
        guest.set(schema, "hostName", info.hostname.as_str());
        if let Some(ip) = primary_ip(state) {
            guest.set(schema, "ipAddress", ip);
        }
        let nics: Vec<Value> = info
            .nics
            .iter()
            .map(|nic| guest_nic(schema, state, nic).into())
            .collect();
        guest.set(
            schema,
            "net",
            Value::Array(schema.known_type("GuestNicInfo"), nics),
        );
    }
    guest
}

fn guest_nic(schema: &Schema, state: &VmState, nic: &vireo_tools::protocol::NicInfo) -> DataObject {
    let device = state
        .spec
        .nics
        .iter()
        .position(|n| n.mac.eq_ignore_ascii_case(&nic.mac));
    let addresses: Vec<Value> = nic
        .ips
        .iter()
        .map(|ip| {
            let (address, prefix) = ip.split_once('/').unwrap_or((ip, "0"));
            DataObject::of(schema, "NetIpConfigInfoIpAddress")
                .with(schema, "ipAddress", address)
                .with(schema, "prefixLength", prefix.parse::<i32>().unwrap_or(0))
                .with(schema, "state", "preferred")
                .into()
        })
        .collect();
    let mut info = DataObject::of(schema, "GuestNicInfo")
        .with(
            schema,
            "ipAddress",
            Value::strings(
                schema,
                nic.ips.iter().map(|ip| ip.split('/').next().unwrap_or(ip)),
            ),
        )
        .with(schema, "macAddress", nic.mac.as_str())
        .with(schema, "connected", true)
        .with(
            schema,
            "deviceConfigId",
            device.map_or(-1, |n| NIC_KEY + n as i32),
        )
        .with(
            schema,
            "ipConfig",
            DataObject::of(schema, "NetIpConfigInfo").with(
                schema,
                "ipAddress",
                Value::Array(schema.known_type("NetIpConfigInfoIpAddress"), addresses),
            ),
        );
    if let Some(n) = device {
        info.set(schema, "network", state.spec.nics[n].network.as_str());
    }
    info
}

fn guest_summary(schema: &Schema, state: &VmState) -> DataObject {
    let (status, running) = tools_status(state);
    let mut summary = DataObject::of(schema, "VirtualMachineGuestSummary")
        .with(schema, "guestId", state.spec.guest_id.as_str())
        .with(schema, "guestFullName", guest_full_name(state))
        .with(
            schema,
            "toolsStatus",
            enum_value(schema, "VirtualMachineToolsStatus", status),
        )
        .with(schema, "toolsRunningStatus", running);
    if let Some(info) = state.tools.info.as_ref().filter(|_| state.tools.running) {
        summary.set(schema, "hostName", info.hostname.as_str());
    }
    if let Some(ip) = primary_ip(state).filter(|_| state.tools.running) {
        summary.set(schema, "ipAddress", ip);
    }
    summary
}

fn config_summary(schema: &Schema, vm: &Vm, state: &VmState) -> DataObject {
    let spec = &state.spec;
    DataObject::of(schema, "VirtualMachineConfigSummary")
        .with(schema, "name", spec.name.as_str())
        .with(schema, "template", spec.template)
        .with(schema, "vmPathName", vm.vmx_path.to_string())
        .with(schema, "memorySizeMB", spec.memory_mb as i32)
        .with(schema, "numCpu", spec.num_cpus)
        .with(schema, "numEthernetCards", spec.nics.len() as i32)
        .with(schema, "numVirtualDisks", spec.disks.len() as i32)
        .with(schema, "uuid", spec.uuid.as_str())
        .with(schema, "instanceUuid", spec.instance_uuid.as_str())
        .with(schema, "guestId", spec.guest_id.as_str())
        .with(schema, "guestFullName", guest_full_name(state))
        .with(schema, "annotation", spec.annotation.as_str())
        .with(schema, "installBootRequired", false)
        .with(schema, "tpmPresent", false)
}

/// CPU and memory use of the VMM process from /proc (at the time of the last change).
fn quick_stats(schema: &Schema, state: &VmState) -> DataObject {
    let mut stats = DataObject::of(schema, "VirtualMachineQuickStats").with(
        schema,
        "guestHeartbeatStatus",
        enum_value(schema, "ManagedEntityStatus", state.tools.heartbeat_color()),
    );
    if let Some(process) = &state.process {
        let rss_mb = std::fs::read_to_string(format!("/proc/{}/status", process.pid))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
            })
            .map(|kib| (kib / 1024) as i32)
            .unwrap_or(0);
        stats.set(schema, "hostMemoryUsage", rss_mb);
        stats.set(
            schema,
            "guestMemoryUsage",
            rss_mb.min(state.spec.memory_mb as i32),
        );
    }
    if let Some(boot) = state.boot_time {
        stats.set(
            schema,
            "uptimeSeconds",
            ((now_micros() - boot) / 1_000_000) as i32,
        );
    }
    stats
}
