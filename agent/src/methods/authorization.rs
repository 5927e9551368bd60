//! AuthorizationManager: the privilege list (every privilege the schema's methods and
//! properties name), the system roles, and permission queries. Every local account holds Admin
//! on the root folder, so privilege checks grant everything to a logged-in user.

use std::collections::BTreeSet;

use vireo_api::schema::{Schema, TypeKind};
use vireo_api::{DataObject, Fault, MoRef, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::inventory::esxi::refs;
use crate::inventory::Inventory;

/// The system roles: id, name, and the privileges they hold (`None` = all).
const ROLES: [(i32, &str, Option<&[&str]>); 5] = [
    (-5, "NoAccess", Some(&[])),
    (-4, "Anonymous", Some(&["System.Anonymous"])),
    (-3, "View", Some(&["System.Anonymous", "System.View"])),
    (
        -2,
        "ReadOnly",
        Some(&["System.Anonymous", "System.View", "System.Read"]),
    ),
    (-1, "Admin", None),
];

/// Every privilege id named in the schema, sorted.
pub fn schema_privileges(schema: &Schema) -> Vec<String> {
    let mut privileges = BTreeSet::new();
    privileges.extend(["System.Anonymous", "System.View", "System.Read"].map(String::from));
    privileges.extend(
        schema
            .methods()
            .filter_map(|m| m.privilege.as_deref().map(String::from)),
    );
    for (_, ty) in schema.types() {
        if let TypeKind::Managed { properties, .. } = &ty.kind {
            privileges.extend(
                properties
                    .iter()
                    .filter_map(|p| p.privilege.as_deref().map(String::from)),
            );
        }
    }
    privileges.into_iter().filter(|p| p.contains('.')).collect()
}

/// Fills the AuthorizationManager's privilegeList, roleList and description.
pub fn fill_manager(schema: &Schema, inv: &mut Inventory, manager: &MoRef) {
    let privileges = schema_privileges(schema);
    let description = |key: &str, label: &str| {
        DataObject::of(schema, "ElementDescription")
            .with(schema, "key", key)
            .with(schema, "label", label)
            .with(schema, "summary", label)
    };
    let privilege_list = privileges
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
        .collect();
    let roles = ROLES
        .iter()
        .map(|(id, name, held)| {
            let held: Vec<&str> = match held {
                Some(list) => list.to_vec(),
                None => privileges.iter().map(String::as_str).collect(),
            };
            DataObject::of(schema, "AuthorizationRole")
                .with(schema, "roleId", *id)
                .with(schema, "system", true)
                .with(schema, "name", *name)
                .with(schema, "info", description(name, name))
                .with(schema, "privilege", Value::strings(schema, held))
                .into()
        })
        .collect();
    let groups: BTreeSet<&str> = privileges
        .iter()
        .filter_map(|p| p.rsplit_once('.').map(|(g, _)| g))
        .collect();
    let auth_description = DataObject::of(schema, "AuthorizationDescription")
        .with(
            schema,
            "privilege",
            Value::Array(
                schema.known_type("ElementDescription"),
                privileges
                    .iter()
                    .map(|p| description(p, p).into())
                    .collect(),
            ),
        )
        .with(
            schema,
            "privilegeGroup",
            Value::Array(
                schema.known_type("ElementDescription"),
                groups.iter().map(|g| description(g, g).into()).collect(),
            ),
        );
    inv.set(
        schema,
        manager,
        "privilegeList",
        Value::Array(schema.known_type("AuthorizationPrivilege"), privilege_list),
    );
    inv.set(
        schema,
        manager,
        "roleList",
        Value::Array(schema.known_type("AuthorizationRole"), roles),
    );
    inv.set(schema, manager, "description", auth_description);
}

/// AuthorizationManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "AuthorizationManager",
    methods: &[
        (
            "HasPrivilegeOnEntities",
            Handler::Sync(has_privilege_on_entities),
        ),
        (
            "HasUserPrivilegeOnEntities",
            Handler::Sync(has_user_privilege_on_entities),
        ),
        (
            "HasPrivilegeOnEntity",
            Handler::Sync(has_privilege_on_entity),
        ),
        (
            "FetchUserPrivilegeOnEntities",
            Handler::Sync(fetch_user_privileges),
        ),
        ("RetrieveAllPermissions", Handler::Sync(permissions)),
        ("RetrieveEntityPermissions", Handler::Sync(permissions)),
        ("RetrieveRolePermissions", Handler::Sync(role_permissions)),
    ],
};

