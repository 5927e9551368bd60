//! EnvironmentBrowser (`ha-env-browser`, the compute resource's and every VM's): the options
//! a VM may be created or reconfigured with, from [`crate::vm::config_option`].

use vireo_api::{Fault, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::vm::config_option;

/// EnvironmentBrowser's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "EnvironmentBrowser",
    methods: &[
        (
            "QueryConfigOptionDescriptor",
            Handler::Sync(|c| Ok(Some(config_option::descriptors(c.schema)))),
        ),
        ("QueryConfigOption", Handler::Sync(query_config_option)),
        ("QueryConfigOptionEx", Handler::Sync(query_config_option_ex)),
        (
            "QueryConfigTarget",
            Handler::Sync(|c| Ok(Some(config_option::config_target(c.host).into()))),
        ),
    ],
};

fn query_config_option(call: &Call<'_>) -> MethodResult {
    let key = call.arg("key").and_then(Value::as_str);
    let option = config_option::config_option(call.host, key, &[])?;
    Ok(Some(option.into()))
}

/// QueryConfigOptionEx: the spec's key and guest OS ids (every guest OS without any).
fn query_config_option_ex(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let spec = call.arg("spec").and_then(Value::as_data);
    let field = |name: &str| spec.and_then(|s| s.get(schema, name));
    let key = field("key").and_then(Value::as_str);
    let guest_ids: Vec<String> = field("guestId")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| Fault::invalid_argument(schema, "spec.guestId", "not a string"))
        })
        .collect::<Result<_, _>>()?;
    let option = config_option::config_option(call.host, key, &guest_ids)?;
    Ok(Some(option.into()))
}
