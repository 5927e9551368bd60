//! TaskManager: CreateCollectorForTasks.

use super::history::{create_collector, HistoryKind};
use super::{Handler, MethodTable};

/// TaskManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "TaskManager",
    methods: &[(
        "CreateCollectorForTasks",
        Handler::Sync(|call| create_collector(call, HistoryKind::Tasks, "TaskHistoryCollector")),
    )],
};
