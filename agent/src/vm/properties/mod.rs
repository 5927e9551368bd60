//! What clients read of a VM: the VirtualMachine object's properties built from its spec and
//! runtime state, and its links into the host tree (folder, pool, host, datastore, network).
//! [`publish`] rewrites them after every change, which wakes WaitForUpdates callers; a
//! [`VmEdit`] (`Vm::edit`) publishes when a change ends, so none is forgotten. One child per
//! property family: [`config`] (config, summary.config, capability), [`devices`]
//! (config.hardware.device), [`runtime`] (runtime, quickStats), [`guest`] (guest,
//! summary.guest), [`layout`] (layoutEx, storage).

mod config;
pub(crate) mod devices;
mod edit;
mod guest;
mod layout;
mod runtime;
#[cfg(test)]
mod tests;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, MoRef, Value};

use super::disks::trees::DiskState;
use super::question::overall_status;
use super::snapshots::properties as snapshot_properties;
use super::{Vm, VmState};
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::Inventory;
pub use config::{capability as vm_capability, change_version, option_values};
pub use devices::{DISK_KEY, NIC_KEY};
pub use edit::VmEdit;
pub use layout::unowned_files;

/// Writes every property of `vm` into the inventory (inserting and linking it if new); only
/// through a [`VmEdit`] ending.
fn publish(host: &Host, vm: &Vm, state: &VmState) {
    if state.removed {
        return;
    }
    let schema = host.schema;
    let built = Built::new(host, vm, state);
    host.mutate(|inv| {
        let obj = &vm.moref;
        if inv.get(obj).is_none() {
            inv.insert(schema, obj.clone(), None);
            inv.set(schema, obj, "parent", refs::vm_folder());
            let gray = Value::enumeration(schema, "ManagedEntityStatus", "gray");
            inv.set(schema, obj, "configStatus", gray);
            inv.set(schema, obj, "alarmActionsEnabled", false);
            inv.set(schema, obj, "recentTask", Value::refs(schema, []));
        }
        link(schema, inv, vm, state);
        for (name, value) in built.properties {
            inv.set(schema, obj, name, value);
        }
        for (name, value) in built.optional {
            match value {
                Some(value) => inv.set(schema, obj, name, value),
                None => inv.unset(schema, obj, name),
            }
        }
        snapshot_properties::publish_objects(schema, inv, vm, state, |meta| {
            let disks: Vec<DiskState> = state
                .disk_views
                .iter()
                .map(|v| v.snapshots.get(&meta.uid).cloned().unwrap_or_default())
                .collect();
            config::config_info(host, vm, state, &disks)
        });
    });
}

/// Adds the VM to its folder, pool, host, datastore and network lists (templates have no pool).
fn link(schema: &Schema, inv: &mut Inventory, vm: &Vm, state: &VmState) {
    let obj = &vm.moref;
    inv.push_ref(schema, &refs::vm_folder(), "childEntity", obj);
    inv.push_ref(schema, &refs::host(), "vm", obj);
    inv.push_ref(schema, &datastore(vm), "vm", obj);
    for network in networks(state) {
        if inv.get(&network).is_some() {
            inv.push_ref(schema, &network, "vm", obj);
        }
    }
    if state.spec.template {
        inv.pull_ref(schema, &refs::root_pool(), "vm", obj);
    } else {
        inv.push_ref(schema, &refs::root_pool(), "vm", obj);
    }
}

/// The Network objects of the port groups the VM's NICs are on, each once.
fn networks(state: &VmState) -> Vec<MoRef> {
    let mut networks: Vec<MoRef> = Vec::new();
    for nic in &state.spec.nics {
        let network = crate::vm::network::objects::network_of(&nic.network);
        if !networks.contains(&network) {
            networks.push(network);
        }
    }
    networks
}

