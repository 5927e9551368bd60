//! The HostSystem's `config` sections that mirror its configManager's managers: each manager
//! publishes its own properties and copies the matching section into `config` through
//! [`set_section`] (startup has them all publish once).

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Value};

use super::esxi::refs;
use super::Inventory;

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
