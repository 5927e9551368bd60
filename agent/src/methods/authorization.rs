//! AuthorizationManager over the host's roles and permissions (`crate::authz`): role changes
//! (AddAuthorizationRole, UpdateAuthorizationRole, RemoveAuthorizationRole), permission changes
//! (SetEntityPermissions, ResetEntityPermissions, RemoveEntityPermission, MergePermissions;
//! a permission names a local user or, with `group`, a local group), the Retrieve*
//! queries, and privilege questions about a session or a user (HasPrivilegeOnEntity/-ies,
//! HasUserPrivilegeOnEntities, FetchUserPrivilegeOnEntities). `crate::authz::publish` keeps the
//! manager's roleList, privilegeList and description current.

use std::collections::BTreeSet;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, MoRef, Value};

use super::access;
use super::{Call, Handler, MethodResult, MethodTable};
use crate::authz::{self, EntityRef, Permission, PermissionError, RoleError};
use crate::faults;
use crate::inventory::esxi::refs;
use crate::locks::lock;

fn permission_value(schema: &Schema, p: &Permission) -> Value {
    DataObject::of(schema, "Permission")
        .with(schema, "entity", p.entity.moref())
        .with(schema, "principal", p.principal.as_str())
        .with(schema, "group", p.group)
        .with(schema, "roleId", p.role_id)
        .with(schema, "propagate", p.propagate)
        .into()
}

fn permissions_value(schema: &Schema, list: &[Permission]) -> Value {
    Value::Array(
        schema.known_type("Permission"),
        list.iter().map(|p| permission_value(schema, p)).collect(),
    )
}

fn role_fault(schema: &Schema, error: RoleError) -> Fault {
    let message = error.to_string();
    match error {
        RoleError::NameTaken(name) => faults::already_exists(schema, &name, message),
        RoleError::NotFound(_) => Fault::not_found(schema, message),
        RoleError::System(_) => Fault::invalid_argument(schema, "roleId", message),
        RoleError::UnknownPrivilege(_) => Fault::invalid_argument(schema, "privIds", message),
        RoleError::BadName(name) => faults::invalid_name(schema, &name, message),
        RoleError::InUse(_) => faults::remove_failed(schema, message),
        RoleError::Store(e) => Fault::system_error(schema, e.to_string()),
    }
}

/// The fault a failed permission change raises.
pub fn permission_fault(schema: &Schema, error: PermissionError) -> Fault {
    let message = error.to_string();
    match error {
        PermissionError::UnknownRole(_) | PermissionError::NotFound(_) => {
            Fault::not_found(schema, message)
        }
        PermissionError::LastAdmin => faults::auth_minimum_admin_permission(schema, message),
        PermissionError::Store(e) => Fault::system_error(schema, e.to_string()),
    }
}

fn strings(call: &Call<'_>, name: &str) -> Vec<String> {
    call.arg(name)
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

fn int_arg(call: &Call<'_>, name: &str) -> Result<i32, Fault> {
    call.arg(name)
        .and_then(Value::as_i64)
        .and_then(|v| i32::try_from(v).ok())
        .ok_or_else(|| Fault::invalid_argument(call.schema, name, format!("{name} is required")))
}

/// The `entity` argument, which must be an existing inventory entity.
fn entity_arg(call: &Call<'_>) -> Result<MoRef, Fault> {
    let schema = call.schema;
    let entity = call.moref_arg("entity")?.clone();
    let inv = call.host.inventory();
    match inv.get(&entity) {
        Some(o) if schema.is_a(o.ty, schema.known_type("ManagedEntity")) => Ok(entity),
        _ => Err(Fault::managed_object_not_found(schema, &entity)),
    }
}

/// Permissions from the `permission` argument, placed on `entity`; each must name an account.
fn permissions_arg(call: &Call<'_>, entity: &MoRef) -> Result<Vec<Permission>, Fault> {
    let schema = call.schema;
    let items = call.arg("permission").map(Value::items).unwrap_or_default();
    items
        .iter()
        .map(|item| {
            let p = item.as_data().ok_or_else(|| {
                Fault::invalid_argument(schema, "permission", "a Permission is required")
            })?;
            let principal = p
                .get(schema, "principal")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let group = p
                .get(schema, "group")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let exists = if group {
                call.host.authz().groups().contains_key(principal)
            } else {
                lock(&call.host.accounts).exists(principal)
            };
            if !exists {
                return Err(faults::user_not_found(schema, principal));
            }
            Ok(Permission {
                entity: EntityRef::from(entity),
                principal: principal.to_string(),
                group,
                role_id: p
                    .get(schema, "roleId")
                    .and_then(Value::as_i64)
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| {
                        Fault::invalid_argument(schema, "permission.roleId", "roleId is required")
                    })?,
                propagate: p
                    .get(schema, "propagate")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            })
        })
        .collect()
}

/// AuthorizationManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "AuthorizationManager",
    methods: &[
        (
            "AddAuthorizationRole",
            Handler::Sync(|c| change_role(c, "AddAuthorizationRole")),
        ),
        (
            "UpdateAuthorizationRole",
            Handler::Sync(|c| change_role(c, "UpdateAuthorizationRole")),
        ),
        (
            "RemoveAuthorizationRole",
            Handler::Sync(|c| change_role(c, "RemoveAuthorizationRole")),
        ),
        (
            "SetEntityPermissions",
            Handler::Sync(|c| change_permissions(c, "SetEntityPermissions")),
        ),
        (
            "ResetEntityPermissions",
            Handler::Sync(|c| change_permissions(c, "ResetEntityPermissions")),
        ),
        (
            "RemoveEntityPermission",
            Handler::Sync(|c| change_permissions(c, "RemoveEntityPermission")),
        ),
        ("MergePermissions", Handler::Sync(merge_permissions)),
        (
            "RetrieveAllPermissions",
            Handler::Sync(|c| retrieve_permissions(c, "RetrieveAllPermissions")),
        ),
        (
            "RetrieveEntityPermissions",
            Handler::Sync(|c| retrieve_permissions(c, "RetrieveEntityPermissions")),
        ),
        (
            "RetrieveRolePermissions",
            Handler::Sync(|c| retrieve_permissions(c, "RetrieveRolePermissions")),
        ),
        (
            "HasPrivilegeOnEntity",
            Handler::Sync(|c| privilege_query(c, "HasPrivilegeOnEntity")),
        ),
        (
            "HasPrivilegeOnEntities",
            Handler::Sync(|c| privilege_query(c, "HasPrivilegeOnEntities")),
        ),
        (
            "HasUserPrivilegeOnEntities",
            Handler::Sync(|c| privilege_query(c, "HasUserPrivilegeOnEntities")),
        ),
        (
            "FetchUserPrivilegeOnEntities",
            Handler::Sync(|c| privilege_query(c, "FetchUserPrivilegeOnEntities")),
        ),
    ],
};

fn change_role(call: &Call<'_>, method: &str) -> MethodResult {
    let (host, schema) = (call.host, call.schema);
    let result = match method {
        "AddAuthorizationRole" => {
            let name = call.str_arg("name")?;
            let privileges = strings(call, "privIds");
            host.change_authz(|a| a.add_role(name, &privileges))
                .map(|id| Some(Value::Int(id)))
        }
        "UpdateAuthorizationRole" => {
            let (id, name) = (int_arg(call, "roleId")?, call.str_arg("newName")?);
            let privileges = call.arg("privIds").map(|_| strings(call, "privIds"));
            host.change_authz(|a| a.update_role(id, name, privileges.as_deref()))
                .map(|()| None)
        }
        _ => {
            let id = int_arg(call, "roleId")?;
            let fail_if_used = call
                .arg("failIfUsed")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            host.change_authz(|a| a.remove_role(id, fail_if_used))
                .map(|()| None)
        }
    };
    result.map_err(|e| role_fault(schema, e))
}

fn change_permissions(call: &Call<'_>, method: &str) -> MethodResult {
    let (host, schema) = (call.host, call.schema);
    let entity = entity_arg(call)?;
    let result = match method {
        "SetEntityPermissions" => {
            let set = permissions_arg(call, &entity)?;
            host.change_authz(|a| a.set_permissions(set))
        }
        "ResetEntityPermissions" => {
            let set = permissions_arg(call, &entity)?;
            host.change_authz(|a| a.reset_permissions(&EntityRef::from(&entity), set))
        }
        _ => {
            let user = call.str_arg("user")?;
            let group = call
                .arg("isGroup")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            host.change_authz(|a| a.remove_permission(&EntityRef::from(&entity), user, group))
        }
    };
    result
        .map(|()| None)
        .map_err(|e| permission_fault(schema, e))
}

/// MergePermissions(srcRoleId, dstRoleId): every permission of the first role now grants the
/// second.
fn merge_permissions(call: &Call<'_>) -> MethodResult {
    let (from, to) = (int_arg(call, "srcRoleId")?, int_arg(call, "dstRoleId")?);
    call.host
        .change_authz(|a| a.merge_permissions(from, to))
        .map(|()| None)
        .map_err(|e| permission_fault(call.schema, e))
}

