//! Asynchronous tasks: a Task object whose `info` goes queued → running → success/error with
//! progress, cancellation and result; at most one mutating task per entity (TaskInProgress);
//! a TaskEvent for each; finished TaskInfos kept for TaskHistoryCollectors.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use vireo_api::{DataObject, Fault, MoRef, Value};

use crate::events::post_event;
use crate::faults;
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::now_micros;
use crate::locks::lock;

/// How many TaskInfos the history keeps, and how many tasks `recentTask` lists.
const HISTORY_LEN: usize = 1000;
const RECENT_LEN: usize = 50;

/// Busy entities and the task history.
#[derive(Default)]
pub struct TaskLog {
    busy: HashMap<MoRef, MoRef>,
    history: VecDeque<DataObject>,
    /// (task, entity) of the most recent tasks, oldest first.
    recent: VecDeque<(MoRef, MoRef)>,
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
    /// The WSDL name of the method that started it (`TaskInfo.name`), e.g. `PowerOnVM_Task`;
    /// clients look it up in their method tables (pyVim's WaitForTask does).
    pub method: &'a str,
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
                return Err(faults::task_in_progress(schema, spec.entity, busy_with));
            }
            log.busy.insert(spec.entity.clone(), task.clone());
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
        .with(schema, "name", spec.method)
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
    if let Some(name) = &entity_name {
        info.set(schema, "entityName", name.as_str());
    }
    let (recent, evicted) = {
        let log = &mut *lock(&host.tasks);
        log.recent.push_back((task.clone(), spec.entity.clone()));
        let excess = log.recent.len().saturating_sub(RECENT_LEN);
        let evicted: Vec<(MoRef, MoRef)> = log.recent.drain(..excess).collect();
        (log.recent.clone(), evicted)
    };
    host.mutate(|inv| {
        inv.insert(schema, task.clone(), None);
        inv.set(schema, &task, "info", info.clone());
        // Tasks that fell out of the recent list are forgotten (their infos stay in the history).
        for (old_task, _) in &evicted {
            inv.remove(old_task);
        }
        let all: Vec<MoRef> = recent.iter().map(|(t, _)| t.clone()).collect();
        inv.set(
            schema,
            &refs::task_manager(),
            "recentTask",
            Value::refs(schema, &all),
        );
        let touched: std::collections::HashSet<&MoRef> = evicted
            .iter()
            .map(|(_, e)| e)
            .chain([spec.entity])
            .collect();
        for entity in touched {
            let has_recent = inv
                .get(entity)
                .is_some_and(|o| schema.field_index(o.ty, "recentTask").is_some());
            if has_recent {
                let mine: Vec<MoRef> = recent
                    .iter()
                    .filter(|(_, e)| e == entity)
                    .map(|(t, _)| t.clone())
                    .collect();
                inv.set(schema, entity, "recentTask", Value::refs(schema, &mine));
            }
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

    /// Frees the entity before publishing the outcome, so a client that sees the task end can
    /// start the next one at once.
    fn finish(&mut self, outcome: impl FnOnce(&vireo_api::Schema, &mut DataObject)) {
        self.finished = true;
        if self.mutating {
            lock(&self.host.tasks).busy.remove(&self.entity);
        }
        self.update(|schema, info| {
            outcome(schema, info);
            info.set(schema, "completeTime", Value::DateTime(now_micros()));
        });
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

/// Runs `work` as the task `handle` on a thread of its own (started, then finished with the
/// work's result or fault); returns the Task's reference.
pub fn run_detached(
    handle: TaskHandle,
    work: impl FnOnce(&TaskHandle) -> Result<Option<Value>, Fault> + Send + 'static,
) -> MoRef {
    let task = handle.task.clone();
    std::thread::spawn(move || {
        handle.start();
        match work(&handle) {
            Ok(result) => handle.succeed(result),
            Err(fault) => handle.fail(fault),
        }
    });
    task
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
    let state = info
        .get(schema, "state")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if state == "success" || state == "error" {
        return Err(faults::invalid_state(
            schema,
            "The task has already completed.",
        ));
    }
    if info.get(schema, "cancelable").and_then(Value::as_bool) != Some(true) {
        return Err(Fault::not_supported(
            schema,
            "The task cannot be cancelled.",
        ));
    }
    let mut info = info;
    info.set(schema, "cancelled", true);
    if state == "queued" {
        let fault = faults::request_canceled(schema, "The task was canceled by a user.");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::test_host;
    use crate::vm::Power;

    fn info(host: &Host, task: &MoRef) -> DataObject {
        host.inventory()
            .stored(host.schema, task, "info")
            .and_then(Value::as_data)
            .cloned()
            .expect("task has info")
    }

    fn state(host: &Host, task: &MoRef) -> String {
        info(host, task)
            .get(host.schema, "state")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    fn spec(entity: &MoRef) -> TaskSpec<'_> {
        TaskSpec {
            entity,
            description_id: "VirtualMachine.powerOn",
            method: "PowerOnVM_Task",
            user: "root",
            cancelable: true,
            mutating: true,
        }
    }

    #[test]
    fn lifecycle_and_one_mutating_task_per_entity() {
        let host = test_host();
        let schema = host.schema;
        let vm = host.vms.all()[0].moref.clone();
        let task = create_task(&host, spec(&vm)).unwrap();
        let task_ref = task.task.clone();
        assert_eq!(state(&host, &task_ref), "queued");
        assert_eq!(
            info(&host, &task_ref)
                .get(schema, "name")
                .and_then(Value::as_str),
            Some("PowerOnVM_Task")
        );
        assert_eq!(
            info(&host, &task_ref)
                .get(schema, "entityName")
                .and_then(Value::as_str),
            Some("vm1")
        );
        let busy = create_task(&host, spec(&vm)).err().expect("entity is busy");
        assert_eq!(busy.type_name(schema), "TaskInProgress");
        assert_eq!(
            busy.data.get(schema, "task"),
            Some(&Value::MoRef(task_ref.clone()))
        );
        task.start();
        task.progress(40);
        assert_eq!(state(&host, &task_ref), "running");
        assert_eq!(
            info(&host, &task_ref).get(schema, "progress"),
            Some(&Value::Int(40))
        );
        task.succeed(Some(Value::string("done")));
        assert_eq!(state(&host, &task_ref), "success");
        assert_eq!(
            info(&host, &task_ref)
                .get(schema, "result")
                .and_then(Value::as_str),
            Some("done")
        );
        let recent = host.inventory().refs(schema, &vm, "recentTask");
        assert_eq!(recent, vec![task_ref.clone()]);
        let events: Vec<String> = lock(&host.events)
            .all()
            .map(|e| schema.ty(e.ty).name.to_string())
            .collect();
        assert!(events.contains(&"TaskEvent".to_string()));

        let failing = create_task(&host, spec(&vm)).expect("entity is free again");
        let failing_ref = failing.task.clone();
        failing.fail(faults::invalid_power_state(schema, None, Power::On));
        let error = info(&host, &failing_ref)
            .get(schema, "error")
            .and_then(Value::as_data)
            .cloned()
            .unwrap();
        assert_eq!(
            schema
                .ty(error
                    .get(schema, "fault")
                    .and_then(Value::as_data)
                    .unwrap()
                    .ty)
                .name
                .as_ref(),
            "InvalidPowerState"
        );

        let abandoned = create_task(&host, spec(&vm)).unwrap();
        let abandoned_ref = abandoned.task.clone();
        drop(abandoned);
        assert_eq!(
            state(&host, &abandoned_ref),
            "error",
            "an abandoned task fails rather than running forever"
        );
        assert_eq!(lock(&host.tasks).history().count(), 3);
    }

    #[test]
    fn cancel_queued_running_and_uncancelable_tasks() {
        let host = test_host();
        let schema = host.schema;
        let vm = host.vms.all()[0].moref.clone();
        let queued = create_task(&host, spec(&vm)).unwrap();
        cancel_task(&host, &queued.task).unwrap();
        assert_eq!(state(&host, &queued.task), "error");
        let error = info(&host, &queued.task)
            .get(schema, "error")
            .and_then(Value::as_data)
            .cloned()
            .unwrap();
        assert_eq!(
            error
                .get(schema, "fault")
                .and_then(Value::as_data)
                .map(|f| schema.ty(f.ty).name.to_string()),
            Some("RequestCanceled".into())
        );
        queued.fail(faults::request_canceled(schema, "canceled"));

        let running = create_task(&host, spec(&vm)).unwrap();
        running.start();
        assert!(!running.cancel_requested());
        cancel_task(&host, &running.task).unwrap();
        assert!(
            running.cancel_requested(),
            "running tasks see the request and stop themselves"
        );
        running.succeed(None);

        let host_entity = MoRef::new("HostSystem", "ha-host");
        let fixed = create_task(
            &host,
            TaskSpec {
                cancelable: false,
                mutating: false,
                ..spec(&host_entity)
            },
        )
        .unwrap();
        assert_eq!(
            cancel_task(&host, &fixed.task)
                .unwrap_err()
                .type_name(schema),
            "NotSupported"
        );
        let fixed_ref = fixed.task.clone();
        fixed.succeed(None);
        assert_eq!(
            cancel_task(&host, &fixed_ref)
                .unwrap_err()
                .type_name(schema),
            "InvalidState"
        );
    }
}
