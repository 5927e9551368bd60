//! VirtualDiskManager: CreateVirtualDisk_Task, CopyVirtualDisk_Task, ExtendVirtualDisk_Task,
//! InflateVirtualDisk_Task, ZeroFillVirtualDisk_Task, DeleteVirtualDisk_Task,
//! MoveVirtualDisk_Task, QueryVirtualDiskUuid and SetVirtualDiskUuid on `[datastore] path`
//! names, done by `crate::datastore::virtual_disks`. Each task's entity is the datastore.
//!
//! QueryVirtualDiskInfo is not offered: it is no method of the public vim25 API this host
//! speaks (api/schema/vim25.schema, derived from pyVmomi 9.1's tables, lists none, nor do those
//! tables), so a call to it is answered MethodNotFound like any other unknown method.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, MoRef, Value};

use super::file_manager::datastore_path;
use super::{Call, Handler, MethodResult, MethodTable};
use crate::datastore::file_error_fault;
use crate::datastore::virtual_disks::{self, NewDisk, VirtualDiskError};
use crate::faults;
use crate::tasks::{run_detached, TaskHandle};
use crate::vm::datastore_path::DatastorePath;

/// VirtualDiskManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "VirtualDiskManager",
    methods: &[
        ("CreateVirtualDisk_Task", Handler::Sync(create)),
        ("CopyVirtualDisk_Task", Handler::Sync(copy)),
        ("ExtendVirtualDisk_Task", Handler::Sync(extend)),
        ("InflateVirtualDisk_Task", Handler::Sync(inflate)),
        ("ZeroFillVirtualDisk_Task", Handler::Sync(zero_fill)),
        ("DeleteVirtualDisk_Task", Handler::Sync(delete)),
        ("MoveVirtualDisk_Task", Handler::Sync(rename)),
        ("QueryVirtualDiskUuid", Handler::Sync(query_uuid)),
        ("SetVirtualDiskUuid", Handler::Sync(set_uuid)),
    ],
};

/// The fault a virtual disk operation's failure is reported as.
fn fault(schema: &Schema, error: VirtualDiskError) -> Fault {
    let message = error.to_string();
    match error {
        VirtualDiskError::File(e) => file_error_fault(schema, e),
        VirtualDiskError::UnsupportedType(_) | VirtualDiskError::BadUuid(_) => {
            Fault::invalid_argument(schema, "spec", message)
        }
        VirtualDiskError::InUse { path, .. } => faults::file_locked(schema, &path, message),
        VirtualDiskError::Disk { path, .. } | VirtualDiskError::NoUuid(path) => {
            faults::file_fault(schema, &path, message)
        }
    }
}

/// The new-disk kind and capacity a VirtualDiskSpec asks for.
fn disk_spec(schema: &Schema, spec: &DataObject) -> Result<(NewDisk, Option<u64>), Fault> {
    let disk_type = spec
        .get(schema, "diskType")
        .and_then(Value::as_str)
        .unwrap_or("thin");
    let kind = NewDisk::of_type(disk_type).map_err(|e| fault(schema, e))?;
    let capacity = spec
        .get(schema, "capacityKb")
        .and_then(Value::as_i64)
        .map(|kb| kb.max(0) as u64 * 1024);
    Ok((kind, capacity))
}