fn retrieve_permissions(call: &Call<'_>, method: &str) -> MethodResult {
    let (host, schema) = (call.host, call.schema);
    let entity = match method {
        "RetrieveEntityPermissions" => Some(entity_arg(call)?),
        _ => None,
    };
    let role = match method {
        "RetrieveRolePermissions" => Some(int_arg(call, "roleId")?),
        _ => None,
    };
    let inherited = entity.is_some()
        && call
            .arg("inherited")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let inv = host.inventory();
    let authz = host.authz();
    if let Some(id) = role.filter(|id| authz.role(*id).is_none()) {
        return Err(Fault::not_found(schema, format!("no role {id}")));
    }
    let listed: Vec<Permission> = match &entity {
        Some(entity) => {
            // Defined on the entity, then (if asked) propagating ones on its ancestors.
            let paths = authz::paths(schema, &inv, entity).unwrap_or_default();
            let mut list: Vec<Permission> = Vec::new();
            for obj in paths.iter().flatten() {
                let on_entity = obj == entity;
                for p in authz.permissions() {
                    let applies = on_entity || (inherited && p.propagate);
                    if applies && p.entity.is(obj) && !list.contains(p) {
                        list.push(p.clone());
                    }
                }
            }
            list
        }
        None => authz
            .permissions()
            .iter()
            .filter(|p| role.is_none_or(|id| p.role_id == id))
            .cloned()
            .collect(),
    };
    // Permissions on entities the caller cannot see are as absent as the entities.
    let user = call.user();
    let visible: Vec<Permission> = listed
        .into_iter()
        .filter(|p| access::holds(schema, &inv, &authz, user, "System.Read", &p.entity.moref()))
        .collect();
    Ok(Some(permissions_value(schema, &visible)))
}

/// Whose privileges a query asks about: a session's user or a named user ("" if none).
fn subject(call: &Call<'_>, method: &str) -> Result<String, Fault> {
    Ok(match method {
        "HasPrivilegeOnEntity" | "HasPrivilegeOnEntities" => call
            .host
            .sessions
            .get(call.str_arg("sessionId")?)
            .map(|s| s.user.clone())
            .unwrap_or_default(),
        _ => call.str_arg("userName")?.to_string(),
    })
}

fn privilege_query(call: &Call<'_>, method: &str) -> MethodResult {
    let (host, schema) = (call.host, call.schema);
    let user = subject(call, method)?;
    let wanted = match method {
        "FetchUserPrivilegeOnEntities" => Vec::new(),
        _ => strings(call, "privId"),
    };
    let entities = call.moref_list_arg(match method {
        "HasPrivilegeOnEntities" | "HasPrivilegeOnEntity" => "entity",
        _ => "entities",
    });
    let inv = host.inventory();
    let authz = host.authz();
    let granted = |p: &str, e: &MoRef| access::holds(schema, &inv, &authz, &user, p, e);
    let availability = |e: &MoRef| -> Value {
        let items = wanted
            .iter()
            .map(|p| {
                DataObject::of(schema, "PrivilegeAvailability")
                    .with(schema, "privId", p.as_str())
                    .with(schema, "isGranted", granted(p, e))
                    .into()
            })
            .collect();
        DataObject::of(schema, "EntityPrivilege")
            .with(schema, "entity", e.clone())
            .with(
                schema,
                "privAvailability",
                Value::Array(schema.known_type("PrivilegeAvailability"), items),
            )
            .into()
    };
    let result = match method {
        "HasPrivilegeOnEntity" => {
            let entity = entities.first().cloned().unwrap_or_else(refs::root_folder);
            Value::Array(
                schema.known_type("boolean"),
                wanted
                    .iter()
                    .map(|p| Value::Bool(granted(p, &entity)))
                    .collect(),
            )
        }
        "HasPrivilegeOnEntities" | "HasUserPrivilegeOnEntities" => Value::Array(
            schema.known_type("EntityPrivilege"),
            entities.iter().map(availability).collect(),
        ),
        _ => Value::Array(
            schema.known_type("UserPrivilegeResult"),
            entities
                .iter()
                .map(|e| {
                    let paths = authz::paths(schema, &inv, e)
                        .unwrap_or_else(|| vec![vec![refs::root_folder()]]);
                    let held = if inv.get(e).is_some() {
                        authz.privileges(&user, &paths)
                    } else {
                        BTreeSet::new()
                    };
                    DataObject::of(schema, "UserPrivilegeResult")
                        .with(schema, "entity", e.clone())
                        .with(schema, "privileges", Value::strings(schema, &held))
                        .into()
                })
                .collect(),
        ),
    };
    Ok(Some(result))
}
