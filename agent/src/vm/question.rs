//! `runtime.question` and AnswerVM. A running VM whose disk cannot be written for lack of host
//! space is paused by its VMM (the guest sees no error); a watch thread per VMM hears of it
//! (`watch-stalls`) and asks ESXi's out-of-space question: Retry resumes the VM, which retries
//! the held writes (paused and asked again if the space is still missing), Cancel powers it off.
//! A VM whose `.vmx` is no longer where its identity was recorded (`uuid.location`: its files
//! were copied or moved, then registered) asks "moved or copied?" at power-on, which waits for
//! the answer: a copy gets a new BIOS UUID and new MACs, a moved VM keeps them, Cancel fails
//! the power-on. A VM that recovery after a crash of vireod found paused and could not safely
//! resume asks why (`msg.vireo.recovery.unsafe`): Retry settles it again, Cancel powers it off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, Value};
use vireo_vmm_protocol::control::{IoStalls, Request, STALL_WATCH_MS};

use super::control::{self, ControlError};
use super::lifecycle::{self, post_vm_event};
use super::{macs, recovery, uuid, Vm, VmState};
use crate::faults;
use crate::host::Host;

/// ESXi's message id for a disk out of space.
const OUT_OF_SPACE_ID: &str = "msg.hbacommon.outofspace";
/// Its choices, keyed as ESXi keys them ("1" is Cancel).
const RETRY: &str = "0";
const CANCEL: &str = "1";
/// ESXi's message id for a VM found elsewhere than its identity was recorded.
const UUID_ALTERED_ID: &str = "msg.uuid.altered";
/// Its choices, keyed as ESXi keys them.
const UUID_CANCEL: &str = "0";
const MOVED: &str = "1";
const COPIED: &str = "2";
/// The message id of a VM recovery left paused (ESXi has no such case: its VMX outlives
/// hostd's restarts without pausing).
const RESUME_UNSAFE_ID: &str = "msg.vireo.recovery.unsafe";
/// The `.vmx` key recording where the VM's identity belongs.
pub const UUID_LOCATION: &str = "uuid.location";
/// How long a power-on waits for "moved or copied?" to be answered before it gives up.
const IDENTITY_ANSWER_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

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
    /// The VM's files are not where its identity was recorded; a power-on waits.
    UuidAltered,
    /// Recovery found the VM paused by a task cut short and could not safely resume it.
    ResumeUnsafe {
        /// The question's id (`_vmxr<n>`, new at each asking).
        id: String,
        /// Why resuming is unsafe.
        reason: String,
    },
}

impl Question {
    /// The question's id.
    pub fn id(&self) -> &str {
        match self {
            Question::OutOfSpace { id, .. } => id,
            // Asked before the VMM (whose stalls number the other questions) exists.
            Question::UuidAltered => "_vmx0",
            Question::ResumeUnsafe { id, .. } => id,
        }
    }

    /// The question of a VM recovery could not safely resume, for `reason`.
    pub fn resume_unsafe(reason: String) -> Question {
        static ASKED: AtomicU64 = AtomicU64::new(1);
        let id = format!("_vmxr{}", ASKED.fetch_add(1, Ordering::Relaxed));
        Question::ResumeUnsafe { id, reason }
    }