fn create(call: &Call<'_>) -> MethodResult {
    let path = datastore_path(call, "name", "datacenter")?;
    let spec = call
        .arg("spec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument(call.schema, "spec", "spec is required"))?;
    let (kind, capacity) = disk_spec(call.schema, spec)?;
    let capacity = capacity.filter(|&c| c > 0).ok_or_else(|| {
        Fault::invalid_argument(call.schema, "spec.capacityKb", "a new disk needs a size")
    })?;
    let name = path.to_string();
    disk_task(
        call,
        "VirtualDiskManager.createVirtualDisk",
        &path.clone(),
        move |host, _| {
            virtual_disks::create(host, &path, kind, capacity).map(|()| Some(Value::from(name)))
        },
    )
}

fn copy(call: &Call<'_>) -> MethodResult {
    let from = datastore_path(call, "sourceName", "sourceDatacenter")?;
    let to = datastore_path(call, "destName", "destDatacenter")?;
    let kind = match call.arg("destSpec").and_then(Value::as_data) {
        Some(spec) => Some(disk_spec(call.schema, spec)?.0),
        None => None,
    };
    let force = call.arg("force").and_then(Value::as_bool).unwrap_or(false);
    disk_task(
        call,
        "VirtualDiskManager.copyVirtualDisk",
        &to.clone(),
        move |host, task| {
            let progress = |percent| task.progress(percent);
            virtual_disks::copy(host, &from, &to, kind, force, &progress).map(|()| None)
        },
    )
}

fn extend(call: &Call<'_>) -> MethodResult {
    let path = datastore_path(call, "name", "datacenter")?;
    let capacity = call
        .arg("newCapacityKb")
        .and_then(Value::as_i64)
        .filter(|&kb| kb > 0)
        .ok_or_else(|| {
            Fault::invalid_argument(
                call.schema,
                "newCapacityKb",
                "the new size must be positive",
            )
        })? as u64
        * 1024;
    let eager_zero = call
        .arg("eagerZero")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    disk_task(
        call,
        "VirtualDiskManager.extendVirtualDisk",
        &path.clone(),
        move |host, _| virtual_disks::extend(host, &path, capacity, eager_zero).map(|()| None),
    )
}

fn inflate(call: &Call<'_>) -> MethodResult {
    let path = datastore_path(call, "name", "datacenter")?;
    disk_task(
        call,
        "VirtualDiskManager.inflateVirtualDisk",
        &path.clone(),
        move |host, task| {
            virtual_disks::inflate(host, &path, &|percent| task.progress(percent)).map(|()| None)
        },
    )
}

fn zero_fill(call: &Call<'_>) -> MethodResult {
    let path = datastore_path(call, "name", "datacenter")?;
    disk_task(
        call,
        "VirtualDiskManager.zeroFillVirtualDisk",
        &path.clone(),
        move |host, task| {
            virtual_disks::zero_fill(host, &path, &|percent| task.progress(percent)).map(|()| None)
        },
    )
}

fn delete(call: &Call<'_>) -> MethodResult {
    let path = datastore_path(call, "name", "datacenter")?;
    disk_task(
        call,
        "VirtualDiskManager.deleteVirtualDisk",
        &path.clone(),
        move |host, _| virtual_disks::delete(host, &path).map(|()| None),
    )
}

fn rename(call: &Call<'_>) -> MethodResult {
    let from = datastore_path(call, "sourceName", "sourceDatacenter")?;
    let to = datastore_path(call, "destName", "destDatacenter")?;
    let force = call.arg("force").and_then(Value::as_bool).unwrap_or(false);
    disk_task(
        call,
        "VirtualDiskManager.moveVirtualDisk",
        &to.clone(),
        move |host, _| virtual_disks::rename(host, &from, &to, force).map(|()| None),
    )
}

fn query_uuid(call: &Call<'_>) -> MethodResult {
    let path = datastore_path(call, "name", "datacenter")?;
    let uuid = virtual_disks::query_uuid(call.host, &path).map_err(|e| fault(call.schema, e))?;
    Ok(Some(Value::from(uuid)))
}

fn set_uuid(call: &Call<'_>) -> MethodResult {
    let path = datastore_path(call, "name", "datacenter")?;
    let uuid = call.str_arg("uuid")?;
    virtual_disks::set_uuid(call.host, &path, uuid).map_err(|e| fault(call.schema, e))?;
    Ok(None)
}

/// Runs a disk operation as a task on the datastore of `path`.
fn disk_task(
    call: &Call<'_>,
    description_id: &str,
    path: &DatastorePath,
    work: impl FnOnce(&crate::host::Host, &TaskHandle) -> Result<Option<Value>, VirtualDiskError>
        + Send
        + 'static,
) -> MethodResult {
    let datastore = MoRef::new("Datastore", path.datastore.as_str());
    let handle = call.shared_task(&datastore, description_id)?;
    let host = call.host.clone();
    let task = run_detached(handle, move |task| {
        work(&host, task).map_err(|e| fault(host.schema, e))
    });
    Ok(Some(Value::MoRef(task)))
}
