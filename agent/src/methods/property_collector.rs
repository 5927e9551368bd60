//! PropertyCollector methods over the api crate's collector: RetrieveProperties(Ex) with
//! maxObjects paging, filters per session and collector, and WaitForUpdates(Ex)/CheckForUpdates
//! with real increasing versions, blocking without holding any lock, cancellable.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use vireo_api::collector::{diff, retrieve, FilterSnapshot, FilterSpec, ObjectContent};
use vireo_api::{DataObject, Fault, Value};

use super::{Call, Handler, MethodResult, MethodTable, PendingResult};
use crate::collectors::FilterState;
use crate::faults;
use crate::sessions::Session;

/// PropertyCollector's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "PropertyCollector",
    methods: &[
        ("RetrieveProperties", Handler::Sync(retrieve_properties)),
        ("RetrievePropertiesEx", Handler::Sync(retrieve_ex)),
        (
            "ContinueRetrievePropertiesEx",
            Handler::Sync(continue_retrieve),
        ),
        ("CancelRetrievePropertiesEx", Handler::Sync(cancel_retrieve)),
        ("CreateFilter", Handler::Sync(create_filter)),
        ("CreatePropertyCollector", Handler::Sync(create_collector)),
        ("DestroyPropertyCollector", Handler::Sync(destroy_collector)),
        ("CheckForUpdates", Handler::Sync(check_for_updates)),
        ("CancelWaitForUpdates", Handler::Sync(cancel_wait)),
        ("WaitForUpdates", Handler::Async(wait_for_updates)),
        ("WaitForUpdatesEx", Handler::Async(wait_for_updates_ex)),
    ],
};

fn retrieve_properties(call: &Call<'_>) -> MethodResult {
    let objects = retrieve_all(call)?;
    let items = objects
        .into_iter()
        .map(|c| c.into_value(call.schema).into())
        .collect();
    Ok(Some(Value::Array(
        call.schema.known_type("ObjectContent"),
        items,
    )))
}

fn cancel_retrieve(call: &Call<'_>) -> MethodResult {
    let token = call.str_arg("token")?.to_string();
    let session = call.session()?;
    session.with_collector(call.this(), |c| c.pages.remove(&token));
    Ok(None)
}

fn create_collector(call: &Call<'_>) -> MethodResult {
    let session = call.session()?;
    call.check_session_quota(session)?;
    let obj = session.scoped_ref("PropertyCollector", call.host.next_id());
    call.host.mutate(|inv| {
        inv.insert(call.schema, obj.clone(), Some(session.key.clone()));
    });
    Ok(Some(obj.into()))
}

fn destroy_collector(call: &Call<'_>) -> MethodResult {
    let session = call.session()?;
    if call
        .host
        .inventory()
        .get(call.this())
        .and_then(|o| o.owner.as_ref())
        .is_none()
    {
        return Err(Fault::invalid_argument(
            call.schema,
            "_this",
            "the session's default PropertyCollector cannot be destroyed",
        ));
    }
    let state = vireo_api::MoRef::clone(call.this());
    let filters = crate::locks::lock(&session.collectors)
        .remove(&state)
        .map(|c| c.filter_refs())
        .unwrap_or_default();
    call.host.mutate(|inv| {
        inv.remove(&state);
        for f in &filters {
            inv.remove(f);
        }
    });
    Ok(None)
}

fn check_for_updates(call: &Call<'_>) -> MethodResult {
    let session = call.session()?.clone();
    let version = call
        .arg("version")
        .and_then(Value::as_str)
        .unwrap_or_default();
    collect_updates(call, &session, version, None).map(|u| u.map(Value::from))
}

fn cancel_wait(call: &Call<'_>) -> MethodResult {
    let session = call.session()?;
    session.with_collector(call.this(), |c| c.cancel.notify_waiters());
    Ok(None)
}

/// Legacy WaitForUpdates has no options: it waits as long as it takes.
fn wait_for_updates<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(wait(call, false))
}

fn wait_for_updates_ex<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(wait(call, true))
}

