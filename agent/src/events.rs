//! The host's event log: events posted with key, chain id, time, user and entity arguments;
//! `EventManager.latestEvent` follows the newest. Queried by QueryEvents and history collectors.
//! Kept across restarts in `<data_dir>/events.log` (one JSON line per event holding its vim25
//! XML), rotated to `events.log.1` every [`EVENT_LOG_LEN`] events.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use vireo_api::codec::{decode_request, encode_element};
use vireo_api::limits::clip;
use vireo_api::schema::{Schema, TypeRef};
use vireo_api::{DataObject, MoRef, Value};

use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::now_micros;
use crate::locks::lock;

/// How many events are kept.
const EVENT_LOG_LEN: usize = 1000;
/// How many bytes the kept events may hold together (by [`DataObject::heap_size`]).
const EVENT_LOG_BYTES: usize = 8 << 20;

/// Recorded events, oldest first, bounded in count and in bytes.
#[derive(Default)]
pub struct EventLog {
    events: VecDeque<(DataObject, usize)>,
    bytes: usize,
    next_key: i32,
    file: Option<LogFile>,
}

/// The open `events.log` and how many events it holds.
struct LogFile {
    path: PathBuf,
    file: File,
    lines: usize,
}

impl EventLog {
    /// Every recorded event, oldest first.
    pub fn all(&self) -> impl Iterator<Item = &DataObject> {
        self.events.iter().map(|(event, _)| event)
    }

    /// Keeps an event, dropping the oldest ones past the count or byte bound.
    fn push(&mut self, event: DataObject) {
        let size = event.heap_size();
        self.bytes += size;
        self.events.push_back((event, size));
        while self.events.len() > EVENT_LOG_LEN || self.bytes > EVENT_LOG_BYTES {
            let Some((_, size)) = self.events.pop_front() else {
                break;
            };
            self.bytes -= size;
        }
    }
}

/// The events of `data_dir` kept by earlier runs (up to [`EVENT_LOG_LEN`]), with the file
/// further events are appended to. Unreadable lines (a write cut short) are skipped.
pub fn load(schema: &Schema, data_dir: &Path) -> EventLog {
    let path = data_dir.join("events.log");
    let mut log = EventLog::default();
    let mut lines = 0;
    for file in [path.with_extension("log.1"), path.clone()] {
        let Ok(opened) = File::open(&file) else {
            continue;
        };
        lines = 0;
        for line in BufReader::new(opened).lines().map_while(Result::ok) {
            lines += 1;
            match decode_event(schema, &line) {
                Some(event) => log.push(event),
                None => tracing::warn!(file = %file.display(), "skipping an unreadable event"),
            }
        }
    }
    log.next_key = log
        .all()
        .filter_map(|e| e.get(schema, "key").and_then(Value::as_i64))
        .max()
        .unwrap_or(0) as i32;
    log.file = match OpenOptions::new().create(true).append(true).open(&path) {
        Ok(file) => Some(LogFile { path, file, lines }),
        Err(error) => {
            tracing::warn!(file = %path.display(), "events will not be kept: {error}");
            None
        }
    };
    log
}

/// The newest event, for `EventManager.latestEvent` after a restart.
pub fn latest(log: &EventLog) -> Option<&DataObject> {
    log.events.back().map(|(event, _)| event)
}

/// The element an event is stored as: the `eventToPost` argument of a PostEvent request,
/// so that the SOAP codec reads it back with its type.
fn encode_event(schema: &Schema, event: &DataObject) -> String {
    let mut xml = Vec::new();
    xml.extend_from_slice(
        b"<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>\
<PostEvent xmlns=\"urn:vim25\"><_this type=\"EventManager\">EventManager</_this>",
    );
    let declared = TypeRef {
        ty: schema.known_type("Event"),
        array: false,
    };
    let version = schema.versions().newest();
    encode_element(
        schema,
        version,
        "eventToPost",
        declared,
        &Value::Data(Box::new(event.clone())),
        &mut xml,
    );
    xml.extend_from_slice(b"</PostEvent></soapenv:Body></soapenv:Envelope>");
    serde_json::json!({ "event": String::from_utf8_lossy(&xml) }).to_string()
}

fn decode_event(schema: &Schema, line: &str) -> Option<DataObject> {
    let record: serde_json::Value = serde_json::from_str(line).ok()?;
    let request = decode_request(schema, record["event"].as_str()?.as_bytes()).ok()?;
    request
        .arg(schema, "eventToPost")
        .and_then(Value::as_data)
        .cloned()
}

