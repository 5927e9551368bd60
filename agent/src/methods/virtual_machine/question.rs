//! AnswerVM: the answer to the VM's pending `runtime.question`.

use crate::methods::{Call, MethodResult};
use crate::vm::question;

pub(super) fn answer(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    let id = call.str_arg("questionId")?;
    let choice = call.str_arg("answerChoice")?;
    question::answer(call.host, &vm, id, choice).map(|()| None)
}
