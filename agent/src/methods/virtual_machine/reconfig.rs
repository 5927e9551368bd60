//! VirtualMachine.ReconfigVM_Task: changeTrackingEnabled and deviceChange (disks, NICs) are
//! reconfigurable here.

use vireo_api::{DataObject, Fault, Value};

use super::task;
use crate::methods::{Call, MethodResult};
use crate::vm::{change_tracking, device_change};

/// The fields of a ReconfigVM spec this host applies.
const RECONFIGURABLE: &[&str] = &["changeTrackingEnabled", "deviceChange"];

pub(super) fn reconfigure(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    let spec = reconfigurable_spec(call)?;
    task(call, &vm, "VirtualMachine.reconfigure", move |h, vm| {
        let schema = h.schema;
        let changes: Vec<&Value> = spec
            .get(schema, "deviceChange")
            .map(|v| v.items().iter().collect())
            .unwrap_or_default();
        if !changes.is_empty() {
            device_change::reconfigure(h, vm, &changes)?;
        }
        if let Some(enabled) = spec
            .get(schema, "changeTrackingEnabled")
            .and_then(Value::as_bool)
        {
            change_tracking::configure(h, vm, enabled)?;
        }
        Ok(None)
    })
}

/// The ReconfigVM spec, when it sets only fields this host applies.
fn reconfigurable_spec(call: &Call<'_>) -> Result<DataObject, Fault> {
    let schema = call.schema;
    let spec = call
        .arg("spec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument(schema, "spec", "spec is required"))?;
    let others: Vec<&str> = schema
        .fields(spec.ty)
        .iter()
        .zip(&spec.fields)
        .filter(|(f, v)| v.is_some() && !RECONFIGURABLE.contains(&&*f.name))
        .map(|(f, _)| &*f.name)
        .collect();
    if !others.is_empty() {
        return Err(Fault::not_supported(
            schema,
            format!(
                "This host reconfigures only {}; not {}.",
                RECONFIGURABLE.join(", "),
                others.join(", ")
            ),
        ));
    }
    Ok(spec.clone())
}
