//! Folder methods that make VMs: CreateVM_Task and RegisterVM_Task (in the datacenter's VM
//! folder).

use std::sync::Arc;

use vireo_api::{Fault, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::faults;
use crate::host::Host;
use crate::tasks::run_detached;
use crate::vm::datastore_path::DatastorePath;
use crate::vm::{create, lifecycle, Vm};

/// Folder's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "Folder",
    methods: &[
        ("CreateVM_Task", Handler::Sync(create_vm)),
        ("RegisterVM_Task", Handler::Sync(register_vm)),
    ],
};

/// The work of a VM-making task.
type MakeVm = Box<dyn FnOnce() -> Result<Arc<Vm>, Fault> + Send>;

fn create_vm(call: &Call<'_>) -> MethodResult {
    in_vm_folder(call)?;
    let config = call
        .arg("config")
        .and_then(Value::as_data)
        .cloned()
        .ok_or_else(|| Fault::invalid_argument(call.schema, "config", "config is required"))?;
    let host = call.host.clone();
    vm_task(
        call,
        "Folder.createVm",
        Box::new(move || create::create_vm(&host, &config)),
    )
}

fn register_vm(call: &Call<'_>) -> MethodResult {
    in_vm_folder(call)?;
    let path = call.str_arg("path")?.to_string();
    let name = call.arg("name").and_then(Value::as_str).map(str::to_string);
    let as_template = call
        .arg("asTemplate")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let host = call.host.clone();
    vm_task(
        call,
        "Folder.registerVm",
        Box::new(move || register(&host, &path, name, as_template)),
    )
}

/// VMs live in the datacenter's VM folder only.
fn in_vm_folder(call: &Call<'_>) -> Result<(), Fault> {
    if call.this().id.as_ref() != "ha-folder-vm" {
        return Err(Fault::not_supported(
            call.schema,
            "VMs live in the datacenter's VM folder (ha-folder-vm).",
        ));
    }
    Ok(())
}

/// Runs `work` as a task on the VM folder; the task's result is the new VM.
fn vm_task(call: &Call<'_>, description_id: &str, work: MakeVm) -> MethodResult {
    let handle = call.shared_task(call.this(), description_id)?;
    let task = run_detached(handle, move |_| {
        work().map(|vm| Some(Value::MoRef(vm.moref.clone())))
    });
    Ok(Some(Value::MoRef(task)))
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
    if parsed.is_at_root() {
        return Err(Fault::invalid_argument(
            schema,
            "path",
            format!("{path}: a VM's .vmx must be in a folder of the datastore, not at its root"),
        ));
    }
    let not_found = || Fault::not_found(schema, format!("{path} does not exist"));
    let file = parsed.resolve(&host.datastores()).map_err(|e| match e {
        e if e.is_not_found() => not_found(),
        e => faults::invalid_datastore(schema, &parsed.datastore, e),
    })?;
    if !file.is_file() {
        return Err(not_found());
    }
    if host.vms.by_path(&parsed).is_some() {
        return Err(faults::already_exists(
            schema,
            path,
            format!("{path} is already registered"),
        ));
    }
    let vm = host
        .vms
        .register(host, &parsed, None)
        .map_err(|e| faults::invalid_state(schema, e.to_string()))?;
    {
        let mut state = vm.edit(host);
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
    }
    {
        let state = vm.state();
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
