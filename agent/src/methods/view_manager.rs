//! ViewManager: creates session-scoped views, a ContainerView (contents computed from the
//! inventory at read time, filtered by type, optionally recursive) or a ListView (an explicit
//! list, edited by `list_view`).

use std::collections::HashSet;

use vireo_api::schema::Schema;
use vireo_api::{Fault, MoRef, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::inventory::Inventory;

/// ViewManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "ViewManager",
    methods: &[
        ("CreateContainerView", Handler::Sync(create_container_view)),
        ("CreateListView", Handler::Sync(create_list_view)),
        (
            "CreateListViewFromView",
            Handler::Sync(create_list_view_from_view),
        ),
    ],
};

fn create_container_view(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let container = call.moref_arg("container")?.clone();
    // Any existing container will do: the view lists only what the caller may see.
    let container_ty = call.objects(&call.host.inventory()).scoped_type(&container);
    let container_ty =
        container_ty.ok_or_else(|| Fault::managed_object_not_found(schema, &container))?;
    if !schema.is_a(container_ty, schema.known_type("ManagedEntity")) {
        return Err(Fault::invalid_argument(
            schema,
            "container",
            "the container must be a managed entity",
        ));
    }
    let types = call
        .arg("type")
        .cloned()
        .unwrap_or_else(|| Value::strings(schema, Vec::<String>::new()));
    for ty in types.items() {
        let name = ty.as_str().unwrap_or_default();
        if !schema.type_id(name).is_some_and(|t| schema.is_managed(t)) {
            return Err(Fault::invalid_argument(
                schema,
                "type",
                format!("{name} is not a managed object type"),
            ));
        }
    }
    let recursive = call
        .arg("recursive")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    create_view(call, "ContainerView", |inv, obj| {
        inv.set(schema, obj, "container", container);
        inv.set(schema, obj, "type", types);
        inv.set(schema, obj, "recursive", recursive);
    })
}

fn create_list_view(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let objects = call
        .arg("obj")
        .cloned()
        .unwrap_or_else(|| Value::refs(schema, []));
    create_view(call, "ListView", |inv, obj| {
        inv.set(schema, obj, "view", objects)
    })
}

fn create_list_view_from_view(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let source = call.moref_arg("view")?.clone();
    let contents = view_contents(call, &source)?;
    create_view(call, "ListView", |inv, obj| {
        inv.set(schema, obj, "view", Value::refs(schema, &contents))
    })
}

fn create_view(
    call: &Call<'_>,
    ty: &str,
    fill: impl FnOnce(&mut Inventory, &MoRef),
) -> MethodResult {
    let session = call.session()?;
    call.check_session_quota(session)?;
    let obj = session.scoped_ref(ty, call.host.next_id());
    call.host.mutate(|inv| {
        inv.insert(call.schema, obj.clone(), Some(session.key.clone()));
        fill(inv, &obj);
    });
    Ok(Some(obj.into()))
}

/// The current contents of a view the caller can see.
pub(super) fn view_contents(call: &Call<'_>, view: &MoRef) -> Result<Vec<MoRef>, Fault> {
    let schema = call.schema;
    let inv = call.host.inventory();
    let objects = call.objects(&inv);
    if objects.visible_type(view).is_none() {
        return Err(Fault::managed_object_not_found(schema, view));
    }
    Ok(match &*view.ty {
        "ContainerView" => container_view_contents(schema, &inv, view),
        _ => inv.refs(schema, view, "view"),
    })
}

/// A ContainerView's current contents: the container's children (all descendants when
/// recursive) whose type matches one of the view's types (any type when none are given).
pub fn container_view_contents(schema: &Schema, inv: &Inventory, view: &MoRef) -> Vec<MoRef> {
    let Some(container) = inv
        .stored(schema, view, "container")
        .and_then(Value::as_moref)
        .cloned()
    else {
        return Vec::new();
    };
    let recursive = inv
        .stored(schema, view, "recursive")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let types: Vec<_> = inv
        .stored(schema, view, "type")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t.as_str().and_then(|n| schema.type_id(n)))
        .collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = vec![container];
    while let Some(parent) = queue.pop() {
        let children = inv.children(schema, &parent);
        for child in children.into_iter().rev() {
            if !seen.insert(child.clone()) {
                continue;
            }
            let Some(ty) = inv.get(&child).map(|o| o.ty) else {
                continue;
            };
            if types.is_empty() || types.iter().any(|t| schema.is_a(ty, *t)) {
                out.push(child.clone());
            }
            if recursive {
                queue.push(child);
            }
        }
    }
    out.sort_by(|a, b| a.ty.cmp(&b.ty).then_with(|| natural_order(&a.id, &b.id)));
    out
}

/// Orders numeric ids numerically ("2" before "10"), others lexically.
fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}
