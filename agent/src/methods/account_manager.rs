//! HostLocalAccountManager: CreateUser, UpdateUser, RemoveUser and ChangePassword over the local
//! accounts (`crate::users`), and CreateGroup, RemoveGroup, AssignUserToGroup and
//! UnassignUserFromGroup over the local groups (kept with the permissions, `crate::authz`). A
//! new account holds no permission until one is granted (to it or to a group of its);
//! removing an account removes its permissions (never the last Admin one) and memberships and
//! ends its sessions. Passwords are hashed on a blocking thread, outside the accounts lock.

use vireo_api::schema::Schema;
use vireo_api::{Fault, Value};

use super::authorization::permission_fault;
use super::{Call, Handler, MethodResult, MethodTable, PendingResult};
use crate::authz::GroupError;
use crate::faults::{already_exists, user_not_found};
use crate::locks::lock;
use crate::sessions::end_session;
use crate::users::{hash_password, Accounts, AccountsError};

/// Longest user name accepted (ESXi's limit for local accounts).
const MAX_NAME: usize = 31;

/// HostLocalAccountManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostLocalAccountManager",
    methods: &[
        ("CreateUser", Handler::Async(create_user)),
        ("UpdateUser", Handler::Async(update_user)),
        ("RemoveUser", Handler::Sync(remove_user)),
        ("ChangePassword", Handler::Async(change_password)),
        ("CreateGroup", Handler::Sync(create_group)),
        ("RemoveGroup", Handler::Sync(remove_group)),
        ("AssignUserToGroup", Handler::Sync(|c| membership(c, true))),
        (
            "UnassignUserFromGroup",
            Handler::Sync(|c| membership(c, false)),
        ),
    ],
};

/// CreateGroup(group: HostAccountSpec): an empty group (its description is not kept).
fn create_group(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let id = call
        .arg("group")
        .and_then(Value::as_data)
        .and_then(|spec| spec.get(schema, "id"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    check_name(schema, "group.id", id)?;
    call.host
        .change_authz(|a| a.add_group(id))
        .map(|()| None)
        .map_err(|e| group_fault(schema, e))
}

/// RemoveGroup(groupName): the group and the permissions naming it.
fn remove_group(call: &Call<'_>) -> MethodResult {
    let group = call.str_arg("groupName")?;
    call.host
        .change_authz(|a| a.remove_group(group))
        .map(|()| None)
        .map_err(|e| group_fault(call.schema, e))
}

/// AssignUserToGroup / UnassignUserFromGroup(user, group).
fn membership(call: &Call<'_>, add: bool) -> MethodResult {
    let schema = call.schema;
    let (user, group) = (call.str_arg("user")?, call.str_arg("group")?);
    if !lock(&call.host.accounts).exists(user) {
        return Err(user_not_found(schema, user));
    }
    call.host
        .change_authz(|a| a.set_membership(group, user, add))
        .map(|()| None)
        .map_err(|e| group_fault(schema, e))
}

fn group_fault(schema: &Schema, error: GroupError) -> Fault {
    let message = error.to_string();
    match error {
        GroupError::Exists(group) => already_exists(schema, &group, message),
        GroupError::Member { user, .. } => already_exists(schema, &user, message),
        GroupError::NotFound(group) => user_not_found(schema, &group),
        GroupError::NotMember { user, .. } => user_not_found(schema, &user),
        GroupError::Permission(e) => permission_fault(schema, e),
        GroupError::Store(e) => Fault::system_error(schema, e.to_string()),
    }
}

fn create_user<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(save_user(call, true))
}

fn update_user<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(save_user(call, false))
}

fn change_password<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(check_and_change_password(call))
}

