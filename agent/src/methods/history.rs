//! HistoryCollector, the base of the event and task history collectors: a filter over the event
//! log or task history, a latest page, and a scroll position moved by Rewind and Reset here and
//! by ReadNext/ReadPrevious (the subtypes' methods, served by `read`). The collectors' state is
//! `crate::collectors::HistoryCollector`.

use std::collections::HashSet;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, MoRef, Value};

use super::access;
use super::{Call, Handler, MethodResult, MethodTable};
use crate::collectors::HistoryCollector;
pub use crate::collectors::HistoryKind;
use crate::events::event_entities;
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::Inventory;
use crate::locks::lock;

/// Default latest-page size.
const DEFAULT_PAGE_SIZE: usize = 10;

/// The newest `page_size` items matching `collector`'s filter, newest first (its latestPage).
pub fn latest_page(
    collector: &HistoryCollector,
    host: &Host,
    inv: &Inventory,
    viewer: &str,
) -> Value {
    let mut items = matching_items(host, inv, collector.kind, collector.filter.as_ref(), viewer);
    let start = items.len().saturating_sub(collector.page_size);
    let mut page: Vec<Value> = items.drain(start..).map(Value::from).collect();
    page.reverse();
    Value::Array(item_type(host.schema, collector.kind), page)
}

fn item_type(schema: &Schema, kind: HistoryKind) -> vireo_api::schema::TypeId {
    schema.known_type(match kind {
        HistoryKind::Events => "Event",
        HistoryKind::Tasks => "TaskInfo",
    })
}

/// CreateCollectorForEvents / CreateCollectorForTasks.
pub fn create_collector(call: &Call<'_>, kind: HistoryKind, ty: &str) -> MethodResult {
    let session = call.session()?;
    call.check_session_quota(session)?;
    let filter = call.arg("filter").and_then(Value::as_data).cloned();
    let obj = session.scoped_ref(ty, call.host.next_id());
    let total = matching_items(
        call.host,
        &call.host.inventory(),
        kind,
        filter.as_ref(),
        call.user(),
    )
    .len();
    let collector = HistoryCollector {
        kind,
        filter: filter.clone(),
        page_size: DEFAULT_PAGE_SIZE,
        position: total.saturating_sub(DEFAULT_PAGE_SIZE),
    };
    lock(&call.host.history_collectors).insert(obj.clone(), collector);
    call.host.mutate(|inv| {
        inv.insert(call.schema, obj.clone(), Some(session.key.clone()));
        if let Some(filter) = filter {
            inv.set(call.schema, &obj, "filter", filter);
        }
    });
    Ok(Some(obj.into()))
}

/// HistoryCollector's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HistoryCollector",
    methods: &[
        ("RewindCollector", Handler::Sync(rewind)),
        ("ResetCollector", Handler::Sync(reset)),
        ("SetCollectorPageSize", Handler::Sync(set_page_size)),
        ("DestroyCollector", Handler::Sync(destroy)),
    ],
};

/// Which way ReadNext/ReadPrevious scrolls.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Newer items, oldest first.
    Next,
    /// Older items, newest first.
    Previous,
}

fn destroy(call: &Call<'_>) -> MethodResult {
    let this = call.this().clone();
    lock(&call.host.history_collectors).remove(&this);
    call.host.mutate(|inv| inv.remove(&this));
    Ok(None)
}

/// Runs `scroll` on `_this`'s collector with the items matching its filter (oldest first).
fn with_collector<R>(
    call: &Call<'_>,
    scroll: impl FnOnce(&mut HistoryCollector, Vec<DataObject>) -> R,
) -> Result<R, Fault> {
    let this = call.this();
    let mut collectors = lock(&call.host.history_collectors);
    let collector = collectors
        .get_mut(this)
        .ok_or_else(|| Fault::managed_object_not_found(call.schema, this))?;
    let items = matching_items(
        call.host,
        &call.host.inventory(),
        collector.kind,
        collector.filter.as_ref(),
        call.user(),
    );
    Ok(scroll(collector, items))
}

