//! Task: CancelTask.

use super::{Call, Handler, MethodResult, MethodTable};

/// Task's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "Task",
    methods: &[("CancelTask", Handler::Sync(cancel))],
};

fn cancel(call: &Call<'_>) -> MethodResult {
    crate::tasks::cancel_task(call.host, call.this()).map(|_| None)
}
