//! VirtualMachine.CloneVM_Task (into the datacenter's VM folder).

use vireo_api::{Fault, Value};

use super::task;
use crate::methods::{Call, MethodResult};
use crate::vm::clone::clone_vm;

pub(super) fn clone(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let vm = call.this_vm()?;
    let user = call.user().to_string();
    let folder = call
        .arg("folder")
        .and_then(Value::as_moref)
        .ok_or_else(|| Fault::invalid_argument(schema, "folder", "folder is required"))?;
    if folder.id.as_ref() != "ha-folder-vm" {
        return Err(Fault::not_supported(
            schema,
            "VMs live in the datacenter's VM folder (ha-folder-vm).",
        ));
    }
    let name = call.str_arg("name")?.to_string();
    let spec = call
        .arg("spec")
        .and_then(Value::as_data)
        .cloned()
        .ok_or_else(|| Fault::invalid_argument(schema, "spec", "spec is required"))?;
    task(call, &vm, "VirtualMachine.clone", move |h, vm| {
        let clone = clone_vm(h, vm, &name, &spec, &user)?;
        Ok(Some(Value::MoRef(clone.moref.clone())))
    })
}
