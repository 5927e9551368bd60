//! VirtualMachine configuration re-read: Reload, reloadVirtualMachineFromPath_Task (the `.vmx`)
//! and RefreshStorageInfo (the disks' sizes); ExtractOvfEnvironment.

use vireo_api::{Fault, Value};

use super::task;
use crate::faults;
use crate::host::Host;
use crate::methods::{Call, MethodResult};
use crate::vm::datastore_path::DatastorePath;
use crate::vm::{disks, properties, Power, Vm};

pub(super) fn reload(call: &Call<'_>) -> MethodResult {
    reload_vmx(call.host, &*call.this_vm()?, None).map(|_| None)
}

pub(super) fn reload_from_path(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    let path = call.str_arg("configurationPath")?.to_string();
    task(call, &vm, "VirtualMachine.reloadFromPath", move |h, vm| {
        reload_vmx(h, vm, Some(&path)).map(|_| None)
    })
}

/// ExtractOvfEnvironment: the OVF environment a VM's vApp options make. VMs here carry none
/// (ReconfigVM and CreateVM refuse vAppConfig), so it is empty, as ESXi answers for a VM
/// without vApp options.
pub(super) fn extract_ovf_environment(call: &Call<'_>) -> MethodResult {
    call.this_vm()?;
    Ok(Some(Value::from("")))
}

pub(super) fn refresh_storage_info(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    let mut state = vm.edit(call.host);
    state.disk_capacities = disks::capacities(call.host, &vm, &state.spec);
    Ok(None)
}

/// QueryUnownedFiles: the files of the VM's folder the VM does not own.
pub(super) fn query_unowned_files(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    let state = vm.state();
    let names = properties::unowned_files(&vm, &call.host.datastores(), &state);
    let items = names.into_iter().map(Value::from).collect();
    Ok(Some(Value::Array(call.schema.known_type("string"), items)))
}

/// Reload / reloadVirtualMachineFromPath: re-reads the `.vmx` (the VM must be off).
fn reload_vmx(host: &Host, vm: &Vm, path: Option<&str>) -> Result<(), Fault> {
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
    let mut state = vm.edit(host);
    if path.is_some() && state.power != Power::Off {
        return Err(faults::invalid_power_state(
            schema,
            Some(Power::Off),
            state.power,
        ));
    }
    let vmx = crate::vm::vmx_file::VmxFile::read(&vm.vmx_file)
        .map_err(|e| faults::file_not_found(schema, &vm.vmx_path.to_string(), e))?;
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
    state.disk_capacities = disks::capacities(host, vm, &state.spec);
    Ok(())
}
