//! config (VirtualMachineConfigInfo), summary.config and capability.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Value};

use super::devices::devices;
use super::guest::guest_full_name;
use crate::host::Host;
use crate::vm::disks::{self, trees::DiskState};
use crate::vm::reconfig::allocation::{self, Resource};
use crate::vm::{reconfig, Vm, VmState};

/// Capability flags this host honours; every other required flag is false.
pub(super) const CAPABILITIES: &[&str] = &[
    "snapshotOperationsSupported",
    "multipleSnapshotsSupported",
    "snapshotConfigSupported",
    "poweredOffSnapshotsSupported",
    "memorySnapshotsSupported",
    "revertToSnapshotSupported",
    "quiescedSnapshotsSupported",
    "changeTrackingSupported",
];

/// `(key, value)` pairs as vim25 OptionValues (extraConfig as the config shows it and as an
/// import's config spec carries it).
pub fn option_values(schema: &Schema, pairs: &[(String, String)]) -> Vec<Value> {
    pairs
        .iter()
        .map(|(key, value)| {
            DataObject::of(schema, "OptionValue")
                .with(schema, "key", key.as_str())
                .with(schema, "value", value.as_str())
                .into()
        })
        .collect()
}

/// The VirtualMachineCapability of every VM: the flags in `CAPABILITIES` true, the rest false.
pub fn capability(schema: &Schema) -> DataObject {
    let mut cap = DataObject::of(schema, "VirtualMachineCapability");
    let boolean = schema.known_type("boolean");
    for (i, field) in schema.fields(cap.ty).iter().enumerate() {
        if field.ty.ty == boolean && !field.ty.array && !field.optional {
            cap.fields[i] = Some(Value::Bool(CAPABILITIES.contains(&&*field.name)));
        }
    }
    cap
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
pub(super) fn config_info(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    disks: &[DiskState],
) -> DataObject {
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
    let extra = option_values(schema, &spec.extra_config);
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
    let (cpu, memory) = allocations(schema, state);
    info.set(schema, "cpuAllocation", cpu);
    info.set(schema, "memoryAllocation", memory);
    info
}

pub(super) fn config_summary(schema: &Schema, vm: &Vm, state: &VmState) -> DataObject {
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

/// The VM's CPU and memory allocations as its `.vmx` records them.
fn allocations(schema: &Schema, state: &VmState) -> (DataObject, DataObject) {
    let spec = &state.spec;
    (
        allocation::show(schema, spec, Resource::Cpu),
        allocation::show(schema, spec, Resource::Memory),
    )
}

/// resourceConfig: the VM's allocations as a ResourceConfigSpec.
pub(super) fn resource_config(schema: &Schema, vm: &Vm, state: &VmState) -> DataObject {
    let (cpu, memory) = allocations(schema, state);
    DataObject::of(schema, "ResourceConfigSpec")
        .with(schema, "entity", vm.moref.clone())
        .with(schema, "cpuAllocation", cpu)
        .with(schema, "memoryAllocation", memory)
}
