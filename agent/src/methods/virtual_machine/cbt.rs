//! VirtualMachine changed block tracking: QueryChangedDiskAreas.

use vireo_api::{Fault, Value};

use crate::methods::{Call, MethodResult};
use crate::vm::change_tracking::{self, ChangeQuery};

pub(super) fn query_changed_disk_areas(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let vm = call.this_vm()?;
    let query = ChangeQuery {
        snapshot: call.arg("snapshot").and_then(Value::as_moref).cloned(),
        device_key: call
            .arg("deviceKey")
            .and_then(Value::as_i64)
            .ok_or_else(|| Fault::invalid_argument(schema, "deviceKey", "deviceKey is required"))?
            as i32,
        start_offset: call
            .arg("startOffset")
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                Fault::invalid_argument(schema, "startOffset", "startOffset is required")
            })?,
        change_id: call.str_arg("changeId")?.to_string(),
    };
    change_tracking::query(call.host, &vm, &query).map(|info| Some(info.into()))
}