/// WaitForUpdates / WaitForUpdatesEx: waits for a change after `version`, up to maxWaitSeconds.
/// `with_options` for WaitForUpdatesEx (maxWaitSeconds, maxObjectUpdates).
async fn wait(call: &Call<'_>, with_options: bool) -> MethodResult {
    let schema = call.schema;
    let session = call.session()?.clone();
    let version = call
        .arg("version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let option = |name: &str| -> Option<i64> {
        let options = call.arg("options").and_then(Value::as_data)?;
        options.get(schema, name).and_then(Value::as_i64)
    };
    let (max_wait, max_updates) = if with_options {
        (
            option("maxWaitSeconds"),
            option("maxObjectUpdates")
                .filter(|m| *m > 0)
                .map(|m| m as usize),
        )
    } else {
        (None, None)
    };
    let deadline =
        max_wait.map(|s| tokio::time::Instant::now() + Duration::from_secs(s.max(0) as u64));
    let mut changes = call.host.subscribe();
    let cancel = session.with_collector(call.this(), |c| c.cancel.clone());
    loop {
        changes.borrow_and_update();
        let cancelled = cancel.notified();
        if let Some(updates) = collect_updates(call, &session, &version, max_updates)? {
            return Ok(Some(updates.into()));
        }
        if max_wait == Some(0) {
            return Ok(None);
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = cancelled => return Err(faults::request_canceled(schema, "WaitForUpdates was cancelled")),
            _ = sleep_until(deadline) => return Ok(None),
        }
        if call.host.sessions.get(&session.key).is_none() {
            return Err(Fault::not_authenticated(schema, call.this(), "System.View"));
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn retrieve_all(call: &Call<'_>) -> Result<Vec<ObjectContent>, Fault> {
    let schema = call.schema;
    let specs = call.arg("specSet").map(Value::items).unwrap_or_default();
    let inv = call.host.inventory();
    let view = call.objects(&inv);
    let mut out = Vec::new();
    for spec in specs {
        let spec = FilterSpec::parse(schema, spec).map_err(|e| e.to_fault(schema))?;
        for content in retrieve(schema, &view, &spec, call.version)? {
            if !out.iter().any(|c: &ObjectContent| c.obj == content.obj) {
                out.push(content);
            }
        }
    }
    Ok(out)
}

fn retrieve_ex(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let objects = retrieve_all(call)?;
    let max = call
        .arg("options")
        .and_then(Value::as_data)
        .and_then(|o| o.get(schema, "maxObjects"))
        .and_then(Value::as_i64)
        .filter(|m| *m > 0)
        .map(|m| m as usize);
    if objects.is_empty() {
        return Ok(None);
    }
    let page_size = max.unwrap_or(usize::MAX);
    if objects.len() <= page_size {
        return Ok(Some(retrieve_result(call, objects, None).into()));
    }
    let mut pending: VecDeque<ObjectContent> = objects.into();
    let page: Vec<ObjectContent> = pending.drain(..page_size.min(pending.len())).collect();
    let token = if pending.is_empty() {
        None
    } else {
        let session = call.session()?;
        Some(session.with_collector(call.this(), |c| {
            c.next_token += 1;
            let token = c.next_token.to_string();
            c.pages.insert(token.clone(), (pending, page_size));
            token
        }))
    };
    Ok(Some(retrieve_result(call, page, token).into()))
}

fn continue_retrieve(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let token = call.str_arg("token")?.to_string();
    let session = call.session()?;
    let page = session.with_collector(call.this(), |c| {
        let (mut pending, page_size) = c.pages.remove(&token)?;
        let page: Vec<ObjectContent> = pending.drain(..pending.len().min(page_size)).collect();
        if !pending.is_empty() {
            c.pages.insert(token.clone(), (pending, page_size));
            return Some((page, Some(token.clone())));
        }
        Some((page, None))
    });
    let (page, next) = page.ok_or_else(|| {
        Fault::invalid_argument(schema, "token", format!("unknown token {token}"))
    })?;
    Ok(Some(retrieve_result(call, page, next).into()))
}

fn retrieve_result(call: &Call<'_>, page: Vec<ObjectContent>, token: Option<String>) -> DataObject {
    let schema = call.schema;
    let objects = page
        .into_iter()
        .map(|c| c.into_value(schema).into())
        .collect();
    let mut result = DataObject::of(schema, "RetrieveResult").with(
        schema,
        "objects",
        Value::Array(schema.known_type("ObjectContent"), objects),
    );
    if let Some(token) = token {
        result.set(schema, "token", token);
    }
    result
}

fn create_filter(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let session = call.session()?;
    let spec_value = call
        .arg("spec")
        .ok_or_else(|| Fault::invalid_argument(schema, "spec", "spec is required"))?;
    let mut spec = FilterSpec::parse(schema, spec_value).map_err(|e| e.to_fault(schema))?;
    for prop_spec in &spec.prop_set {
        for path in &prop_spec.paths {
            vireo_api::collector::retrieve::check_path(schema, prop_spec.ty, path)?;
        }
    }
    {
        let inv = call.host.inventory();
        let objects = call.objects(&inv);
        if let Some(missing) = spec
            .object_set
            .iter()
            .find(|o| objects.visible_type(&o.obj).is_none())
        {
            return Err(Fault::managed_object_not_found(schema, &missing.obj));
        }
    }
    // Objects that disappear later leave the filter (kind `leave`) instead of failing it.
    spec.report_missing_objects = true;
    call.check_session_quota(session)?;
    let obj = session.scoped_ref("PropertyFilter", call.host.next_id());
    let partial = call
        .arg("partialUpdates")
        .cloned()
        .unwrap_or(Value::Bool(false));
    call.host.mutate(|inv| {
        inv.insert(schema, obj.clone(), Some(session.key.clone()));
        inv.set(schema, &obj, "spec", spec_value.clone());
        inv.set(schema, &obj, "partialUpdates", partial);
    });
    session.with_collector(call.this(), |c| {
        c.filters.push(FilterState {
            obj: obj.clone(),
            spec,
            snapshot: FilterSnapshot::default(),
        })
    });
    Ok(Some(obj.into()))
}

/// Computes an UpdateSet for the session's filters on `_this` since `version` ("" = from
/// scratch); `None` when nothing changed.
fn collect_updates(
    call: &Call<'_>,
    session: &Arc<Session>,
    version: &str,
    max_updates: Option<usize>,
) -> Result<Option<DataObject>, Fault> {
    let schema = call.schema;
    // Work on the filters outside the session lock: reading properties may need it (the
    // collector's own `filter` property), and filters created meanwhile must not be lost.
    let mut filters = session.with_collector(call.this(), |state| {
        if !version.is_empty() && version != state.version.to_string() {
            return Err(faults::invalid_collector_version(schema, version));
        }
        Ok(std::mem::take(&mut state.filters))
    })?;
    if version.is_empty() {
        for filter in &mut filters {
            filter.snapshot = FilterSnapshot::default();
        }
    }
    let mut filter_updates = Vec::new();
    let mut failure = None;
    let mut budget = max_updates;
    let mut truncated = false;
    {
        let inv = call.host.inventory();
        let view = call.objects(&inv);
        for filter in &mut filters {
            let current = match retrieve(schema, &view, &filter.spec, call.version) {
                Ok(current) => current,
                Err(fault) => {
                    failure = Some(fault);
                    break;
                }
            };
            let (mut updates, mut snapshot) = diff(&filter.snapshot, current);
            if let Some(left) = budget.as_mut() {
                if updates.len() > *left {
                    for deferred in updates.drain(*left..) {
                        snapshot.defer(&filter.snapshot, &deferred.obj);
                    }
                    truncated = true;
                }
                *left -= updates.len();
            }
            filter.snapshot = snapshot;
            if updates.is_empty() {
                continue;
            }
            let objects = updates.iter().map(|u| u.to_value(schema).into()).collect();
            let update = DataObject::of(schema, "PropertyFilterUpdate")
                .with(schema, "filter", filter.obj.clone())
                .with(
                    schema,
                    "objectSet",
                    Value::Array(schema.known_type("ObjectUpdate"), objects),
                );
            filter_updates.push(update.into());
        }
    }
    let still_there: Vec<FilterState> = {
        let inv = call.host.inventory();
        filters
            .into_iter()
            .filter(|f| inv.get(&f.obj).is_some())
            .collect()
    };
    session.with_collector(call.this(), |state| {
        let added = std::mem::take(&mut state.filters);
        state.filters = still_there;
        state.filters.extend(added);
        if let Some(fault) = failure {
            return Err(fault);
        }
        if filter_updates.is_empty() && !version.is_empty() {
            return Ok(None);
        }
        state.version += 1;
        let mut set =
            DataObject::of(schema, "UpdateSet").with(schema, "version", state.version.to_string());
        if !filter_updates.is_empty() {
            set.set(
                schema,
                "filterSet",
                Value::Array(schema.known_type("PropertyFilterUpdate"), filter_updates),
            );
        }
        if truncated {
            set.set(schema, "truncated", true);
        }
        Ok(Some(set))
    })
}