    /// Whether the VM is paused while it waits (a running VM out of space, or left paused by
    /// recovery).
    pub fn pauses(&self) -> bool {
        matches!(
            self,
            Question::OutOfSpace { .. } | Question::ResumeUnsafe { .. }
        )
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
            Question::UuidAltered => (
                UUID_ALTERED_ID,
                "This virtual machine might have been moved or copied. In order to configure \
                 certain management and networking features, VMware ESX needs to know if this \
                 virtual machine was moved or copied. If you don't know, answer \"I Copied It\"."
                    .to_string(),
            ),
            Question::ResumeUnsafe { reason, .. } => (
                RESUME_UNSAFE_ID,
                format!(
                    "vireod stopped while a task had this virtual machine paused, and it cannot \
                     safely be resumed: {reason}. You might be able to continue this session by \
                     fixing the cause and clicking Retry. Click Cancel to power it off."
                ),
            ),
        }
    }

    /// The choices as (key, label), and the default's index.
    fn choices(&self) -> (&'static [(&'static str, &'static str)], i32) {
        match self {
            Question::OutOfSpace { .. } | Question::ResumeUnsafe { .. } => {
                (&[(RETRY, "Retry"), (CANCEL, "Cancel")], 0)
            }
            Question::UuidAltered => (
                &[
                    (UUID_CANCEL, "Cancel"),
                    (MOVED, "I Moved It"),
                    (COPIED, "I Copied It"),
                ],
                2,
            ),
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
    let other = state
        .question
        .as_ref()
        .is_some_and(|q| !matches!(q, Question::OutOfSpace { .. }));
    if other {
        // Recovery's question: the VM is stunned, no disk can be held meanwhile.
        return state.unpublished();
    }
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
            return Err(crate::faults::concurrent_access(
                schema,
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
    tracing::info!(vm = vm.id, id, choice, "question answered");
    if question == Question::UuidAltered {
        // The power-on waiting for it carries on.
        state.answer = Some(choice.to_string());
        vm.notify();
    }
    drop(state);
    match (question, choice) {
        (Question::OutOfSpace { .. }, RETRY) => {
            let socket = vm.run_dir.join("control.sock");
            control::command(&socket, Request::Resume, Duration::from_secs(10))
                .map_err(|e| Fault::system_error(schema, e.to_string()))
        }
        (Question::ResumeUnsafe { .. }, RETRY) => {
            recovery::retry(host, vm);
            Ok(())
        }
        (Question::OutOfSpace { .. } | Question::ResumeUnsafe { .. }, _) => {
            lifecycle::power_off(host, vm)
        }
        (Question::UuidAltered, _) => Ok(()),
    }
}

/// Where the VM's identity belongs: the `.vmx` form of a hash of its `.vmx`'s host path.
fn location_of(vm: &Vm) -> String {
    let path = std::fs::canonicalize(&vm.vmx_file).unwrap_or_else(|_| vm.vmx_file.clone());
    let digest = ring::digest::digest(&ring::digest::SHA256, path.as_os_str().as_encoded_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::to_vmx(&uuid::from_bytes(&bytes))
}

/// Before a power-on (of a VM that may power on): a VM found elsewhere than its recorded
/// location asks "moved or copied?" and waits for the answer; a copy then gets a new identity.
/// The location is recorded in the `.vmx` (silently the first time). Cancel, or no answer,
/// fails the power-on (RequestCanceled).
pub fn confirm_identity(host: &Host, vm: &Vm) -> Result<(), Fault> {
    let schema = host.schema;
    let here = location_of(vm);
    let recorded = vm.state().spec.extra(UUID_LOCATION).map(str::to_owned);
    match recorded {
        Some(recorded) if recorded == here => return Ok(()),
        Some(_) => {
            {
                let mut state = vm.edit(host);
                state.question = Some(Question::UuidAltered);
                state.answer = None;
            }
            let waited = vm.wait_until(vm.state(), IDENTITY_ANSWER_TIMEOUT, |s| {
                s.answer.is_some() || s.removed
            });
            drop(waited);
            let used = macs::in_use(host, Some(vm.id));
            let mut state = vm.edit(host);
            state.question = None;
            match state.answer.take().as_deref() {
                Some(COPIED) => state.spec.renew_identity(&used),
                Some(MOVED) => {}
                _ => {
                    return Err(faults::request_canceled(
                        schema,
                        "The question \"moved or copied?\" was answered Cancel.",
                    ))
                }
            }
        }
        None => {}
    }
    let mut state = vm.edit(host);
    state.spec.set_extra(UUID_LOCATION, &here);
    state
        .spec
        .to_vmx()
        .write(&vm.vmx_file)
        .map_err(|e| faults::file_fault(schema, &vm.vmx_path.to_string(), e))
}
