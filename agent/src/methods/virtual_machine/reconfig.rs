//! VirtualMachine.ReconfigVM_Task: only changeTrackingEnabled is reconfigurable yet.

use vireo_api::{Fault, Value};

use super::task;
use crate::methods::{Call, MethodResult};
use crate::vm::change_tracking;

pub(super) fn reconfigure(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    let enabled = change_tracking_only(call)?;
    task(call, &vm, "VirtualMachine.reconfigure", move |h, vm| {
        change_tracking::configure(h, vm, enabled).map(|_| None)
    })
}

/// The changeTrackingEnabled of a ReconfigVM spec; other settings are not reconfigurable yet.
fn change_tracking_only(call: &Call<'_>) -> Result<bool, Fault> {
    let schema = call.schema;
    let spec = call
        .arg("spec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument(schema, "spec", "spec is required"))?;
    let field = "changeTrackingEnabled";
    let others: Vec<&str> = schema
        .fields(spec.ty)
        .iter()
        .zip(&spec.fields)
        .filter(|(f, v)| v.is_some() && &*f.name != field)
        .map(|(f, _)| &*f.name)
        .collect();
    if !others.is_empty() {
        return Err(Fault::not_supported(
            schema,
            format!(
                "This host reconfigures only changeTrackingEnabled; not {}.",
                others.join(", ")
            ),
        ));
    }
    spec.get(schema, field)
        .and_then(Value::as_bool)
        .ok_or_else(|| Fault::invalid_argument(schema, "spec", "nothing to change"))
}
