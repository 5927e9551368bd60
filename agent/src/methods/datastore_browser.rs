//! HostDatastoreBrowser: SearchDatastore_Task and SearchDatastoreSubFolders_Task. The
//! HostDatastoreBrowserSearchSpec is read into `crate::datastore::search`'s spec, the search
//! runs as a task on the datastore, and what it found is answered as FileInfo subtypes with
//! the details the spec and each query ask for.

use std::collections::HashMap;
use std::path::PathBuf;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, MoRef, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::datastore::file_error_fault;
use crate::datastore::search::{
    self, DiskFilter, DiskUser, FileType, Found, Query, SearchError, Spec, DISK_BACKING_TYPE,
};
use crate::faults;
use crate::host::Host;
use crate::tasks::run_detached;
use crate::vm::datastore_path::DatastorePath;

/// HostDatastoreBrowser's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostDatastoreBrowser",
    methods: &[
        ("SearchDatastore_Task", Handler::Sync(search_folder)),
        (
            "SearchDatastoreSubFolders_Task",
            Handler::Sync(search_sub_folders),
        ),
    ],
};

/// The controller every VM disk here is attached to (as the VMs' device lists show it).
const DISK_CONTROLLER: &str = "ParaVirtualSCSIController";

fn search_folder(call: &Call<'_>) -> MethodResult {
    start(call, false)
}

fn search_sub_folders(call: &Call<'_>) -> MethodResult {
    start(call, true)
}

/// Reads the arguments and starts the search task (on the datastore searched).
fn start(call: &Call<'_>, recurse: bool) -> MethodResult {
    let schema = call.schema;
    let text = call.str_arg("datastorePath")?;
    let parsed =
        DatastorePath::parse(text).map_err(|e| faults::invalid_datastore_path(schema, text, e))?;
    let folder = DatastorePath {
        path: parsed.path.trim_end_matches('/').to_string(),
        ..parsed
    };
    let request = call
        .arg("searchSpec")
        .and_then(Value::as_data)
        .cloned()
        .unwrap_or_else(|| DataObject::of(schema, "HostDatastoreBrowserSearchSpec"));
    let spec = read_spec(schema, &request);
    let datastore = MoRef::new("Datastore", folder.datastore.as_str());
    let handle = call.shared_task(&datastore, "HostDatastoreBrowser.search")?;
    let host = call.host.clone();
    let task = run_detached(handle, move |_| {
        let users = disk_users(&host);
        let results = search::search(&host.datastores(), &folder, &spec, recurse, &users)
            .map_err(|e| search_fault(schema, e))?;
        let answers: Vec<Value> = results
            .iter()
            .map(|r| folder_result(schema, &request, &r.folder, &r.files).into())
            .collect();
        Ok(Some(if recurse {
            Value::Array(
                schema.known_type("HostDatastoreBrowserSearchResults"),
                answers,
            )
        } else {
            answers.into_iter().next().expect("one folder searched")
        }))
    });
    Ok(Some(Value::MoRef(task)))
}

fn search_fault(schema: &Schema, error: SearchError) -> Fault {
    match error {
        SearchError::File(e) => file_error_fault(schema, e),
        SearchError::TooMany => Fault::invalid_argument(schema, "searchSpec", error.to_string()),
    }
}

/// The spec's patterns, order and queries (a query type this host has no files of matches
/// nothing).
fn read_spec(schema: &Schema, request: &DataObject) -> Spec {
    let field = |name| request.get(schema, name);
    let flag = |name| field(name).and_then(Value::as_bool).unwrap_or(false);
    Spec {
        queries: field("query")
            .map(Value::items)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_data)
            .map(|q| read_query(schema, q))
            .collect(),
        patterns: field("matchPattern")
            .map(Value::items)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        case_insensitive: flag("searchCaseInsensitive"),
        folders_first: flag("sortFoldersFirst"),
    }
}