/// CreateUser (`create`) or UpdateUser from a HostAccountSpec (its description is not kept:
/// no method reads it back).
async fn save_user(call: &Call<'_>, create: bool) -> MethodResult {
    let schema = call.schema;
    let spec = call
        .arg("user")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument(schema, "user", "a HostAccountSpec is required"))?;
    let text = |name: &str| spec.get(schema, name).and_then(Value::as_str);
    let id = text("id").unwrap_or_default();
    let password = text("password");
    if create {
        check_name(schema, "user.id", id)?;
        if password.is_none() {
            return Err(Fault::invalid_argument(
                schema,
                "user.password",
                "a password is required",
            ));
        }
    }
    check_exists(schema, &lock(&call.host.accounts), id, create)?;
    let Some(password) = password else {
        return Ok(None);
    };
    let hash = hash_off_runtime(call, password).await?;
    let mut accounts = lock(&call.host.accounts);
    check_exists(schema, &accounts, id, create)?; // again: another call may have raced us
    accounts
        .set_hash(id, hash)
        .map(|()| None)
        .map_err(|e| accounts_fault(schema, e))
}

/// AlreadyExists when creating an existing user, UserNotFound when updating a missing one.
fn check_exists(schema: &Schema, accounts: &Accounts, id: &str, create: bool) -> Result<(), Fault> {
    match (create, accounts.exists(id)) {
        (true, true) => Err(already_exists(schema, id, format!("user {id} exists"))),
        (false, false) => Err(user_not_found(schema, id)),
        _ => Ok(()),
    }
}

/// RemoveUser: its permissions (never the last Admin one), its account, its sessions.
fn remove_user(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let user = call.str_arg("userName")?;
    if !lock(&call.host.accounts).exists(user) {
        return Err(user_not_found(schema, user));
    }
    call.host
        .change_authz(|a| a.remove_principal(user))
        .map_err(|e| permission_fault(schema, e))?;
    lock(&call.host.accounts)
        .remove(user)
        .map_err(|e| accounts_fault(schema, e))?;
    for session in call.host.sessions.all().iter().filter(|s| s.user == user) {
        end_session(call.host, &session.key);
    }
    Ok(None)
}

/// ChangePassword(user, oldPassword, newPassword): a logged-in user changes their own password
/// by proving the old one. It needs a session of that user, and the old password is checked
/// like a login (counted towards the lockout), so it is no password oracle.
async fn check_and_change_password(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let session = call.session()?;
    let user = call.str_arg("user")?;
    let old = call.str_arg("oldPassword")?;
    let new = call.str_arg("newPassword")?;
    if session.user != user {
        return Err(Fault::no_permission(
            schema,
            call.this(),
            "Host.Local.ManageUserGroups",
        ));
    }
    let valid = call
        .host
        .logins
        .check(&call.host.accounts, (user, old), call.peer.ip)
        .await
        .map_err(|e| Fault::system_error(schema, e.to_string()))?;
    if !valid {
        return Err(Fault::invalid_login(schema));
    }
    let hash = hash_off_runtime(call, new).await?;
    lock(&call.host.accounts)
        .set_hash(user, hash)
        .map(|()| None)
        .map_err(|e| accounts_fault(schema, e))
}

/// Hashes a password on a blocking thread.
async fn hash_off_runtime(call: &Call<'_>, password: &str) -> Result<String, Fault> {
    let schema = call.schema;
    let password = password.to_string();
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| Fault::system_error(schema, e.to_string()))?
        .map_err(|e| accounts_fault(schema, e))
}

/// Names (of users and groups, argument `field`) stay within what the account file and log
/// lines can hold unambiguously.
fn check_name(schema: &Schema, field: &str, id: &str) -> Result<(), Fault> {
    let valid = !id.is_empty()
        && id.len() <= MAX_NAME
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if valid {
        return Ok(());
    }
    Err(Fault::invalid_argument(
        schema,
        field,
        format!("a name is 1 to {MAX_NAME} letters, digits, '.', '_', '-' or '@'"),
    ))
}

fn accounts_fault(schema: &Schema, error: AccountsError) -> Fault {
    Fault::system_error(schema, error.to_string())
}
