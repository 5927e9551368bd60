//! `runtime.question` and AnswerVM. A running VM whose disk cannot be written for lack of host
//! space is paused by its VMM (the guest sees no error); a watch thread per VMM hears of it
//! (`watch-stalls`) and asks ESXi's out-of-space question: Retry resumes the VM, which retries
//! the held writes (paused and asked again if the space is still missing), Cancel powers it off.

use std::sync::Arc;
use std::time::Duration;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, Value};
use vireo_vmm_protocol::control::{IoStalls, Request, STALL_WATCH_MS};

use super::control::{self, ControlError};
use super::lifecycle::{self, post_vm_event};
use super::{Vm, VmState};
use crate::host::Host;

/// ESXi's message id for a disk out of space.
const OUT_OF_SPACE_ID: &str = "msg.hbacommon.outofspace";
/// The choices, keyed as ESXi keys them ("1" is Cancel).
const RETRY: &str = "0";
const CANCEL: &str = "1";

/// A question the VM waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// A disk's writes are held for lack of space; the VMM paused the VM.
    OutOfSpace {
        /// The question's id (`_vmx<n>`, n the VMM's stall generation).
        id: String,
        /// The file the disk writes to.
        disk: String,
    },
}

impl Question {
    /// The question's id.
    pub fn id(&self) -> &str {
        match self {
            Question::OutOfSpace { id, .. } => id,
        }
    }

    /// Whether the VM is paused while it waits (a running VM out of space).
    pub fn pauses(&self) -> bool {
        matches!(self, Question::OutOfSpace { .. })
    }

    /// ESXi's message id and its text.
    fn message(&self) -> (&'static str, String) {
        match self {
            Question::OutOfSpace { disk, .. } => (
                OUT_OF_SPACE_ID,
                format!(
                    "There is no more space for virtual disk '{disk}'. You might be able to \
                     continue this session by freeing disk space on the relevant volume, and \
                     clicking Retry. Click Cancel to terminate this session."
                ),
            ),
        }
    }

    /// The choices as (key, label), and the default's index.
    fn choices(&self) -> (&'static [(&'static str, &'static str)], i32) {
        match self {
            Question::OutOfSpace { .. } => (&[(RETRY, "Retry"), (CANCEL, "Cancel")], 0),
        }
    }

    /// The VirtualMachineQuestionInfo clients read in `runtime.question`.
    pub fn info(&self, schema: &Schema) -> DataObject {
        let (message_id, text) = self.message();
        let (choices, default) = self.choices();
        let choice_info = choices
            .iter()
            .map(|(key, label)| {
                DataObject::of(schema, "ElementDescription")
                    .with(schema, "label", *label)
                    .with(schema, "summary", *label)
                    .with(schema, "key", *key)
                    .into()
            })
            .collect();
        let choice = DataObject::of(schema, "ChoiceOption")
            .with(schema, "valueIsReadonly", false)
            .with(
                schema,
                "choiceInfo",
                Value::Array(schema.known_type("ElementDescription"), choice_info),
            )
            .with(schema, "defaultIndex", default);
        let message = DataObject::of(schema, "VirtualMachineMessage")
            .with(schema, "id", message_id)
            .with(schema, "text", text.as_str());
        DataObject::of(schema, "VirtualMachineQuestionInfo")
            .with(schema, "id", self.id())
            .with(schema, "text", format!("{message_id}:{text}").as_str())
            .with(schema, "choice", choice)
            .with(
                schema,
                "message",
                Value::Array(
                    schema.known_type("VirtualMachineMessage"),
                    vec![message.into()],
                ),
            )
    }
}

/// overallStatus: yellow while a question waits for an answer, else green.
pub fn overall_status(state: &VmState) -> &'static str {
    if state.question.is_some() {
        "yellow"
    } else {
        "green"
    }
}

/// Watches the VMM started as `generation` for disks out of space, for as long as it runs,
/// keeping the VM's question in step with them.
pub fn watch_stalls(host: Arc<Host>, vm: Arc<Vm>, generation: u64) {
    let _ = std::thread::Builder::new()
        .name(format!("stalls-vm{}", vm.id))
        .spawn(move || {
            let socket = vm.run_dir.join("control.sock");
            let timeout = Duration::from_millis(STALL_WATCH_MS) * 2;
            let mut seen = None;
            while vm.state().generation == generation {
                let request = Request::WatchStalls { seen };
                match control::call::<IoStalls>(&socket, &request, timeout) {
                    Ok(stalls) => {
                        seen = Some(stalls.generation);
                        apply(&host, &vm, generation, &stalls);
                    }
                    Err(ControlError::Refused { message, .. }) => {
                        return tracing::warn!(vm = vm.id, "stalls not watched: {message}");
                    }
                    // The VMM is ending (the generation moves) or busy: ask again.
                    Err(_) => std::thread::sleep(Duration::from_millis(500)),
                }
            }
        });
}

/// Raises the out-of-space question for the first held disk (with an error event), or
/// withdraws it once nothing is held.
fn apply(host: &Host, vm: &Vm, generation: u64, stalls: &IoStalls) {
    let mut state = vm.edit(host);
    let asked = stalls.disks.first().map(|stall| Question::OutOfSpace {
        id: format!("_vmx{}", stalls.generation),
        disk: disk_file_name(&state, stall.disk),
    });
    if state.generation != generation || state.question == asked {
        return state.unpublished();
    }
    let raised = asked.as_ref().map(|q| q.message().1);
    state.question = asked;
    if let Some(text) = raised {
        tracing::warn!(vm = vm.id, "{text}");
        let message = format!("Message on {} on ha-host: {text}", state.spec.name);
        post_vm_event(host, vm, &state, "VmMessageErrorEvent", message, "");
    }
}

/// The name of the file disk `index` writes to (its top layer).
fn disk_file_name(state: &VmState, index: usize) -> String {
    let top = state
        .disk_views
        .get(index)
        .and_then(|view| view.active.chain.first())
        .and_then(|path| path.file_name())
        .map(|name| name.to_string_lossy().into_owned());
    top.or_else(|| state.spec.disks.get(index).map(|d| d.file_name.clone()))
        .unwrap_or_else(|| format!("disk {index}"))
}

/// AnswerVM: answers the pending question `id` with `choice`. ConcurrentAccess when that
/// question is no longer pending; InvalidArgument for a choice it does not offer.
pub fn answer(host: &Host, vm: &Vm, id: &str, choice: &str) -> Result<(), Fault> {
    let schema = host.schema;
    let mut state = vm.edit(host);
    let question = match &state.question {
        Some(question) if question.id() == id => question.clone(),
        _ => {
            return Err(Fault::new(
                schema,
                "ConcurrentAccess",
                format!("The question {id} is not pending: it was answered or withdrawn."),
            ))
        }
    };
    if !question.choices().0.iter().any(|(key, _)| *key == choice) {
        return Err(Fault::invalid_argument(
            schema,
            "answerChoice",
            format!("{choice} is not a choice of question {id}"),
        ));
    }
    state.question = None;
    drop(state);
    tracing::info!(vm = vm.id, id, choice, "question answered");
    match (question, choice) {
        (Question::OutOfSpace { .. }, RETRY) => {
            let socket = vm.run_dir.join("control.sock");
            control::command(&socket, Request::Resume, Duration::from_secs(10))
                .map_err(|e| Fault::system_error(schema, e.to_string()))
        }
        (Question::OutOfSpace { .. }, _) => lifecycle::power_off(host, vm),
    }
}