/// Removes the VM object and every reference to it.
pub fn withdraw(host: &Host, vm: &Vm) {
    let schema = host.schema;
    host.mutate(|inv| {
        let obj = &vm.moref;
        inv.pull_ref(schema, &refs::vm_folder(), "childEntity", obj);
        inv.pull_ref(schema, &refs::host(), "vm", obj);
        inv.pull_ref(schema, &refs::root_pool(), "vm", obj);
        inv.pull_ref(schema, &datastore(vm), "vm", obj);
        for network in inv.all_of_type(schema, schema.known_type("Network")) {
            inv.pull_ref(schema, &network, "vm", obj);
        }
        snapshot_properties::withdraw_objects(schema, inv, vm, |_| false);
        inv.remove(obj);
    });
}

fn datastore(vm: &Vm) -> MoRef {
    MoRef::new("Datastore", vm.vmx_path.datastore.as_str())
}

fn enum_value(schema: &Schema, ty: &str, value: &str) -> Value {
    Value::enumeration(schema, ty, value)
}

/// The properties of one VM, computed outside the inventory lock.
struct Built {
    properties: Vec<(&'static str, Value)>,
    /// Optional properties: unset when `None`.
    optional: Vec<(&'static str, Option<Value>)>,
}

impl Built {
    fn new(host: &Host, vm: &Vm, state: &VmState) -> Built {
        let schema = host.schema;
        let files = layout::files(vm, &host.datastores(), state);
        let active: Vec<DiskState> = state.disk_views.iter().map(|v| v.active.clone()).collect();
        let config = config::config_info(host, vm, state, &active);
        let runtime = runtime::runtime_info(schema, state);
        let offered = guest::offered_tools_version(host);
        let guest = guest::guest_info(schema, state, offered);
        let storage = layout::storage_info(schema, vm, &files);
        let summary = DataObject::of(schema, "VirtualMachineSummary")
            .with(schema, "vm", vm.moref.clone())
            .with(schema, "runtime", runtime.clone())
            .with(
                schema,
                "guest",
                guest::guest_summary(schema, state, offered),
            )
            .with(schema, "config", config::config_summary(schema, vm, state))
            .with(schema, "storage", layout::storage_summary(schema, &files))
            .with(schema, "quickStats", runtime::quick_stats(schema, state))
            .with(
                schema,
                "overallStatus",
                enum_value(schema, "ManagedEntityStatus", overall_status(state)),
            );
        let properties: Vec<(&'static str, Value)> = vec![
            ("name", state.spec.name.as_str().into()),
            (
                "overallStatus",
                enum_value(schema, "ManagedEntityStatus", overall_status(state)),
            ),
            ("config", config.into()),
            ("runtime", runtime.into()),
            ("guest", guest.into()),
            ("summary", summary.into()),
            ("storage", storage.into()),
            (
                "layout",
                layout::layout(schema, vm, &host.datastores(), state, &files).into(),
            ),
            (
                "resourceConfig",
                config::resource_config(schema, vm, state).into(),
            ),
            (
                "layoutEx",
                layout::layout_ex(schema, vm, &host.datastores(), state, &files).into(),
            ),
            ("capability", config::capability(schema).into()),
            (
                "guestHeartbeatStatus",
                enum_value(schema, "ManagedEntityStatus", state.tools.heartbeat_color()),
            ),
            ("datastore", Value::refs(schema, [&datastore(vm)])),
            ("environmentBrowser", refs::environment_browser().into()),
            ("network", Value::refs(schema, &networks(state))),
        ];
        let optional = vec![
            // A template belongs to no resource pool.
            (
                "resourcePool",
                (!state.spec.template).then(|| refs::root_pool().into()),
            ),
            (
                "snapshot",
                snapshot_properties::snapshot_info(schema, vm, state).map(Value::from),
            ),
            (
                "rootSnapshot",
                snapshot_properties::root_snapshots(schema, vm, state),
            ),
        ];
        Built {
            properties,
            optional,
        }
    }
}
