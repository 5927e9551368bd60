//! ListView: ModifyListView, ResetListView and ResetListViewFromView edit the explicit list;
//! objects the caller cannot see are dropped and returned.

use std::collections::HashSet;

use vireo_api::{MoRef, Value};

use super::view_manager::view_contents;
use super::{Call, Handler, MethodResult, MethodTable};

/// ListView's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "ListView",
    methods: &[
        (
            "ModifyListView",
            Handler::Sync(|call| edit(call, Edit::Modify)),
        ),
        (
            "ResetListView",
            Handler::Sync(|call| edit(call, Edit::Reset)),
        ),
        (
            "ResetListViewFromView",
            Handler::Sync(|call| edit(call, Edit::ResetFromView)),
        ),
    ],
};

/// How a list is edited.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edit {
    /// Adds `add`, removes `remove`.
    Modify,
    /// Replaces the list with `obj`.
    Reset,
    /// Replaces the list with another view's contents.
    ResetFromView,
}

fn edit(call: &Call<'_>, edit: Edit) -> MethodResult {
    let schema = call.schema;
    let this = call.this().clone();
    let mut current = call.host.inventory().refs(schema, &this, "view");
    match edit {
        Edit::Modify => {
            current.extend(call.moref_list_arg("add"));
            let remove: HashSet<MoRef> = call.moref_list_arg("remove").into_iter().collect();
            current.retain(|r| !remove.contains(r));
        }
        Edit::Reset => current = call.moref_list_arg("obj"),
        Edit::ResetFromView => current = view_contents(call, call.moref_arg("view")?)?,
    }
    let mut seen = HashSet::new();
    current.retain(|r| seen.insert(r.clone()));
    let (kept, unresolved): (Vec<MoRef>, Vec<MoRef>) = {
        let inv = call.host.inventory();
        let objects = call.objects(&inv);
        current
            .into_iter()
            .partition(|r| objects.visible_type(r).is_some())
    };
    call.host
        .mutate(|inv| inv.set(schema, &this, "view", Value::refs(schema, &kept)));
    Ok((!unresolved.is_empty() && edit != Edit::ResetFromView)
        .then(|| Value::refs(schema, &unresolved)))
}
