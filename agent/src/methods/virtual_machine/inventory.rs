//! A VirtualMachine's place in the inventory: Destroy_Task (files too), UnregisterVM (files
//! stay), MarkAsTemplate and MarkAsVirtualMachine.

use std::sync::Arc;

use vireo_api::schema::Schema;
use vireo_api::{Fault, Value};

use super::task;
use crate::faults;
use crate::host::Host;
use crate::methods::{Call, MethodResult};
use crate::vm::removal::{self, DestroyError, UnregisterError};
use crate::vm::{Power, Vm};

pub(super) fn destroy(call: &Call<'_>) -> MethodResult {
    task(call, &call.this_vm()?, "VirtualMachine.destroy", destroy_vm)
}

pub(super) fn unregister(call: &Call<'_>) -> MethodResult {
    removal::unregister(call.host, &*call.this_vm()?, call.user(), false)
        .map_err(|error| unregister_fault(call.schema, error))?;
    Ok(None)
}

pub(super) fn mark_as_template(call: &Call<'_>) -> MethodResult {
    set_template(call.host, &*call.this_vm()?, true).map(|_| None)
}

pub(super) fn mark_as_virtual_machine(call: &Call<'_>) -> MethodResult {
    set_template(call.host, &*call.this_vm()?, false).map(|_| None)
}

/// Destroy_Task's work: [`removal::destroy`], its errors as faults.
fn destroy_vm(host: &Arc<Host>, vm: &Arc<Vm>) -> Result<Option<Value>, Fault> {
    let schema = host.schema;
    removal::destroy(host, vm).map_err(|error| match error {
        DestroyError::Unregister(error) => unregister_fault(schema, error),
        DestroyError::LinkedClones { ref clones, .. } => {
            faults::resource_in_use(schema, "VirtualMachine", clones, error.to_string())
        }
        DestroyError::Journal(error) => error.fault(schema),
    })?;
    Ok(None)
}

/// UnregisterVM's and Destroy_Task's fault for an [`UnregisterError`].
fn unregister_fault(schema: &Schema, error: UnregisterError) -> Fault {
    match error {
        UnregisterError::Running(power) => {
            faults::invalid_power_state(schema, Some(Power::Off), power)
        }
        UnregisterError::Inventory(error) => Fault::system_error(schema, error.to_string()),
    }
}

/// MarkAsTemplate / MarkAsVirtualMachine.
fn set_template(host: &Host, vm: &Vm, template: bool) -> Result<(), Fault> {
    let schema = host.schema;
    let mut state = vm.edit(host);
    if template && state.power != Power::Off {
        return Err(faults::invalid_power_state(
            schema,
            Some(Power::Off),
            state.power,
        ));
    }
    if state.spec.template == template {
        let what = if template {
            "already a template"
        } else {
            "not a template"
        };
        return Err(Fault::not_supported(
            schema,
            format!("{} is {what}", state.spec.name),
        ));
    }
    state.spec.template = template;
    if let Err(error) = state.spec.to_vmx().write(&vm.vmx_file) {
        state.spec.template = !template;
        return Err(faults::file_fault(schema, &vm.vmx_path.to_string(), error));
    }
    Ok(())
}
