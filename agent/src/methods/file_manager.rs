//! FileManager: MakeDirectory, DeleteDatastoreFile_Task, MoveDatastoreFile_Task and
//! CopyDatastoreFile_Task on `[datastore] path` names, confined to their datastores by
//! `crate::datastore::files`. Each task's entity is the datastore it changes.

use std::sync::Arc;

use vireo_api::{Fault, MoRef, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::datastore::{file_error_fault, files};
use crate::faults;
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::tasks::run_detached;
use crate::vm::datastore_path::DatastorePath;

/// FileManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "FileManager",
    methods: &[
        ("MakeDirectory", Handler::Sync(make_directory)),
        ("DeleteDatastoreFile_Task", Handler::Sync(delete_file)),
        ("MoveDatastoreFile_Task", Handler::Sync(move_file)),
        ("CopyDatastoreFile_Task", Handler::Sync(copy_file)),
    ],
};

fn make_directory(call: &Call<'_>) -> MethodResult {
    let path = datastore_path(call, "name", "datacenter")?;
    let parents = call
        .arg("createParentDirectories")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    files::make_directory(&call.host.datastores(), &path, parents)
        .map_err(|e| file_error_fault(call.schema, e))?;
    Ok(None)
}

fn delete_file(call: &Call<'_>) -> MethodResult {
    let path = datastore_path(call, "name", "datacenter")?;
    let host = call.host.clone();
    let datastore = path.datastore.clone();
    file_task(call, "FileManager.deleteFile", &datastore, move || {
        files::delete(&host.datastores(), &path)
    })
}

fn move_file(call: &Call<'_>) -> MethodResult {
    two_path_task(call, "FileManager.moveFile", files::move_entry)
}

fn copy_file(call: &Call<'_>) -> MethodResult {
    two_path_task(call, "FileManager.copyFile", files::copy_entry)
}

/// An operation from `sourceName` to `destinationName` (replacing it with `force`).
type TwoPathOperation = fn(
    &[crate::inventory::esxi::DatastoreDir],
    &DatastorePath,
    &DatastorePath,
    bool,
) -> Result<(), files::FileError>;

fn two_path_task(
    call: &Call<'_>,
    description_id: &str,
    operation: TwoPathOperation,
) -> MethodResult {
    let from = datastore_path(call, "sourceName", "sourceDatacenter")?;
    let to = datastore_path(call, "destinationName", "destinationDatacenter")?;
    let force = call.arg("force").and_then(Value::as_bool).unwrap_or(false);
    let host = call.host.clone();
    let datastore = to.datastore.clone();
    file_task(call, description_id, &datastore, move || {
        operation(&host.datastores(), &from, &to, force)
    })
}

/// Runs a file operation as a task on the datastore named `datastore`.
fn file_task(
    call: &Call<'_>,
    description_id: &str,
    datastore: &str,
    work: impl FnOnce() -> Result<(), files::FileError> + Send + 'static,
) -> MethodResult {
    let handle = call.shared_task(&MoRef::new("Datastore", datastore), description_id)?;
    let host: Arc<Host> = call.host.clone();
    let task = run_detached(handle, move |_| {
        work()
            .map(|()| None)
            .map_err(|e| file_error_fault(host.schema, e))
    });
    Ok(Some(Value::MoRef(task)))
}

/// The datastore path in argument `name`; a datacenter argument, if given, must be this
/// host's one.
pub fn datastore_path(
    call: &Call<'_>,
    name: &str,
    datacenter: &str,
) -> Result<DatastorePath, Fault> {
    if let Some(dc) = call.arg(datacenter).and_then(Value::as_moref) {
        if *dc != refs::datacenter() {
            return Err(Fault::managed_object_not_found(call.schema, dc));
        }
    }
    let text = call.str_arg(name)?;
    DatastorePath::parse(text).map_err(|e| faults::invalid_datastore_path(call.schema, text, e))
}
