//! UserDirectory: RetrieveUserGroups over the local users (`crate::users`) and groups
//! (`crate::authz`), as ESXi answers it for its local accounts (no domains: `domain` must be
//! absent or empty). A search matches names containing `searchStr` (case-insensitive), or equal
//! to it with `exactMatch`; `belongsToGroup` keeps the members of that group, `belongsToUser`
//! the groups of that user.

use std::collections::BTreeSet;

use vireo_api::{DataObject, Fault, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::locks::lock;

/// UserDirectory's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "UserDirectory",
    methods: &[("RetrieveUserGroups", Handler::Sync(retrieve_user_groups))],
};

fn flag(call: &Call<'_>, name: &str) -> bool {
    call.arg(name).and_then(Value::as_bool).unwrap_or(false)
}

fn optional<'a>(call: &'a Call<'_>, name: &str) -> Option<&'a str> {
    call.arg(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn retrieve_user_groups(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    if let Some(domain) = optional(call, "domain") {
        return Err(Fault::not_found(
            schema,
            format!("no domain {domain}: this host has local accounts only"),
        ));
    }
    let search = call.str_arg("searchStr")?.to_lowercase();
    let exact = flag(call, "exactMatch");
    let matches = |name: &str| {
        let name = name.to_lowercase();
        if exact {
            name == search
        } else {
            name.contains(&search)
        }
    };
    let groups = call.host.authz().groups().clone();
    let in_group =
        optional(call, "belongsToGroup").map(|g| groups.get(g).cloned().unwrap_or_default());
    let of_user = optional(call, "belongsToUser").map(|user| {
        groups
            .iter()
            .filter(|(_, members)| members.contains(user))
            .map(|(group, _)| group.clone())
            .collect::<BTreeSet<String>>()
    });
    let mut found = Vec::new();
    if flag(call, "findUsers") {
        let users = lock(&call.host.accounts).users();
        found.extend(
            users
                .into_iter()
                .filter(|u| matches(u) && in_group.as_ref().is_none_or(|m| m.contains(u)))
                .filter(|_| of_user.is_none())
                .map(|u| (u, false)),
        );
    }
    if flag(call, "findGroups") {
        found.extend(
            groups
                .keys()
                .filter(|g| matches(g) && of_user.as_ref().is_none_or(|o| o.contains(*g)))
                .filter(|_| in_group.is_none())
                .map(|g| (g.clone(), true)),
        );
    }
    let results = found
        .into_iter()
        .map(|(principal, group)| {
            DataObject::of(schema, "UserSearchResult")
                .with(schema, "principal", principal.as_str())
                .with(schema, "fullName", principal.as_str())
                .with(schema, "group", group)
                .into()
        })
        .collect();
    Ok(Some(Value::Array(
        schema.known_type("UserSearchResult"),
        results,
    )))
}
