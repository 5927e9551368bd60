//! Asynchronous tasks: a Task object whose `info` goes queued → running → success/error with
//! progress, cancellation and result; at most one mutating task per entity (TaskInProgress);
//! a TaskEvent for each; finished TaskInfos kept for TaskHistoryCollectors.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use vireo_api::{DataObject, Fault, MoRef, Value};

use crate::events::post_event;
use crate::host::{lock, Host};
use crate::inventory::esxi::refs;
use crate::inventory::now_micros;

/// How many TaskInfos the history keeps, and how many tasks `recentTask` lists.
const HISTORY_LEN: usize = 1000;
const RECENT_LEN: usize = 50;

/// Busy entities and the task history.
#[derive(Default)]
pub struct TaskLog {
    busy: HashMap<MoRef, MoRef>,
    history: VecDeque<DataObject>,
    recent: VecDeque<MoRef>,
}

impl TaskLog {
    /// Every TaskInfo recorded, oldest first (running tasks with their latest state).
    pub fn history(&self) -> impl Iterator<Item = &DataObject> {
        self.history.iter()
    }
}

/// What a new task is for.
pub struct TaskSpec<'a> {
    /// The object it acts on.
    pub entity: &'a MoRef,
    /// vmodl description id, e.g. `VirtualMachine.powerOn`.
    pub description_id: &'a str,
    /// The user who asked.
    pub user: &'a str,
    /// Whether CancelTask may stop it.
    pub cancelable: bool,
    /// Whether it changes the entity (only one such task per entity at a time).
    pub mutating: bool,
}

/// A running task; finish it with [`TaskHandle::succeed`] or [`TaskHandle::fail`]. Dropping it
/// unfinished fails the task with a SystemError, so no task stays running forever.
pub struct TaskHandle {
    host: Arc<Host>,
    /// The Task object.
    pub task: MoRef,
    entity: MoRef,
    mutating: bool,
    finished: bool,
}

/// Creates a queued task, refusing with TaskInProgress if the entity is busy.
pub fn create_task(host: &Arc<Host>, spec: TaskSpec<'_>) -> Result<TaskHandle, Fault> {
    let schema = host.schema;
    let task = MoRef::new(
        "Task",
        format!(
            "haTask-{}-{}-{}",
            spec.entity.id,
            spec.description_id,
            host.next_id()
        ),
    );
    {
        let mut log = lock(&host.tasks);
        if spec.mutating {
            if let Some(busy_with) = log.busy.get(spec.entity) {
                return Err(Fault::new(
                    schema,
                    "TaskInProgress",
                    format!("Another task is already in progress on {}.", spec.entity),
                )
                .with(schema, "task", busy_with.clone()));
            }
            log.busy.insert(spec.entity.clone(), task.clone());
        }
        log.recent.push_back(task.clone());
        while log.recent.len() > RECENT_LEN {
            log.recent.pop_front();
        }
    }
    let entity_name = host
        .inventory()
        .stored(schema, spec.entity, "name")
        .and_then(|v| v.as_str().map(str::to_string));
    let now = now_micros();
    let chain_id = host.next_id() as i32;
    let mut info = DataObject::of(schema, "TaskInfo")
        .with(schema, "key", &*task.id)
        .with(schema, "task", task.clone())
        .with(
            schema,
            "name",
            spec.description_id
                .replace('.', "_")
                .split('_')
                .last()
                .unwrap_or_default()
                .to_string(),
        )
        .with(schema, "descriptionId", spec.description_id)
        .with(schema, "entity", spec.entity.clone())
        .with(
            schema,
            "state",
            Value::enumeration(schema, "TaskInfoState", "queued"),
        )
        .with(schema, "cancelled", false)
        .with(schema, "cancelable", spec.cancelable)
        .with(
            schema,
            "reason",
            DataObject::of(schema, "TaskReasonUser").with(schema, "userName", spec.user),
        )
        .with(schema, "queueTime", Value::DateTime(now))
        .with(schema, "eventChainId", chain_id);
    info.set(
        schema,
        "name",
        format!(
            "vim.{}.{}",
            spec.entity.ty,
            spec.description_id.rsplit('.').next().unwrap_or_default()
        ),
    );
    if let Some(name) = &entity_name {
        info.set(schema, "entityName", name.as_str());
    }
    let recent: Vec<MoRef> = lock(&host.tasks).recent.iter().cloned().collect();
    host.mutate(|inv| {
        inv.insert(schema, task.clone(), None);
        inv.set(schema, &task, "info", info.clone());
        inv.set(
            schema,
            &refs::task_manager(),
            "recentTask",
            Value::refs(schema, &recent),
        );
        if inv.get(spec.entity).is_some()
            && schema
                .field_index(
                    inv.get(spec.entity)
                        .map(|o| o.ty)
                        .unwrap_or(schema.well_known().any),
                    "recentTask",
                )
                .is_some()
        {
            inv.push_ref(schema, spec.entity, "recentTask", &task);
        }
    });
    record_history(host, &info);
    let event = DataObject::of(schema, "TaskEvent")
        .with(schema, "info", info)
        .with(schema, "chainId", chain_id)
        .with(
            schema,
            "fullFormattedMessage",
            format!("Task: {}", spec.description_id),
        );
    post_event(host, event, Some(spec.entity), spec.user);
    Ok(TaskHandle {
        host: host.clone(),
        task,
        entity: spec.entity.clone(),
        mutating: spec.mutating,
        finished: false,
    })
}

