//! HostDatastoreSystem: `datastore` lists the host's datastores and `capabilities` says what
//! it can add. CreateLocalDatastore makes a datastore of a folder beneath the configured
//! `local_datastore_root` (`datastore::local` keeps the path there) and keeps it across
//! restarts (`datastore::registry`); RemoveDatastore takes an added one away again (its files
//! stay, as on ESXi) unless a VM has files on it. NFS, VMFS and vVol datastores answer
//! NotSupported.

use vireo_api::{DataObject, Fault, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::datastore::local::{self, LocalDatastoreError};
use crate::datastore::registry::RegistryError;
use crate::faults;
use crate::host::Host;
use crate::inventory::esxi::{self, refs, DatastoreDir};
use crate::inventory::host_config::set_section;

/// HostDatastoreSystem's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostDatastoreSystem",
    methods: &[
        ("CreateLocalDatastore", Handler::Sync(create_local)),
        ("RemoveDatastore", Handler::Sync(remove)),
        ("CreateNasDatastore", Handler::Sync(no_volumes)),
        ("CreateVmfsDatastore", Handler::Sync(no_volumes)),
        ("CreateVvolDatastore", Handler::Sync(no_volumes)),
    ],
};

fn create_local(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let host = call.host;
    let name = call.str_arg("name")?;
    let path = call.str_arg("path")?;
    local::check_name(name).map_err(|e| faults::invalid_name(schema, name, e.to_string()))?;
    if let Some(existing) = host.datastores().iter().find(|d| d.name == name) {
        return Err(faults::duplicate_name(schema, name, &existing.moref()));
    }
    let dir = local::make_dir(&host.config.local_datastore_root(), path)
        .map_err(|e| local_fault(schema, e))?;
    let added = host
        .datastore_registry()
        .add(name, &dir)
        .map_err(|e| registry_fault(schema, e))?;
    tracing::info!(name, dir = %dir.display(), "local datastore added");
    host.mutate(|inv| esxi::add_datastore(schema, inv, &added));
    republish(host);
    Ok(Some(added.moref().into()))
}

fn remove(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let host = call.host;
    let obj = call.moref_arg("datastore")?;
    let datastore = host
        .datastores()
        .iter()
        .find(|d| d.moref() == *obj)
        .cloned()
        .ok_or_else(|| Fault::not_found(schema, format!("no datastore '{}'", obj.id)))?;
    let users = vms_using(host, &datastore.name);
    if !users.is_empty() {
        return Err(faults::resource_in_use(
            schema,
            "VirtualMachine",
            &users.join(", "),
            format!(
                "datastore '{}' holds files of {}; move or unregister them first",
                datastore.name,
                users.join(", ")
            ),
        ));
    }
    host.datastore_registry()
        .remove(&datastore.name)
        .map_err(|e| registry_fault(schema, e))?;
    tracing::info!(name = datastore.name, "datastore removed");
    host.mutate(|inv| esxi::remove_datastore(schema, inv, &datastore));
    republish(host);
    Ok(None)
}

/// The VMs with their configuration or a disk on datastore `name`.
fn vms_using(host: &Host, name: &str) -> Vec<String> {
    host.vms
        .all()
        .iter()
        .filter(|vm| {
            let state = vm.state();
            vm.vmx_path.datastore == name
                || state.spec.disks.iter().any(|d| {
                    crate::vm::datastore_path::DatastorePath::parse(&d.file_name)
                        .is_ok_and(|p| p.datastore == name)
                })
        })
        .map(|vm| vm.state().spec.name.clone())
        .collect()
}

/// The managers whose views list the datastores.
fn republish(host: &Host) {
    publish(host);
    super::storage_system::publish(host);
}

fn local_fault(schema: &vireo_api::Schema, error: LocalDatastoreError) -> Fault {
    let message = error.to_string();
    match error {
        LocalDatastoreError::Name { name, .. } => faults::invalid_name(schema, &name, message),
        LocalDatastoreError::Io { .. } => faults::host_config_fault(schema, message),
        _ => Fault::invalid_argument(schema, "path", message),
    }
}

fn registry_fault(schema: &vireo_api::Schema, error: RegistryError) -> Fault {
    let message = error.to_string();
    match error {
        RegistryError::DuplicateName(name) => faults::duplicate_name(
            schema,
            &name,
            &vireo_api::MoRef::new("Datastore", name.as_str()),
        ),
        RegistryError::Overlaps { .. } => Fault::invalid_argument(schema, "path", message),
        RegistryError::NotFound(_) => Fault::not_found(schema, message),
        RegistryError::Configured(_) | RegistryError::File { .. } => {
            faults::host_config_fault(schema, message)
        }
    }
}

fn no_volumes(call: &Call<'_>) -> MethodResult {
    Err(vireo_api::Fault::not_supported(
        call.schema,
        "This host keeps datastores in directories (CreateLocalDatastore); it does not mount \
         NFS shares or format VMFS or vVol volumes.",
    ))
}

/// Publishes `datastore` and `capabilities` (and `config.datastoreCapabilities`).
pub fn publish(host: &Host) {
    let schema = host.schema;
    let datastores: Vec<_> = host.datastores().iter().map(DatastoreDir::moref).collect();
    let capabilities = DataObject::of(schema, "HostDatastoreSystemCapabilities")
        .with(schema, "nfsMountCreationRequired", false)
        .with(schema, "nfsMountCreationSupported", false)
        .with(schema, "localDatastoreSupported", true)
        .with(schema, "vmfsExtentExpansionSupported", false);
    host.mutate(|inv| {
        let system = refs::datastore_system();
        inv.set(
            schema,
            &system,
            "datastore",
            Value::refs(schema, &datastores),
        );
        inv.set(schema, &system, "capabilities", capabilities.clone());
        set_section(schema, inv, "datastoreCapabilities", capabilities);
    });
}
