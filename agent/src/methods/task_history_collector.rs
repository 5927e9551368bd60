//! TaskHistoryCollector: ReadNextTasks and ReadPreviousTasks over `history`'s scroll view.

use super::history::{read, Direction};
use super::{Handler, MethodTable};

/// TaskHistoryCollector's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "TaskHistoryCollector",
    methods: &[
        ("ReadNextTasks", Handler::Sync(|c| read(c, Direction::Next))),
        (
            "ReadPreviousTasks",
            Handler::Sync(|c| read(c, Direction::Previous)),
        ),
    ],
};