impl TaskHandle {
    /// Marks the task running.
    pub fn start(&self) {
        self.update(|schema, info| {
            info.set(
                schema,
                "state",
                Value::enumeration(schema, "TaskInfoState", "running"),
            );
            info.set(schema, "startTime", Value::DateTime(now_micros()));
        });
    }

    /// Sets the progress percentage.
    pub fn progress(&self, percent: i32) {
        self.update(|schema, info| {
            info.set(schema, "progress", percent.clamp(0, 100));
        });
    }

    /// Whether a client asked to cancel it.
    pub fn cancel_requested(&self) -> bool {
        let host = &self.host;
        host.inventory()
            .stored(host.schema, &self.task, "info")
            .and_then(Value::as_data)
            .and_then(|i| i.get(host.schema, "cancelled"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Completes it successfully with an optional result.
    pub fn succeed(mut self, result: Option<Value>) {
        self.finish(|schema, info| {
            info.set(
                schema,
                "state",
                Value::enumeration(schema, "TaskInfoState", "success"),
            );
            if let Some(result) = result {
                info.set(schema, "result", result);
            }
        });
    }

    /// Completes it with a fault in `info.error`.
    pub fn fail(mut self, fault: Fault) {
        self.finish(|schema, info| {
            info.set(
                schema,
                "state",
                Value::enumeration(schema, "TaskInfoState", "error"),
            );
            info.set(schema, "error", fault.localized(schema));
        });
    }

    fn finish(&mut self, outcome: impl FnOnce(&vireo_api::Schema, &mut DataObject)) {
        self.finished = true;
        self.update(|schema, info| {
            outcome(schema, info);
            info.set(schema, "completeTime", Value::DateTime(now_micros()));
        });
        if self.mutating {
            lock(&self.host.tasks).busy.remove(&self.entity);
        }
    }

    fn update(&self, change: impl FnOnce(&vireo_api::Schema, &mut DataObject)) {
        let host = &self.host;
        let schema = host.schema;
        let info = host.mutate(|inv| {
            let mut info = inv
                .stored(schema, &self.task, "info")
                .and_then(Value::as_data)
                .cloned()?;
            change(schema, &mut info);
            inv.set(schema, &self.task, "info", info.clone());
            Some(info)
        });
        if let Some(info) = info {
            record_history(host, &info);
        }
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        if !self.finished {
            let fault = Fault::system_error(self.host.schema, "the task ended without a result");
            self.finish(|schema, info| {
                info.set(
                    schema,
                    "state",
                    Value::enumeration(schema, "TaskInfoState", "error"),
                );
                info.set(schema, "error", fault.localized(schema));
            });
        }
    }
}

/// Stores or replaces a TaskInfo in the history (by key).
fn record_history(host: &Host, info: &DataObject) {
    let schema = host.schema;
    let key = info.get(schema, "key").cloned();
    let mut log = lock(&host.tasks);
    if let Some(existing) = log
        .history
        .iter_mut()
        .rev()
        .find(|i| i.get(schema, "key") == key.as_ref())
    {
        *existing = info.clone();
        return;
    }
    log.history.push_back(info.clone());
    while log.history.len() > HISTORY_LEN {
        log.history.pop_front();
    }
}

/// CancelTask: marks a cancelable task cancelled; a queued one ends at once with RequestCanceled.
pub fn cancel_task(host: &Host, task: &MoRef) -> Result<(), Fault> {
    let schema = host.schema;
    let info = host
        .inventory()
        .stored(schema, task, "info")
        .and_then(Value::as_data)
        .cloned();
    let info = info.ok_or_else(|| Fault::managed_object_not_found(schema, task))?;
    if info.get(schema, "cancelable").and_then(Value::as_bool) != Some(true) {
        return Err(Fault::not_supported(
            schema,
            "The task cannot be cancelled.",
        ));
    }
    let state = info
        .get(schema, "state")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if state == "success" || state == "error" {
        return Err(Fault::new(
            schema,
            "InvalidState",
            "The task has already completed.",
        ));
    }
    let mut info = info;
    info.set(schema, "cancelled", true);
    if state == "queued" {
        let fault = Fault::new(
            schema,
            "RequestCanceled",
            "The task was canceled by a user.",
        );
        info.set(
            schema,
            "state",
            Value::enumeration(schema, "TaskInfoState", "error"),
        );
        info.set(schema, "error", fault.localized(schema));
        info.set(schema, "completeTime", Value::DateTime(now_micros()));
    }
    host.mutate(|inv| inv.set(schema, task, "info", info.clone()));
    record_history(host, &info);
    Ok(())
}
