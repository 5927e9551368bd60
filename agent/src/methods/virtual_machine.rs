//! VirtualMachine methods: power (as tasks), TerminateVM, guest power through the tools,
//! Destroy/Unregister, templates, CloneVM_Task, reload and storage refresh; and the Folder
//! methods that make VMs (CreateVM_Task, RegisterVM_Task).

use std::sync::Arc;

use vireo_api::{Fault, Value};
use vireo_tools::protocol::Operation;

use super::{Call, MethodResult};
use crate::host::Host;
use crate::tasks::{create_task, TaskSpec};
use crate::vm::datastore_path::DatastorePath;
use crate::vm::journal::{Intent, Journal};
use crate::vm::snapshots::clone_holds;
use crate::vm::tools_host::{self, ToolsRequestError};
use crate::vm::{clone, create, lifecycle, properties, Power, Vm};

/// Serves VirtualMachine methods.
pub fn handle(call: &Call<'_>, method: &str) -> MethodResult {
    let host = call.host;
    let schema = call.schema;
    let vm = call.this_vm()?;
    let user = call.user().to_string();
    match method {
        "PowerOnVM_Task" => task(call, &vm, "VirtualMachine.powerOn", move |h, vm| {
            lifecycle::power_on(h, vm, &user).map(|_| None)
        }),
        "PowerOffVM_Task" => task(call, &vm, "VirtualMachine.powerOff", |h, vm| {
            lifecycle::power_off(h, vm).map(|_| None)
        }),
        "ResetVM_Task" => task(call, &vm, "VirtualMachine.reset", |h, vm| {
            lifecycle::reset(h, vm).map(|_| None)
        }),
        "SuspendVM_Task" => task(call, &vm, "VirtualMachine.suspend", |h, vm| {
            lifecycle::suspend(h, vm).map(|_| None)
        }),
        "Destroy_Task" => task(call, &vm, "VirtualMachine.destroy", destroy),
        "reloadVirtualMachineFromPath_Task" => {
            let path = call.str_arg("configurationPath")?.to_string();
            task(call, &vm, "VirtualMachine.reloadFromPath", move |h, vm| {
                reload(h, vm, Some(&path)).map(|_| None)
            })
        }
        "Reload" => reload(host, &vm, None).map(|_| None),
        "TerminateVM" => lifecycle::terminate(host, &vm).map(|_| None),
        "ShutdownGuest" => guest_request(host, &vm, Operation::Shutdown),
        "RebootGuest" => guest_request(host, &vm, Operation::Reboot),
        "StandbyGuest" => guest_request(host, &vm, Operation::Standby),
        "ResetGuestInformation" => {
            let mut state = vm.state();
            state.tools.info = None;
            properties::publish(host, &vm, &state);
            Ok(None)
        }
        "RefreshStorageInfo" => {
            let mut state = vm.state();
            state.disk_capacities = lifecycle::disk_capacities(host, &vm, &state);
            properties::publish(host, &vm, &state);
            Ok(None)
        }
        "UnregisterVM" => unregister(host, &vm, &user, false).map(|_| None),
        "CloneVM_Task" => {
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
                let clone = clone::clone_vm(h, vm, &name, &spec, &user)?;
                Ok(Some(Value::MoRef(clone.moref.clone())))
            })
        }
        "MarkAsTemplate" | "MarkAsVirtualMachine" => {
            mark_as_template(host, &vm, method == "MarkAsTemplate").map(|_| None)
        }
        _ => Err(Fault::not_supported(
            schema,
            format!("{method} is not implemented by this host."),
        )),
    }
}

/// Runs `work` as a task on the VM (one mutating task per VM; TaskInProgress otherwise).
pub(crate) fn task(
    call: &Call<'_>,
    vm: &Arc<Vm>,
    description_id: &str,
    work: impl FnOnce(&Arc<Host>, &Arc<Vm>) -> Result<Option<Value>, Fault> + Send + 'static,
) -> MethodResult {
    let handle = create_task(
        call.host,
        TaskSpec {
            entity: &vm.moref,
            description_id,
            method: call.schema.method(call.request.method).name.as_ref(),
            user: call.user(),
            cancelable: false,
            mutating: true,
        },
    )?;
    let task_ref = handle.task.clone();
    let (host, vm) = (call.host.clone(), vm.clone());
    std::thread::Builder::new()
        .name(format!("task-vm{}", vm.id))
        .spawn(move || {
            handle.start();
            match work(&host, &vm) {
                Ok(result) => handle.succeed(result),
                Err(fault) => handle.fail(fault),
            }
        })
        .map_err(|e| Fault::system_error(call.schema, e.to_string()))?;
    Ok(Some(Value::MoRef(task_ref)))
}

