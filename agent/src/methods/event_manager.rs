//! EventManager methods: QueryEvents over the event log and CreateCollectorForEvents.

use vireo_api::Value;

use super::history::{create_collector, matching_items, HistoryKind};
use super::{Call, Handler, MethodResult, MethodTable};

/// EventManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "EventManager",
    methods: &[
        ("QueryEvents", Handler::Sync(query_events)),
        (
            "CreateCollectorForEvents",
            Handler::Sync(|call| {
                create_collector(call, HistoryKind::Events, "EventHistoryCollector")
            }),
        ),
    ],
};

fn query_events(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let filter = call.arg("filter").and_then(Value::as_data).cloned();
    let mut events = matching_items(
        call.host,
        &call.host.inventory(),
        HistoryKind::Events,
        filter.as_ref(),
        call.user(),
    );
    events.reverse();
    if let Some(max) = filter
        .as_ref()
        .and_then(|f| f.get(schema, "maxCount"))
        .and_then(Value::as_i64)
    {
        events.truncate(max.max(0) as usize);
    }
    Ok(Some(Value::Array(
        schema.known_type("Event"),
        events.into_iter().map(Value::from).collect(),
    )))
}
