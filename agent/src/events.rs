//! The host's event log: events posted with key, chain id, time, user and entity arguments;
//! `EventManager.latestEvent` follows the newest. Queried by QueryEvents and history collectors.

use std::collections::VecDeque;

use vireo_api::limits::clip;
use vireo_api::schema::Schema;
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
