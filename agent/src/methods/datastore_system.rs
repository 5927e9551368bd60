//! HostDatastoreSystem: `datastore` lists the host's datastores and `capabilities` says what
//! it can add: local (directory) datastores, not NFS or VMFS ones, whose methods answer
//! NotSupported.

use vireo_api::{DataObject, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::host::Host;
use crate::inventory::esxi::{refs, DatastoreDir};
use crate::inventory::host_config::set_section;

/// HostDatastoreSystem's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostDatastoreSystem",
    methods: &[
        ("CreateNasDatastore", Handler::Sync(no_volumes)),
        ("CreateVmfsDatastore", Handler::Sync(no_volumes)),
        ("CreateVvolDatastore", Handler::Sync(no_volumes)),
    ],
};

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
    let datastores: Vec<_> = host.datastores.iter().map(DatastoreDir::moref).collect();
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
