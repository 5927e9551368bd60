//! VirtualMachine.ReconfigVM_Task, Rename_Task and UpgradeVM_Task, through
//! [`crate::vm::reconfig`].

use vireo_api::{Fault, Value};

use super::task;
use crate::methods::{Call, MethodResult};
use crate::vm::reconfig;

pub(super) fn reconfigure(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    let spec = call
        .arg("spec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument(call.schema, "spec", "spec is required"))?
        .clone();
    let user = call.user().to_string();
    task(call, &vm, "VirtualMachine.reconfigure", move |h, vm| {
        reconfig::reconfigure(h, vm, &spec, &user).map(|_| None)
    })
}

pub(super) fn rename(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    let name = call
        .arg("newName")
        .and_then(Value::as_str)
        .ok_or_else(|| Fault::invalid_argument(call.schema, "newName", "newName is required"))?
        .to_string();
    let user = call.user().to_string();
    task(call, &vm, "VirtualMachine.rename", move |h, vm| {
        reconfig::rename(h, vm, &name, &user).map(|_| None)
    })
}

pub(super) fn upgrade(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    let version = call
        .arg("version")
        .and_then(Value::as_str)
        .map(str::to_string);
    let user = call.user().to_string();
    task(
        call,
        &vm,
        "VirtualMachine.upgradeVirtualHardware",
        move |h, vm| reconfig::upgrade(h, vm, version.as_deref(), &user).map(|_| None),
    )
}
