//! A VirtualMachine's place in the inventory: Destroy_Task (files too), UnregisterVM (files
//! stay), MarkAsTemplate and MarkAsVirtualMachine.

use std::sync::Arc;

use vireo_api::{Fault, Value};

use super::task;
use crate::faults;
use crate::host::Host;
use crate::methods::{Call, MethodResult};
use crate::vm::journal::{Intent, Journal};
use crate::vm::snapshots::clone_holds;
use crate::vm::{destroy, lifecycle, properties, Power, Vm};

pub(super) fn destroy(call: &Call<'_>) -> MethodResult {
    task(call, &call.this_vm()?, "VirtualMachine.destroy", destroy_vm)
}

pub(super) fn unregister(call: &Call<'_>) -> MethodResult {
    unregister_vm(call.host, &*call.this_vm()?, call.user(), false).map(|_| None)
}

pub(super) fn mark_as_template(call: &Call<'_>) -> MethodResult {
    set_template(call.host, &*call.this_vm()?, true).map(|_| None)
}

pub(super) fn mark_as_virtual_machine(call: &Call<'_>) -> MethodResult {
    set_template(call.host, &*call.this_vm()?, false).map(|_| None)
}

/// Destroy: deletes the files the VM owns, then its folder if empty (a folder holding other
/// files stays), and forgets it. Only when not running.
pub(crate) fn destroy_vm(host: &Arc<Host>, vm: &Arc<Vm>) -> Result<Option<Value>, Fault> {
    let (bases, owned, instance_uuid) = {
        let state = vm.state();
        if state.power == Power::On {
            return Err(faults::invalid_power_state(
                host.schema,
                Some(Power::Off),
                state.power,
            ));
        }
        let holders = clone_holds::holders(host, vm, &state);
        if !holders.is_empty() {
            let name = state.spec.name.clone();
            drop(state);
            return Err(linked_clones_depend(host, vm, &name, &holders));
        }
        let bases: Vec<_> = state
            .spec
            .disks
            .iter()
            .filter_map(|d| vm.disk_path(&d.file_name, &host.datastores).ok())
            .collect();
        let owned = destroy::owned_files(vm, &state, &bases);
        (bases, owned, state.spec.instance_uuid.clone())
    };
    let parents = clone_holds::parents_of(&bases);
    let intent = Intent::Destroy {
        parents: parents.clone(),
        instance_uuid: instance_uuid.clone(),
        owned: owned.clone(),
    };
    let mut journal = Journal::begin(&vm.dir, intent).map_err(|e| e.fault(host.schema))?;
    if let Err(fault) = unregister_vm(host, vm, "", true) {
        journal.finish();
        return Err(fault);
    }
    journal
        .step("unregistered")
        .map_err(|e| e.fault(host.schema))?;
    clone_holds::release(host, &parents, &instance_uuid);
    journal
        .step("holds-released")
        .map_err(|e| e.fault(host.schema))?;
    let owned = owned.and_last(journal.path().to_path_buf());
    let _ = std::fs::remove_dir_all(&vm.run_dir);
    for kept in owned.remove() {
        tracing::warn!(folder = %kept.display(), "left in place: it holds files the VM does not own");
    }
    Ok(None)
}

/// ResourceInUse: linked clones (`holders`, their instanceUuids) are built on layers of this
/// VM's disks, so deleting them would break the clones; they must be destroyed or promoted.
fn linked_clones_depend(host: &Host, vm: &Vm, name: &str, holders: &[String]) -> Fault {
    let schema = host.schema;
    let clones: Vec<String> = host
        .vms
        .all()
        .into_iter()
        .filter(|other| other.id != vm.id)
        .filter_map(|other| {
            let state = other.state();
            holders
                .contains(&state.spec.instance_uuid)
                .then(|| state.spec.name.clone())
        })
        .collect();
    let clones = if clones.is_empty() {
        holders.join(", ")
    } else {
        clones.join(", ")
    };
    faults::resource_in_use(
        schema,
        "VirtualMachine",
        &clones,
        format!(
            "{name} cannot be deleted: the linked clones {clones} are built on its disks; \
             destroy them or promote their disks first."
        ),
    )
}

/// UnregisterVM (and the end of Destroy): the VM leaves the inventory; its files stay.
fn unregister_vm(host: &Host, vm: &Vm, user: &str, destroying: bool) -> Result<(), Fault> {
    let schema = host.schema;
    let mut state = vm.state();
    if state.power == Power::On {
        return Err(faults::invalid_power_state(
            schema,
            Some(Power::Off),
            state.power,
        ));
    }
    host.vms
        .unregister(vm)
        .map_err(|e| Fault::system_error(schema, e.to_string()))?;
    let message = if destroying {
        "deleted"
    } else {
        "unregistered"
    };
    lifecycle::post_vm_event(
        host,
        vm,
        &state,
        "VmRemovedEvent",
        format!("{} {message}", state.spec.name),
        user,
    );
    state.removed = true;
    properties::withdraw(host, vm);
    Ok(())
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
