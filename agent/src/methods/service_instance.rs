//! ServiceInstance: RetrieveServiceContent (anonymous; the entry point of every client) and
//! CurrentTime.

use vireo_api::Value;

use super::{Call, Handler, MethodResult, MethodTable};
use crate::inventory::now_micros;

/// ServiceInstance's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "ServiceInstance",
    methods: &[
        (
            "RetrieveServiceContent",
            Handler::Sync(retrieve_service_content),
        ),
        ("CurrentTime", Handler::Sync(current_time)),
    ],
};

fn retrieve_service_content(call: &Call<'_>) -> MethodResult {
    Ok(call
        .host
        .inventory()
        .stored(call.schema, call.this(), "content")
        .cloned())
}

fn current_time(_: &Call<'_>) -> MethodResult {
    Ok(Some(Value::DateTime(now_micros())))
}
