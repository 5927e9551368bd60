//! What clients read of a VM's snapshots: the VM's `snapshot` (VirtualMachineSnapshotInfo)
//! and `rootSnapshot`, and one VirtualMachineSnapshot object per snapshot (`config` as the
//! VM was then, with the disks' frozen chains; `childSnapshot`; `vm`). Both are unset or gone
//! when the VM has no snapshots.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, MoRef, Value};

use super::super::{Vm, VmState};
use super::snapshot_moref;
use super::vmsd::SnapshotMeta;
use crate::inventory::Inventory;

/// VirtualMachineSnapshotTree of `meta` and everything below it.
fn tree_node(schema: &Schema, vm: &Vm, state: &VmState, meta: &SnapshotMeta) -> DataObject {
    let children: Vec<Value> = state
        .snapshots
        .children(Some(meta.uid))
        .into_iter()
        .map(|child| tree_node(schema, vm, state, child).into())
        .collect();
    let mut node = DataObject::of(schema, "VirtualMachineSnapshotTree")
        .with(schema, "snapshot", snapshot_moref(vm, meta.uid))
        .with(schema, "vm", vm.moref.clone())
        .with(schema, "name", meta.name.as_str())
        .with(schema, "description", meta.description.as_str())
        .with(schema, "id", meta.uid as i32)
        .with(schema, "createTime", Value::DateTime(meta.create_time))
        .with(
            schema,
            "state",
            Value::enumeration(schema, "VirtualMachinePowerState", meta.power.as_str()),
        )
        .with(schema, "quiesced", meta.quiesced)
        .with(schema, "replaySupported", false);
    if !children.is_empty() {
        node.set(
            schema,
            "childSnapshotList",
            Value::Array(schema.known_type("VirtualMachineSnapshotTree"), children),
        );
    }
    node
}

/// The VM's `snapshot` property (None when it has no snapshots).
pub fn snapshot_info(schema: &Schema, vm: &Vm, state: &VmState) -> Option<DataObject> {
    let roots: Vec<Value> = state
        .snapshots
        .children(None)
        .into_iter()
        .map(|root| tree_node(schema, vm, state, root).into())
        .collect();
    if roots.is_empty() {
        return None;
    }
    let mut info = DataObject::of(schema, "VirtualMachineSnapshotInfo").with(
        schema,
        "rootSnapshotList",
        Value::Array(schema.known_type("VirtualMachineSnapshotTree"), roots),
    );
    if let Some(current) = state.snapshots.current {
        info.set(schema, "currentSnapshot", snapshot_moref(vm, current));
    }
    Some(info)
}

/// The VM's `rootSnapshot` property (None when it has no snapshots).
pub fn root_snapshots(schema: &Schema, vm: &Vm, state: &VmState) -> Option<Value> {
    let roots: Vec<MoRef> = state
        .snapshots
        .children(None)
        .iter()
        .map(|s| snapshot_moref(vm, s.uid))
        .collect();
    (!roots.is_empty()).then(|| Value::refs(schema, &roots))
}

/// Writes one VirtualMachineSnapshot object per snapshot (`config_of(uid)` gives its
/// config) and removes the objects of snapshots that are gone.
pub fn publish_objects(
    schema: &Schema,
    inv: &mut Inventory,
    vm: &Vm,
    state: &VmState,
    config_of: impl Fn(&SnapshotMeta) -> DataObject,
) {
    withdraw_objects(schema, inv, vm, |uid| state.snapshots.get(uid).is_some());
    for meta in &state.snapshots.snapshots {
        let obj = snapshot_moref(vm, meta.uid);
        if inv.get(&obj).is_none() {
            inv.insert(schema, obj.clone(), None);
            inv.set(schema, &obj, "vm", vm.moref.clone());
        }
        let children: Vec<MoRef> = state
            .snapshots
            .children(Some(meta.uid))
            .iter()
            .map(|c| snapshot_moref(vm, c.uid))
            .collect();
        inv.set(
            schema,
            &obj,
            "childSnapshot",
            Value::refs(schema, &children),
        );
        inv.set(schema, &obj, "config", config_of(meta));
    }
}

/// Removes the VM's snapshot objects for which `keep(uid)` is false.
pub fn withdraw_objects(schema: &Schema, inv: &mut Inventory, vm: &Vm, keep: impl Fn(u32) -> bool) {
    let prefix = format!("{}-snapshot-", vm.id);
    let ty = schema.known_type("VirtualMachineSnapshot");
    for obj in inv.all_of_type(schema, ty) {
        let uid = obj.id.strip_prefix(&prefix).and_then(|u| u.parse().ok());
        if uid.is_some_and(|uid| !keep(uid)) {
            inv.remove(&obj);
        }
    }
}