/// The privilege ids of argument `name`.
fn privileges(call: &Call<'_>, name: &str) -> Vec<String> {
    call.arg(name)
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

fn user_known(call: &Call<'_>, user: &str) -> bool {
    crate::host::lock(&call.host.accounts).exists(user)
}

fn has_privilege_on_entities(call: &Call<'_>) -> MethodResult {
    let granted = call.host.sessions.get(call.str_arg("sessionId")?).is_some();
    entity_privileges(call, "entity", granted)
}

fn has_user_privilege_on_entities(call: &Call<'_>) -> MethodResult {
    let granted = user_known(call, call.str_arg("userName")?);
    entity_privileges(call, "entities", granted)
}

/// An EntityPrivilege per entity of argument `entities_arg`, each privilege `granted` or not.
fn entity_privileges(call: &Call<'_>, entities_arg: &str, granted: bool) -> MethodResult {
    let schema = call.schema;
    let wanted = privileges(call, "privId");
    let entities: Vec<Value> = call
        .arg(entities_arg)
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_moref)
        .map(|entity| {
            let availability = wanted
                .iter()
                .map(|p| {
                    DataObject::of(schema, "PrivilegeAvailability")
                        .with(schema, "privId", p.as_str())
                        .with(schema, "isGranted", granted)
                        .into()
                })
                .collect();
            DataObject::of(schema, "EntityPrivilege")
                .with(schema, "entity", entity.clone())
                .with(
                    schema,
                    "privAvailability",
                    Value::Array(schema.known_type("PrivilegeAvailability"), availability),
                )
                .into()
        })
        .collect();
    Ok(Some(Value::Array(
        schema.known_type("EntityPrivilege"),
        entities,
    )))
}

fn has_privilege_on_entity(call: &Call<'_>) -> MethodResult {
    let granted = call.host.sessions.get(call.str_arg("sessionId")?).is_some();
    Ok(Some(Value::Array(
        call.schema.known_type("boolean"),
        privileges(call, "privId")
            .iter()
            .map(|_| Value::Bool(granted))
            .collect(),
    )))
}

fn fetch_user_privileges(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let user = call.str_arg("userName")?;
    let held = if user_known(call, user) {
        schema_privileges(schema)
    } else {
        Vec::new()
    };
    let results = call
        .arg("entities")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_moref)
        .map(|e| {
            DataObject::of(schema, "UserPrivilegeResult")
                .with(schema, "entity", e.clone())
                .with(schema, "privileges", Value::strings(schema, &held))
                .into()
        })
        .collect();
    Ok(Some(Value::Array(
        schema.known_type("UserPrivilegeResult"),
        results,
    )))
}

/// RetrieveRolePermissions: Admin's permissions; none for the other system roles.
fn role_permissions(call: &Call<'_>) -> MethodResult {
    let role = call.arg("roleId").and_then(Value::as_i64);
    if role == Some(-1) {
        return permissions(call);
    }
    if ROLES.iter().any(|(id, ..)| Some(*id as i64) == role) {
        Ok(None)
    } else {
        Err(Fault::not_found(call.schema, "no such role"))
    }
}

/// Every local account's Admin permission on the root folder.
fn permissions(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let accounts = crate::host::lock(&call.host.accounts);
    let users = accounts.users();
    let permissions = users
        .iter()
        .map(|user| {
            DataObject::of(schema, "Permission")
                .with(schema, "entity", refs::root_folder())
                .with(schema, "principal", user.as_str())
                .with(schema, "group", false)
                .with(schema, "roleId", -1)
                .with(schema, "propagate", true)
                .into()
        })
        .collect();
    Ok(Some(Value::Array(
        schema.known_type("Permission"),
        permissions,
    )))
}