fn max_count(call: &Call<'_>) -> usize {
    call.arg("maxCount")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .max(0) as usize
}

/// ReadNextEvents/Tasks and ReadPreviousEvents/Tasks: up to maxCount items from the scroll
/// position, which moves past them.
pub fn read(call: &Call<'_>, direction: Direction) -> MethodResult {
    let max = max_count(call);
    let (kind, page) = with_collector(call, |collector, items| {
        let page: Vec<DataObject> = match direction {
            Direction::Next => {
                let start = collector.position.min(items.len());
                let end = (start + max).min(items.len());
                collector.position = end;
                items[start..end].to_vec()
            }
            Direction::Previous => {
                let end = collector.position.min(items.len());
                let start = end.saturating_sub(max);
                collector.position = start;
                items[start..end].iter().rev().cloned().collect()
            }
        };
        (collector.kind, page)
    })?;
    if page.is_empty() {
        return Ok(None);
    }
    Ok(Some(Value::Array(
        item_type(call.schema, kind),
        page.into_iter().map(Value::from).collect(),
    )))
}

fn rewind(call: &Call<'_>) -> MethodResult {
    with_collector(call, |collector, _| collector.position = 0)?;
    Ok(None)
}

fn reset(call: &Call<'_>) -> MethodResult {
    with_collector(call, |collector, items| {
        collector.position = items.len().saturating_sub(collector.page_size);
    })?;
    Ok(None)
}

fn set_page_size(call: &Call<'_>) -> MethodResult {
    let size = max_count(call);
    with_collector(call, |collector, items| {
        collector.page_size = size;
        collector.position = items.len().saturating_sub(collector.page_size);
    })?;
    call.host.mutate(|_| ());
    Ok(None)
}

/// Events or task infos matching a filter spec, oldest first.
pub fn matching_items(
    host: &Host,
    inv: &Inventory,
    kind: HistoryKind,
    filter: Option<&DataObject>,
    viewer: &str,
) -> Vec<DataObject> {
    let schema = host.schema;
    let sees_sessions = access::may_see_sessions(host, inv, viewer);
    let scope = filter.and_then(|f| entity_scope(schema, inv, f));
    let text_set = |name: &str| -> Option<HashSet<String>> {
        let value = filter?.get(schema, name)?;
        Some(
            value
                .items()
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        )
    };
    let users = filter
        .and_then(|f| f.get(schema, "userName"))
        .and_then(Value::as_data)
        .and_then(|u| u.get(schema, "userList"))
        .map(|l| {
            l.items()
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect::<HashSet<_>>()
        });
    let chain = filter
        .and_then(|f| f.get(schema, "eventChainId"))
        .and_then(Value::as_i64);
    let (begin, end) = time_range(schema, filter);
    match kind {
        HistoryKind::Events => {
            let types = text_set("eventTypeId").or_else(|| text_set("type"));
            let log = lock(&host.events);
            log.all()
                .filter(|e| {
                    types
                        .as_ref()
                        .is_none_or(|t| t.contains(&*schema.ty(e.ty).name))
                })
                .filter(|e| {
                    users.as_ref().is_none_or(|u| {
                        e.get(schema, "userName")
                            .and_then(Value::as_str)
                            .is_some_and(|n| u.contains(n))
                    })
                })
                .filter(|e| {
                    chain
                        .is_none_or(|c| e.get(schema, "chainId").and_then(Value::as_i64) == Some(c))
                })
                .filter(|e| in_range(e.get(schema, "createdTime"), begin, end))
                .filter(|e| {
                    scope
                        .as_ref()
                        .is_none_or(|s| event_entities(schema, e).iter().any(|r| s.contains(r)))
                })
                .filter(|e| may_see(host, inv, viewer, &event_entities(schema, e)))
                .map(|e| without_others_session_keys(schema, e, viewer, sees_sessions))
                .collect()
        }
        HistoryKind::Tasks => {
            let states = text_set("state");
            let log = lock(&host.tasks);
            log.history()
                .filter(|t| {
                    states.as_ref().is_none_or(|s| {
                        t.get(schema, "state")
                            .and_then(Value::as_str)
                            .is_some_and(|v| s.contains(v))
                    })
                })
                .filter(|t| {
                    chain.is_none_or(|c| {
                        t.get(schema, "eventChainId").and_then(Value::as_i64) == Some(c)
                    })
                })
                .filter(|t| in_range(t.get(schema, "queueTime"), begin, end))
                .filter(|t| {
                    let user = t
                        .get(schema, "reason")
                        .and_then(Value::as_data)
                        .and_then(|r| r.get(schema, "userName"))
                        .and_then(Value::as_str);
                    users
                        .as_ref()
                        .is_none_or(|u| user.is_some_and(|n| u.contains(n)))
                })
                .filter(|t| {
                    scope.as_ref().is_none_or(|s| {
                        t.get(schema, "entity")
                            .and_then(Value::as_moref)
                            .is_some_and(|e| s.contains(e))
                    })
                })
                .filter(|t| {
                    let entity = t.get(schema, "entity").and_then(Value::as_moref).cloned();
                    may_see(host, inv, viewer, entity.as_slice())
                })
                .cloned()
                .collect()
        }
    }
}

