//! The roles and privileges as the AuthorizationManager shows them: its roleList,
//! privilegeList and description properties, rewritten whenever the roles change.

use std::collections::BTreeSet;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Value};

use super::Role;
use crate::host::Host;
use crate::inventory::esxi::refs;

/// Writes roleList, privilegeList and description into the AuthorizationManager.
pub fn publish(host: &Host) {
    let schema = host.schema;
    let (roles, privileges) = {
        let authz = host.authz();
        (authz.roles().to_vec(), authz.known_privileges().clone())
    };
    let role_list = Value::Array(
        schema.known_type("AuthorizationRole"),
        roles.iter().map(|r| role_value(schema, r)).collect(),
    );
    let privilege_list = Value::Array(
        schema.known_type("AuthorizationPrivilege"),
        privileges
            .iter()
            .map(|p| {
                let (group, name) = p.rsplit_once('.').unwrap_or(("", p));
                DataObject::of(schema, "AuthorizationPrivilege")
                    .with(schema, "privId", p.as_str())
                    .with(schema, "onParent", false)
                    .with(schema, "name", name)
                    .with(schema, "privGroupName", group)
                    .into()
            })
            .collect(),
    );
    let groups: BTreeSet<&str> = privileges
        .iter()
        .filter_map(|p| p.rsplit_once('.').map(|(g, _)| g))
        .collect();
    let descriptions = |keys: &mut dyn Iterator<Item = &str>| {
        Value::Array(
            schema.known_type("ElementDescription"),
            keys.map(|k| description(schema, k).into()).collect(),
        )
    };
    let auth_description = DataObject::of(schema, "AuthorizationDescription")
        .with(
            schema,
            "privilege",
            descriptions(&mut privileges.iter().map(String::as_str)),
        )
        .with(
            schema,
            "privilegeGroup",
            descriptions(&mut groups.iter().copied()),
        );
    let manager = refs::authorization_manager();
    host.mutate(|inv| {
        inv.set(schema, &manager, "privilegeList", privilege_list);
        inv.set(schema, &manager, "roleList", role_list);
        inv.set(schema, &manager, "description", auth_description);
    });
}

fn description(schema: &Schema, key: &str) -> DataObject {
    DataObject::of(schema, "ElementDescription")
        .with(schema, "key", key)
        .with(schema, "label", key)
        .with(schema, "summary", key)
}

fn role_value(schema: &Schema, role: &Role) -> Value {
    DataObject::of(schema, "AuthorizationRole")
        .with(schema, "roleId", role.id)
        .with(schema, "system", role.is_system())
        .with(schema, "name", role.name.as_str())
        .with(schema, "info", description(schema, &role.name))
        .with(
            schema,
            "privilege",
            Value::strings(schema, &role.privileges),
        )
        .into()
}
