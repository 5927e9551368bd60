//! ServiceInstance: RetrieveServiceContent (anonymous; the entry point of every client) and
//! CurrentTime.

use vireo_api::Value;

use super::{Call, MethodResult};
use crate::inventory::now_micros;

/// Serves ServiceInstance methods.
pub fn handle(call: &Call<'_>, method: &str) -> MethodResult {
    match method {
        "RetrieveServiceContent" => Ok(call
            .host
            .inventory()
            .stored(call.schema, call.this(), "content")
            .cloned()),
        _ => Ok(Some(Value::DateTime(now_micros()))),
    }
}