/// Whether `viewer` may see an event or task about `entities` (most specific first): the first
/// that still exists decides; one about no existing entity answers to the root folder.
fn may_see(host: &Host, inv: &Inventory, viewer: &str, entities: &[MoRef]) -> bool {
    let entity = entities
        .iter()
        .find(|e| inv.get(e).is_some())
        .cloned()
        .unwrap_or_else(refs::root_folder);
    access::may_read(host, inv, viewer, &entity)
}

/// An event as `viewer` may read it: another user's session key (a login's cookie) only for
/// those who may see every session.
fn without_others_session_keys(
    schema: &Schema,
    event: &DataObject,
    viewer: &str,
    sees_sessions: bool,
) -> DataObject {
    let mut event = event.clone();
    let own = event.get(schema, "userName").and_then(Value::as_str) == Some(viewer);
    if !own && !sees_sessions {
        if let Some(i) = schema.field_index(event.ty, "sessionId") {
            event.fields[i] = Some(Value::string("<hidden>"));
        }
    }
    event
}

/// The entities an `entity` filter (EventFilterSpecByEntity / TaskFilterSpecByEntity) covers.
fn entity_scope(schema: &Schema, inv: &Inventory, filter: &DataObject) -> Option<HashSet<MoRef>> {
    let by_entity = filter.get(schema, "entity")?.as_data()?;
    let root = by_entity.get(schema, "entity")?.as_moref()?.clone();
    let recursion = by_entity
        .get(schema, "recursion")
        .and_then(Value::as_str)
        .unwrap_or("self")
        .to_string();
    let mut scope = HashSet::new();
    if recursion == "self" || recursion == "all" {
        scope.insert(root.clone());
    }
    let mut queue = vec![(root, 0)];
    while let Some((obj, depth)) = queue.pop() {
        if recursion == "self" || (recursion == "children" && depth >= 1) {
            continue;
        }
        for child in inv.children(schema, &obj) {
            if scope.insert(child.clone()) && recursion == "all" {
                queue.push((child, depth + 1));
            }
        }
    }
    Some(scope)
}

fn time_range(schema: &Schema, filter: Option<&DataObject>) -> (Option<i64>, Option<i64>) {
    let time = filter
        .and_then(|f| f.get(schema, "time"))
        .and_then(Value::as_data);
    let at = |name: &str| match time.and_then(|t| t.get(schema, name)) {
        Some(Value::DateTime(t)) => Some(*t),
        _ => None,
    };
    (at("beginTime"), at("endTime"))
}

fn in_range(value: Option<&Value>, begin: Option<i64>, end: Option<i64>) -> bool {
    let Some(Value::DateTime(t)) = value else {
        return begin.is_none() && end.is_none();
    };
    begin.is_none_or(|b| *t >= b) && end.is_none_or(|e| *t <= e)
}