/// Shutdown/Reboot/StandbyGuest: asks the guest tools; ToolsUnavailable without them.
fn guest_request(host: &Host, vm: &Vm, op: Operation) -> MethodResult {
    let schema = host.schema;
    let power = vm.state().power;
    if power != Power::On {
        return Err(lifecycle::invalid_power_state(host, None, power));
    }
    match tools_host::request(vm, op) {
        Ok(()) => Ok(None),
        Err(ToolsRequestError::Unavailable) => Err(Fault::new(
            schema,
            "ToolsUnavailable",
            "Cannot complete operation because VMware Tools is not running in this virtual machine.",
        )),
        Err(error) => Err(Fault::system_error(schema, error.to_string())),
    }
}

/// Destroy: deletes the VM's disks and folder, then forgets it. Only when not running.
fn destroy(host: &Arc<Host>, vm: &Arc<Vm>) -> Result<Option<Value>, Fault> {
    let schema = host.schema;
    let (disks, instance_uuid): (Vec<_>, String) = {
        let state = vm.state();
        if state.power == Power::On {
            return Err(lifecycle::invalid_power_state(
                host,
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
        let disks = state
            .spec
            .disks
            .iter()
            .filter_map(|d| vm.disk_path(&d.file_name, &host.datastores))
            .collect();
        (disks, state.spec.instance_uuid.clone())
    };
    let parents = clone_holds::parents_of(&disks);
    let intent = Intent::Destroy {
        parents: parents.clone(),
        instance_uuid: instance_uuid.clone(),
    };
    let mut journal = Journal::begin(&vm.dir, intent).map_err(|e| e.fault(schema))?;
    if let Err(fault) = unregister(host, vm, "", true) {
        journal.finish();
        return Err(fault);
    }
    journal.step("unregistered").map_err(|e| e.fault(schema))?;
    clone_holds::release(host, &parents, &instance_uuid);
    journal
        .step("holds-released")
        .map_err(|e| e.fault(schema))?;
    for disk in disks {
        if let Err(error) = std::fs::remove_file(&disk) {
            tracing::warn!(disk = %disk.display(), "cannot delete: {error}");
        }
    }
    std::fs::remove_dir_all(&vm.dir).map_err(|e| {
        Fault::new(
            schema,
            "FileFault",
            format!("cannot delete {}: {e}", vm.vmx_path.parent()),
        )
        .with(schema, "file", vm.vmx_path.parent().to_string())
    })?;
    let _ = std::fs::remove_dir_all(&vm.run_dir);
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
    Fault::new(
        schema,
        "ResourceInUse",
        format!(
            "{name} cannot be deleted: the linked clones {clones} are built on its disks; \
             destroy them or promote their disks first."
        ),
    )
    .with(schema, "type", "VirtualMachine")
    .with(schema, "name", clones.as_str())
}

/// UnregisterVM (and the end of Destroy): the VM leaves the inventory; its files stay.
fn unregister(host: &Host, vm: &Vm, user: &str, destroying: bool) -> Result<(), Fault> {
    let schema = host.schema;
    let mut state = vm.state();
    if state.power == Power::On {
        return Err(lifecycle::invalid_power_state(
            host,
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
fn mark_as_template(host: &Host, vm: &Vm, template: bool) -> Result<(), Fault> {
    let schema = host.schema;
    let mut state = vm.state();
    if template && state.power != Power::Off {
        return Err(lifecycle::invalid_power_state(
            host,
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
        return Err(Fault::new(schema, "FileFault", error.to_string()).with(
            schema,
            "file",
            vm.vmx_path.to_string(),
        ));
    }
    properties::publish(host, vm, &state);
    Ok(())
}

/// Reload / reloadVirtualMachineFromPath: re-reads the `.vmx` (the VM must be off).
fn reload(host: &Host, vm: &Vm, path: Option<&str>) -> Result<(), Fault> {
    let schema = host.schema;
    if let Some(path) = path {
        let given = DatastorePath::parse(path)
            .map_err(|e| Fault::invalid_argument(schema, "configurationPath", e.to_string()))?;
        if given != vm.vmx_path {
            return Err(Fault::not_supported(
                schema,
                "Reloading from another configuration file is not supported; register it instead.",
            ));
        }
    }
    let mut state = vm.state();
    if path.is_some() && state.power != Power::Off {
        return Err(lifecycle::invalid_power_state(
            host,
            Some(Power::Off),
            state.power,
        ));
    }
    let vmx = crate::vm::vmx_file::VmxFile::read(&vm.vmx_file).map_err(|e| {
        Fault::new(schema, "FileNotFound", e.to_string()).with(
            schema,
            "file",
            vm.vmx_path.to_string(),
        )
    })?;
    let mut spec = crate::vm::spec::VmSpec::from_vmx(&vmx, &state.spec.name);
    spec.uuid = if spec.uuid.is_empty() {
        state.spec.uuid.clone()
    } else {
        spec.uuid
    };
    spec.instance_uuid = if spec.instance_uuid.is_empty() {
        state.spec.instance_uuid.clone()
    } else {
        spec.instance_uuid
    };
    state.spec = spec;
    state.disk_capacities = lifecycle::disk_capacities(host, vm, &state);
    properties::publish(host, vm, &state);
    Ok(())
}

/// Serves Folder.CreateVM_Task and Folder.RegisterVM_Task.
pub fn handle_folder(call: &Call<'_>, method: &str) -> MethodResult {
    let schema = call.schema;
    if call.this().id.as_ref() != "ha-folder-vm" {
        return Err(Fault::not_supported(
            schema,
            "VMs live in the datacenter's VM folder (ha-folder-vm).",
        ));
    }
    let folder = call.this().clone();
    let handle = create_task(
        call.host,
        TaskSpec {
            entity: &folder,
            description_id: if method == "CreateVM_Task" {
                "Folder.createVm"
            } else {
                "Folder.registerVm"
            },
            method,
            user: call.user(),
            cancelable: false,
            mutating: false,
        },
    )?;
    let task_ref = handle.task.clone();
    let host = call.host.clone();
    let work: Box<dyn FnOnce() -> Result<Arc<Vm>, Fault> + Send> = match method {
        "CreateVM_Task" => {
            let config = call
                .arg("config")
                .and_then(Value::as_data)
                .cloned()
                .ok_or_else(|| Fault::invalid_argument(schema, "config", "config is required"))?;
            Box::new(move || create::create_vm(&host, &config))
        }
        _ => {
            let path = call.str_arg("path")?.to_string();
            let name = call.arg("name").and_then(Value::as_str).map(str::to_string);
            let as_template = call
                .arg("asTemplate")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Box::new(move || register(&host, &path, name, as_template))
        }
    };
    std::thread::spawn(move || {
        handle.start();
        match work() {
            Ok(vm) => handle.succeed(Some(Value::MoRef(vm.moref.clone()))),
            Err(fault) => handle.fail(fault),
        }
    });
    Ok(Some(Value::MoRef(task_ref)))
}

/// RegisterVM: adds an existing `.vmx` to the inventory (optionally renamed, or as a template).
fn register(
    host: &Arc<Host>,
    path: &str,
    name: Option<String>,
    as_template: bool,
) -> Result<Arc<Vm>, Fault> {
    let schema = host.schema;
    let parsed = DatastorePath::parse(path)
        .map_err(|e| Fault::invalid_argument(schema, "path", e.to_string()))?;
    let file = parsed.resolve(&host.datastores).map_err(|e| {
        Fault::new(schema, "InvalidDatastore", e.to_string()).with(
            schema,
            "name",
            parsed.datastore.as_str(),
        )
    })?;
    if !file.is_file() {
        return Err(Fault::new(
            schema,
            "NotFound",
            format!("{path} does not exist"),
        ));
    }
    if host.vms.by_path(&parsed).is_some() {
        return Err(Fault::new(
            schema,
            "AlreadyExists",
            format!("{path} is already registered"),
        )
        .with(schema, "name", path));
    }
    let vm = host
        .vms
        .register(host, &parsed, None)
        .map_err(|e| Fault::new(schema, "InvalidState", e.to_string()))?;
    {
        let mut state = vm.state();
        let mut changed = false;
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            state.spec.name = name;
            changed = true;
        }
        if as_template != state.spec.template {
            state.spec.template = as_template;
            changed = true;
        }
        if changed {
            let _ = state.spec.to_vmx().write(&vm.vmx_file);
        }
        properties::publish(host, &vm, &state);
        lifecycle::post_vm_event(
            host,
            &vm,
            &state,
            "VmRegisteredEvent",
            format!("Registered {}", state.spec.name),
            "",
        );
    }
    host.vms
        .record()
        .map_err(|e| Fault::system_error(schema, e.to_string()))?;
    Ok(vm)
}