/// Appends `event` to the log file, rotating it when full (failures are logged).
fn keep(schema: &Schema, log: &mut LogFile, event: &DataObject) {
    if log.lines >= EVENT_LOG_LEN {
        let rotated = std::fs::rename(&log.path, log.path.with_extension("log.1"))
            .and_then(|()| OpenOptions::new().create(true).append(true).open(&log.path));
        match rotated {
            Ok(file) => {
                log.file = file;
                log.lines = 0;
            }
            Err(error) => tracing::warn!(file = %log.path.display(), "cannot rotate: {error}"),
        }
    }
    let line = encode_event(schema, event) + "\n";
    match log.file.write_all(line.as_bytes()) {
        Ok(()) => log.lines += 1,
        Err(error) => tracing::warn!(file = %log.path.display(), "cannot keep an event: {error}"),
    }
}

/// Records an event (any Event subtype with its own fields set) about `entity` by `user`
/// (clipped: it may be a name a client chose).
pub fn post_event(host: &Host, mut event: DataObject, entity: Option<&MoRef>, user: &str) {
    let schema = host.schema;
    {
        let inv = host.inventory();
        for argument in entity_arguments(schema, &inv, entity) {
            event.set(schema, argument.0, argument.1);
        }
    }
    let event = {
        let mut log = lock(&host.events);
        log.next_key += 1;
        let key = log.next_key;
        event.set(schema, "key", key);
        if event.get(schema, "chainId").is_none() {
            event.set(schema, "chainId", key);
        }
        event.set(schema, "createdTime", Value::DateTime(now_micros()));
        event.set(schema, "userName", &*clip(user));
        log.push(event.clone());
        if let Some(file) = &mut log.file {
            keep(schema, file, &event);
        }
        event
    };
    host.mutate(|inv| inv.set(schema, &refs::event_manager(), "latestEvent", event));
}

/// The `datacenter`/`computeResource`/`host`/`vm`/`ds`/`net` arguments for an event about `entity`.
fn entity_arguments(
    schema: &Schema,
    inv: &crate::inventory::Inventory,
    entity: Option<&MoRef>,
) -> Vec<(&'static str, DataObject)> {
    let argument = |ty: &str, obj: &MoRef| {
        let name = inv
            .stored(schema, obj, "name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        DataObject::of(schema, ty).with(schema, "name", name).with(
            schema,
            ty_field(ty),
            obj.clone(),
        )
    };
    let mut out = vec![(
        "datacenter",
        argument("DatacenterEventArgument", &refs::datacenter()),
    )];
    let Some(entity) = entity else { return out };
    match &*entity.ty {
        "VirtualMachine" => {
            out.push((
                "computeResource",
                argument("ComputeResourceEventArgument", &refs::compute_resource()),
            ));
            out.push(("host", argument("HostEventArgument", &refs::host())));
            out.push(("vm", argument("VmEventArgument", entity)));
        }
        "HostSystem" => out.push(("host", argument("HostEventArgument", entity))),
        "ComputeResource" => out.push((
            "computeResource",
            argument("ComputeResourceEventArgument", entity),
        )),
        "Datastore" => out.push(("ds", argument("DatastoreEventArgument", entity))),
        "Network" => out.push(("net", argument("NetworkEventArgument", entity))),
        _ => {}
    }
    out
}

/// The reference field of each EntityEventArgument subtype.
fn ty_field(ty: &str) -> &'static str {
    match ty {
        "DatacenterEventArgument" => "datacenter",
        "ComputeResourceEventArgument" => "computeResource",
        "HostEventArgument" => "host",
        "VmEventArgument" => "vm",
        "DatastoreEventArgument" => "datastore",
        _ => "network",
    }
}

/// The entity references an event names (vm, host, compute resource, datastore, network, datacenter).
pub fn event_entities(schema: &Schema, event: &DataObject) -> Vec<MoRef> {
    ["vm", "host", "computeResource", "ds", "net", "datacenter"]
        .iter()
        .filter_map(|arg| event.lookup(schema, arg).and_then(Value::as_data))
        .filter_map(|a| {
            [
                "vm",
                "host",
                "computeResource",
                "datastore",
                "network",
                "datacenter",
            ]
            .iter()
            .find_map(|f| a.lookup(schema, f).and_then(Value::as_moref).cloned())
        })
        .collect()
}
