//! VirtualMachine.CreateScreenshot_Task.

use super::task;
use crate::methods::{Call, MethodResult};
use crate::vm::screenshot;

pub(super) fn create(call: &Call<'_>) -> MethodResult {
    task(
        call,
        &call.this_vm()?,
        "VirtualMachine.createScreenshot",
        |h, vm| screenshot::create(h, vm).map(|path| Some(path.into())),
    )
}
