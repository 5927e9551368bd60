//! OptionManager (`ServiceContent.setting`, `configManager.advancedOption`): the settings of
//! `crate::settings` as `supportedOption` and `setting`, QueryOptions (one key, or every key
//! under a prefix ending in `.`) and UpdateOptions (checked, kept and applied at once).

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::locks::lock;
use crate::settings::{self, SettingsError, DEFINITIONS};

/// OptionManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "OptionManager",
    methods: &[
        ("QueryOptions", Handler::Sync(query_options)),
        ("UpdateOptions", Handler::Sync(update_options)),
    ],
};

fn invalid_name(schema: &Schema, name: &str) -> Fault {
    crate::faults::invalid_name(schema, name, format!("no setting is named '{name}'"))
}

fn option_value(schema: &Schema, key: &str, value: i64) -> Value {
    DataObject::of(schema, "OptionValue")
        .with(schema, "key", key)
        .with(schema, "value", Value::Long(value))
        .into()
}

fn query_options(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let name = call.arg("name").and_then(Value::as_str).unwrap_or("");
    let settings = lock(&call.host.settings).clone();
    let found: Vec<Value> = settings
        .values(&call.host.config)
        .filter(|(key, _)| match name {
            "" => true,
            prefix if prefix.ends_with('.') => key.starts_with(prefix),
            exact => *key == exact,
        })
        .map(|(key, value)| option_value(schema, key, value))
        .collect();
    if found.is_empty() {
        return Err(invalid_name(schema, name));
    }
    Ok(Some(Value::Array(schema.known_type("OptionValue"), found)))
}

fn update_options(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let mut values = Vec::new();
    for item in call
        .arg("changedValue")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_data)
    {
        let key = item
            .get(schema, "key")
            .and_then(Value::as_str)
            .unwrap_or("");
        let value = item
            .get(schema, "value")
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                Fault::invalid_argument(schema, "changedValue", format!("{key} needs an integer"))
            })?;
        values.push((key.to_string(), value));
    }
    settings::update(call.host, &values).map_err(|e| match e {
        SettingsError::Unknown(key) => invalid_name(schema, &key),
        SettingsError::OutOfRange { .. } => {
            Fault::invalid_argument(schema, "changedValue", e.to_string())
        }
        SettingsError::File { .. } => Fault::system_error(schema, e.to_string()),
    })?;
    publish(call.host);
    Ok(None)
}

/// Publishes `supportedOption` and `setting`.
pub fn publish(host: &Host) {
    let schema = host.schema;
    let definitions: Vec<Value> = DEFINITIONS
        .iter()
        .map(|d| {
            let kind = DataObject::of(schema, "LongOption")
                .with(schema, "valueIsReadonly", false)
                .with(schema, "min", d.min)
                .with(schema, "max", d.max)
                .with(schema, "defaultValue", (d.default)(&host.config));
            DataObject::of(schema, "OptionDef")
                .with(schema, "key", d.key)
                .with(schema, "label", d.label)
                .with(schema, "summary", d.summary)
                .with(schema, "optionType", kind)
                .into()
        })
        .collect();
    let settings = lock(&host.settings).clone();
    let values: Vec<Value> = settings
        .values(&host.config)
        .map(|(key, value)| option_value(schema, key, value))
        .collect();
    host.mutate(|inv| {
        let manager = refs::option_manager();
        inv.set(
            schema,
            &manager,
            "supportedOption",
            Value::Array(schema.known_type("OptionDef"), definitions),
        );
        inv.set(
            schema,
            &manager,
            "setting",
            Value::Array(schema.known_type("OptionValue"), values),
        );
    });
}
