//! EventHistoryCollector: ReadNextEvents and ReadPreviousEvents over `history`'s scroll view.

use super::history::{read, Direction};
use super::{Handler, MethodTable};

/// EventHistoryCollector's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "EventHistoryCollector",
    methods: &[
        (
            "ReadNextEvents",
            Handler::Sync(|c| read(c, Direction::Next)),
        ),
        (
            "ReadPreviousEvents",
            Handler::Sync(|c| read(c, Direction::Previous)),
        ),
    ],
};