fn read_query(schema: &Schema, query: &DataObject) -> Query {
    let name = &*schema.ty(query.ty).name;
    let filter = query
        .lookup(schema, "filter")
        .and_then(Value::as_data)
        .cloned()
        .unwrap_or_else(|| DataObject::new(schema, schema.known_type("DynamicData")));
    let list = |field| {
        filter
            .lookup(schema, field)
            .map(Value::items)
            .unwrap_or_default()
            .iter()
    };
    let ints = |field| -> Vec<i32> {
        list(field)
            .filter_map(Value::as_i64)
            .map(|v| v as i32)
            .collect()
    };
    let strings = |field| -> Vec<String> {
        list(field)
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    match name {
        "FileQuery" => Query::Any,
        "VmDiskFileQuery" => Query::Disk(DiskFilter {
            disk_types: strings("diskType"),
            hardware_versions: ints("matchHardwareVersion"),
            controller_types: strings("controllerType"),
            thin: filter.lookup(schema, "thin").and_then(Value::as_bool),
        }),
        "VmConfigFileQuery" => Query::Config(ints("matchConfigVersion")),
        _ => match FileType::QUERIES.iter().find(|(_, q)| *q == name) {
            Some((file_type, _)) => Query::Typed(*file_type),
            None => Query::Unmatched,
        },
    }
}

/// Each registered VM's disk files (every layer of every chain) by host path.
fn disk_users(host: &Host) -> HashMap<PathBuf, DiskUser> {
    let mut users = HashMap::new();
    for vm in host.vms.all() {
        let state = vm.state();
        let user = DiskUser {
            hardware_version: state.spec.hw_version,
            controller: DISK_CONTROLLER,
        };
        for view in &state.disk_views {
            let chains = std::iter::once(&view.active).chain(view.snapshots.values());
            for path in chains.flat_map(|d| &d.chain) {
                users.insert(path.clone(), user.clone());
            }
        }
    }
    users
}

/// One folder's HostDatastoreBrowserSearchResults.
fn folder_result(
    schema: &Schema,
    request: &DataObject,
    folder: &DatastorePath,
    files: &[Found],
) -> DataObject {
    let folder_path = if folder.path.is_empty() {
        format!("[{}]", folder.datastore)
    } else {
        format!("[{}] {}/", folder.datastore, folder.path)
    };
    let infos: Vec<Value> = files
        .iter()
        .map(|f| file_info(schema, request, folder, f).into())
        .collect();
    let mut result = DataObject::of(schema, "HostDatastoreBrowserSearchResults")
        .with(
            schema,
            "datastore",
            MoRef::new("Datastore", folder.datastore.as_str()),
        )
        .with(schema, "folderPath", folder_path);
    if !infos.is_empty() {
        result.set(
            schema,
            "file",
            Value::Array(schema.known_type("FileInfo"), infos),
        );
    }
    result
}

/// A found file as its FileInfo: typed when a typed query matched it or the spec asks for
/// file types; the spec's file-level details; the matching query's type details.
fn file_info(
    schema: &Schema,
    request: &DataObject,
    folder: &DatastorePath,
    found: &Found,
) -> DataObject {
    let details = request.get(schema, "details").and_then(Value::as_data);
    let wants = |flag| {
        details
            .and_then(|d| d.get(schema, flag))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let query = found.matched_by.and_then(|i| {
        request
            .get(schema, "query")
            .map(Value::items)
            .and_then(|items| items.get(i))
            .and_then(Value::as_data)
    });
    let typed_query = query.is_some_and(|q| &*schema.ty(q.ty).name != "FileQuery");
    let ty = if typed_query || wants("fileType") {
        found.file_type.info_type()
    } else {
        "FileInfo"
    };
    let mut info = DataObject::of(schema, ty).with(schema, "path", found.name.as_str());
    if wants("fileSize") {
        info.set(schema, "fileSize", found.size);
    }
    if wants("modification") {
        info.set(
            schema,
            "modification",
            Value::DateTime(found.modified_micros),
        );
    }
    if wants("fileOwner") {
        info.set(schema, "owner", owner_name(found.uid));
    }
    let query_wants = |flag| {
        query
            .and_then(|q| q.lookup(schema, "details"))
            .and_then(Value::as_data)
            .and_then(|d| d.lookup(schema, flag))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    if ty == "VmDiskFileInfo" {
        if let Some(disk) = &found.disk {
            let user = disk.user.as_ref();
            if query_wants("diskType") {
                info.set(schema, "diskType", DISK_BACKING_TYPE);
            }
            if let Some(capacity) = disk.capacity.filter(|_| query_wants("capacityKb")) {
                info.set(schema, "capacityKb", (capacity / 1024) as i64);
            }
            if let Some(user) = user.filter(|_| query_wants("hardwareVersion")) {
                info.set(schema, "hardwareVersion", user.hardware_version);
            }
            if let Some(user) = user.filter(|_| query_wants("controllerType")) {
                info.set(schema, "controllerType", user.controller);
            }
            if query_wants("diskExtents") {
                let extent = folder.join(&found.name).to_string();
                info.set(schema, "diskExtents", Value::strings(schema, [extent]));
            }
            if query_wants("thin") {
                info.set(schema, "thin", disk.thin);
            }
        }
    }
    if let Some(version) = found
        .config_version
        .filter(|_| ty == "VmConfigFileInfo" && query_wants("configVersion"))
    {
        info.set(schema, "configVersion", version);
    }
    info
}

/// The user name of `uid` (its number when the host has no such user).
fn owner_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}
