//! VirtualMachineSnapshot methods: RevertToSnapshot_Task, RemoveSnapshot_Task, RenameSnapshot.

use std::sync::Arc;

use vireo_api::{Fault, Value};

use super::virtual_machine::task;
use super::{Call, Handler, MethodResult, MethodTable};
use crate::vm::snapshots;
use crate::vm::Vm;

/// VirtualMachineSnapshot's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "VirtualMachineSnapshot",
    methods: &[
        ("RevertToSnapshot_Task", Handler::Sync(revert)),
        ("RemoveSnapshot_Task", Handler::Sync(remove)),
        ("RenameSnapshot", Handler::Sync(rename)),
    ],
};

/// The VM and snapshot uid `_this` names, or ManagedObjectNotFound.
fn this_snapshot(call: &Call<'_>) -> Result<(Arc<Vm>, u32), Fault> {
    snapshots::resolve(call.host, call.this())
        .ok_or_else(|| Fault::managed_object_not_found(call.schema, call.this()))
}

fn revert(call: &Call<'_>) -> MethodResult {
    let (vm, uid) = this_snapshot(call)?;
    let user = call.user().to_string();
    let suppress = call
        .arg("suppressPowerOn")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    task(call, &vm, "vm.Snapshot.revert", move |h, vm| {
        snapshots::revert(h, vm, Some(uid), suppress, &user).map(|_| None)
    })
}

fn remove(call: &Call<'_>) -> MethodResult {
    let (vm, uid) = this_snapshot(call)?;
    let flag = |name: &str| call.arg(name).and_then(Value::as_bool);
    let children = flag("removeChildren").unwrap_or(false);
    let consolidate = flag("consolidate").unwrap_or(true);
    task(call, &vm, "vm.Snapshot.remove", move |h, vm| {
        snapshots::remove(h, vm, uid, children, consolidate).map(|_| None)
    })
}

fn rename(call: &Call<'_>) -> MethodResult {
    let (vm, uid) = this_snapshot(call)?;
    let text = |name: &str| call.arg(name).and_then(Value::as_str).map(str::to_string);
    snapshots::rename(call.host, &vm, uid, text("name"), text("description")).map(|_| None)
}
