//! TaskManager and Task methods: CancelTask and CreateCollectorForTasks.

use vireo_api::Fault;

use super::history::{create_collector, HistoryKind};
use super::{Call, MethodResult};

/// Serves TaskManager and Task methods.
pub fn handle(call: &Call<'_>, method: &str) -> MethodResult {
    match method {
        "CancelTask" => crate::tasks::cancel_task(call.host, call.this()).map(|_| None),
        "CreateCollectorForTasks" => {
            create_collector(call, HistoryKind::Tasks, "TaskHistoryCollector")
        }
        _ => Err(Fault::not_supported(call.schema, method.to_string())),
    }
}
