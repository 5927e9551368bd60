//! The HostSystem's `config` sections that mirror its configManager's managers: each manager
//! publishes its own properties and copies the matching section into `config` through
//! [`set_section`]; [`publish`] fills them all at start.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Value};

use super::esxi::refs;
use super::Inventory;
use crate::host::Host;

/// Sets one field of the HostSystem's `config` (HostConfigInfo), keeping the others.
pub fn set_section(schema: &Schema, inv: &mut Inventory, field: &str, value: impl Into<Value>) {
    let host = refs::host();
    let config = inv
        .stored(schema, &host, "config")
        .and_then(Value::as_data)
        .cloned()
        .unwrap_or_else(|| {
            DataObject::of(schema, "HostConfigInfo").with(schema, "host", host.clone())
        });
    inv.set(schema, &host, "config", config.with(schema, field, value));
}

/// Publishes every manager's view of the machine (and its `config` section).
pub fn publish(host: &Host) {
    use crate::methods::{
        cpu_scheduler, datastore_system, firewall_system, memory_manager, power_system,
        service_system, storage_system, vsan_system,
    };
    storage_system::publish(host);
    datastore_system::publish(host);
    vsan_system::publish(host);
    service_system::publish(host);
    firewall_system::publish(host);
    power_system::publish(host);
    cpu_scheduler::publish(host);
    memory_manager::publish(host);
}
