//! Snapshot, change-tracking and console methods: VirtualMachine's CreateSnapshot(Ex)_Task,
//! RevertToCurrentSnapshot_Task, RemoveAllSnapshots_Task, ConsolidateVMDisks_Task, PromoteDisks_Task,
//! EstimateStorageForConsolidateSnapshots_Task, QueryChangedDiskAreas, ReconfigVM_Task
//! (changeTrackingEnabled), CreateScreenshot_Task; and the VirtualMachineSnapshot methods.

use vireo_api::{Fault, Value};

use super::virtual_machine::task;
use super::{Call, MethodResult};
use crate::vm::change_tracking::{self, ChangeQuery};
use crate::vm::screenshot;
use crate::vm::snapshots::{self, promote, NewSnapshot};

/// Serves the snapshot, change-tracking and console methods of a VirtualMachine.
pub fn handle_vm(call: &Call<'_>, method: &str) -> MethodResult {
    let host = call.host;
    let schema = call.schema;
    let vm = call.this_vm()?;
    let user = call.user().to_string();
    let flag = |name: &str| call.arg(name).and_then(Value::as_bool);
    match method {
        "CreateSnapshot_Task" | "CreateSnapshotEx_Task" => {
            let new = NewSnapshot {
                name: call.str_arg("name")?.to_string(),
                description: call
                    .arg("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                memory: flag("memory").unwrap_or(false),
                quiesce: flag("quiesce").unwrap_or(false) || call.arg("quiesceSpec").is_some(),
            };
            task(call, &vm, "VirtualMachine.createSnapshot", move |h, vm| {
                snapshots::create(h, vm, new).map(|s| Some(Value::MoRef(s)))
            })
        }
        "RevertToCurrentSnapshot_Task" => {
            let suppress = flag("suppressPowerOn").unwrap_or(false);
            task(
                call,
                &vm,
                "VirtualMachine.revertToCurrentSnapshot",
                move |h, vm| snapshots::revert(h, vm, None, suppress, &user).map(|_| None),
            )
        }
        "RemoveAllSnapshots_Task" => {
            let consolidate = flag("consolidate").unwrap_or(true);
            task(
                call,
                &vm,
                "VirtualMachine.removeAllSnapshots",
                move |h, vm| snapshots::remove_all(h, vm, consolidate).map(|_| None),
            )
        }
        "ConsolidateVMDisks_Task" => task(call, &vm, "VirtualMachine.consolidateDisks", |h, vm| {
            snapshots::consolidate(h, vm).map(|_| None)
        }),
        "PromoteDisks_Task" => {
            let unlink = flag("unlink").unwrap_or(false);
            let keys: Vec<i32> = call
                .arg("disks")
                .map(Value::items)
                .unwrap_or_default()
                .iter()
                .filter_map(|d| d.as_data()?.get(schema, "key")?.as_i64())
                .map(|key| key as i32)
                .collect();
            task(call, &vm, "VirtualMachine.promoteDisks", move |h, vm| {
                promote::promote(h, vm, unlink, &keys).map(|_| None)
            })
        }
        "EstimateStorageForConsolidateSnapshots_Task" => task(
            call,
            &vm,
            "VirtualMachine.estimateStorageRequirementForConsolidate",
            |h, vm| snapshots::estimate_consolidation(h, vm).map(Some),
        ),
        "QueryChangedDiskAreas" => {
            let query = ChangeQuery {
                snapshot: call.arg("snapshot").and_then(Value::as_moref).cloned(),
                device_key: call
                    .arg("deviceKey")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| {
                        Fault::invalid_argument(schema, "deviceKey", "deviceKey is required")
                    })? as i32,
                start_offset: call
                    .arg("startOffset")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| {
                        Fault::invalid_argument(schema, "startOffset", "startOffset is required")
                    })?,
                change_id: call.str_arg("changeId")?.to_string(),
            };
            change_tracking::query(host, &vm, &query).map(|info| Some(info.into()))
        }
        "ReconfigVM_Task" => {
            let enabled = change_tracking_only(call)?;
            task(call, &vm, "VirtualMachine.reconfigure", move |h, vm| {
                change_tracking::configure(h, vm, enabled).map(|_| None)
            })
        }
        "CreateScreenshot_Task" => task(call, &vm, "VirtualMachine.createScreenshot", |h, vm| {
            screenshot::create(h, vm).map(|path| Some(path.into()))
        }),
        _ => Err(Fault::not_supported(
            schema,
            format!("{method} is not implemented by this host."),
        )),
    }
}

/// The changeTrackingEnabled of a ReconfigVM spec; other settings are not reconfigurable yet.
fn change_tracking_only(call: &Call<'_>) -> Result<bool, Fault> {
    let schema = call.schema;
    let spec = call
        .arg("spec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument(schema, "spec", "spec is required"))?;
    let field = "changeTrackingEnabled";
    let others: Vec<&str> = schema
        .fields(spec.ty)
        .iter()
        .zip(&spec.fields)
        .filter(|(f, v)| v.is_some() && &*f.name != field)
        .map(|(f, _)| &*f.name)
        .collect();
    if !others.is_empty() {
        return Err(Fault::not_supported(
            schema,
            format!(
                "This host reconfigures only changeTrackingEnabled; not {}.",
                others.join(", ")
            ),
        ));
    }
    spec.get(schema, field)
        .and_then(Value::as_bool)
        .ok_or_else(|| Fault::invalid_argument(schema, "spec", "nothing to change"))
}

/// Serves the VirtualMachineSnapshot methods.
pub fn handle_snapshot(call: &Call<'_>, method: &str) -> MethodResult {
    let host = call.host;
    let schema = call.schema;
    let (vm, uid) = snapshots::resolve(host, call.this())
        .ok_or_else(|| Fault::managed_object_not_found(schema, call.this()))?;
    let user = call.user().to_string();
    match method {
        "RevertToSnapshot_Task" => {
            let suppress = call
                .arg("suppressPowerOn")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            task(call, &vm, "vm.Snapshot.revert", move |h, vm| {
                snapshots::revert(h, vm, Some(uid), suppress, &user).map(|_| None)
            })
        }
        "RemoveSnapshot_Task" => {
            let flag = |name: &str| call.arg(name).and_then(Value::as_bool);
            let children = flag("removeChildren").unwrap_or(false);
            let consolidate = flag("consolidate").unwrap_or(true);
            task(call, &vm, "vm.Snapshot.remove", move |h, vm| {
                snapshots::remove(h, vm, uid, children, consolidate).map(|_| None)
            })
        }
        "RenameSnapshot" => {
            let text = |name: &str| call.arg(name).and_then(Value::as_str).map(str::to_string);
            snapshots::rename(host, &vm, uid, text("name"), text("description")).map(|_| None)
        }
        _ => Err(Fault::not_supported(
            schema,
            format!("{method} is not implemented by this host."),
        )),
    }
}
