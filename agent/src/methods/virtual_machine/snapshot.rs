//! VirtualMachine snapshot methods: CreateSnapshot(Ex)_Task, RevertToCurrentSnapshot_Task,
//! RemoveAllSnapshots_Task, ConsolidateVMDisks_Task, PromoteDisks_Task and
//! EstimateStorageForConsolidateSnapshots_Task.

use vireo_api::Value;

use super::task;
use crate::methods::{Call, MethodResult};
use crate::vm::snapshots::{self, promote, NewSnapshot};

fn flag(call: &Call<'_>, name: &str) -> Option<bool> {
    call.arg(name).and_then(Value::as_bool)
}

/// CreateSnapshot_Task: quiesced when `quiesce` is set.
pub(super) fn create(call: &Call<'_>) -> MethodResult {
    let quiesce = flag(call, "quiesce").unwrap_or(false);
    create_snapshot(call, quiesce)
}

/// CreateSnapshotEx_Task: quiesced when given a quiesceSpec.
pub(super) fn create_ex(call: &Call<'_>) -> MethodResult {
    create_snapshot(call, call.arg("quiesceSpec").is_some())
}

fn create_snapshot(call: &Call<'_>, quiesce: bool) -> MethodResult {
    let new = NewSnapshot {
        name: call.str_arg("name")?.to_string(),
        description: call
            .arg("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        memory: flag(call, "memory").unwrap_or(false),
        quiesce,
    };
    task(
        call,
        &call.this_vm()?,
        "VirtualMachine.createSnapshot",
        move |h, vm| snapshots::create(h, vm, new).map(|s| Some(Value::MoRef(s))),
    )
}

pub(super) fn revert_to_current(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    let user = call.user().to_string();
    let suppress = flag(call, "suppressPowerOn").unwrap_or(false);
    task(
        call,
        &vm,
        "VirtualMachine.revertToCurrentSnapshot",
        move |h, vm| snapshots::revert(h, vm, None, suppress, &user).map(|_| None),
    )
}

pub(super) fn remove_all(call: &Call<'_>) -> MethodResult {
    let consolidate = flag(call, "consolidate").unwrap_or(true);
    task(
        call,
        &call.this_vm()?,
        "VirtualMachine.removeAllSnapshots",
        move |h, vm| snapshots::remove_all(h, vm, consolidate).map(|_| None),
    )
}

pub(super) fn consolidate(call: &Call<'_>) -> MethodResult {
    task(
        call,
        &call.this_vm()?,
        "VirtualMachine.consolidateDisks",
        |h, vm| snapshots::consolidate(h, vm).map(|_| None),
    )
}

pub(super) fn promote_disks(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let unlink = flag(call, "unlink").unwrap_or(false);
    let keys: Vec<i32> = call
        .arg("disks")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(|d| d.as_data()?.get(schema, "key")?.as_i64())
        .map(|key| key as i32)
        .collect();
    task(
        call,
        &call.this_vm()?,
        "VirtualMachine.promoteDisks",
        move |h, vm| promote::promote(h, vm, unlink, &keys).map(|_| None),
    )
}

pub(super) fn estimate_consolidation(call: &Call<'_>) -> MethodResult {
    task(
        call,
        &call.this_vm()?,
        "VirtualMachine.estimateStorageRequirementForConsolidate",
        |h, vm| snapshots::estimate_consolidation(h, vm).map(Some),
    )
}
