//! HostVsanSystem of a host without vSAN, answering as such an ESXi host does: `config` says
//! vSAN is disabled and QueryHostStatus reports health "unknown" in node state "disabled".
//! Enabling vSAN or claiming disks for it answers NotSupported.

use vireo_api::DataObject;

use super::{Call, Handler, MethodResult, MethodTable};
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::host_config::set_section;

/// HostVsanSystem's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostVsanSystem",
    methods: &[("QueryHostStatus", Handler::Sync(query_host_status))],
};

fn query_host_status(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let state =
        DataObject::of(schema, "VsanHostClusterStatusState").with(schema, "state", "disabled");
    Ok(Some(
        DataObject::of(schema, "VsanHostClusterStatus")
            .with(schema, "health", "unknown")
            .with(schema, "nodeState", state)
            .into(),
    ))
}

/// Publishes `config`: vSAN disabled.
pub fn publish(host: &Host) {
    let schema = host.schema;
    let config = DataObject::of(schema, "VsanHostConfigInfo")
        .with(schema, "enabled", false)
        .with(schema, "hostSystem", refs::host());
    host.mutate(|inv| {
        inv.set(schema, &refs::vsan_system(), "config", config.clone());
        set_section(schema, inv, "vsanHostConfig", config);
    });
}
