//! HostLocalAccountManager: CreateUser, UpdateUser, RemoveUser and ChangePassword over the local
//! accounts (`crate::users`). A new account holds no permission until one is granted; removing
//! an account removes its permissions (never the last Admin one) and ends its sessions.

use vireo_api::{Fault, Value};

use super::authorization::{permission_fault, user_not_found};
use super::session_manager::end_session;
use super::{Call, Handler, MethodResult, MethodTable};
use crate::host::lock;
use crate::users::AccountsError;

/// Longest user name accepted (ESXi's limit for local accounts).
const MAX_NAME: usize = 31;

/// HostLocalAccountManager's methods (local accounts have no groups, so not the group ones).
pub const METHODS: MethodTable = MethodTable {
    ty: "HostLocalAccountManager",
    methods: &[
        ("CreateUser", Handler::Sync(|c| save_user(c, true))),
        ("UpdateUser", Handler::Sync(|c| save_user(c, false))),
        ("RemoveUser", Handler::Sync(remove_user)),
        ("ChangePassword", Handler::Sync(change_password)),
    ],
};

/// CreateUser (`create`) or UpdateUser from a HostAccountSpec (its description is not kept:
/// no method reads it back).
fn save_user(call: &Call<'_>, create: bool) -> MethodResult {
    let schema = call.schema;
    let spec = call
        .arg("user")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument(schema, "user", "a HostAccountSpec is required"))?;
    let text = |name: &str| spec.get(schema, name).and_then(Value::as_str);
    let id = text("id").unwrap_or_default();
    let password = text("password");
    let mut accounts = lock(&call.host.accounts);
    let saved = match (create, accounts.exists(id), password) {
        (true, true, _) => {
            return Err(
                Fault::new(schema, "AlreadyExists", format!("user {id} exists"))
                    .with(schema, "name", id),
            )
        }
        (true, false, None) => {
            return Err(Fault::invalid_argument(
                schema,
                "user.password",
                "a password is required",
            ))
        }
        (true, false, Some(password)) => {
            check_name(call, id)?;
            accounts.set_password(id, password)
        }
        (false, false, _) => return Err(user_not_found(schema, id)),
        (false, true, Some(password)) => accounts.set_password(id, password),
        (false, true, None) => Ok(()),
    };
    saved.map(|()| None).map_err(|e| accounts_fault(call, e))
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
        .map_err(|e| accounts_fault(call, e))?;
    for session in call.host.sessions.all().iter().filter(|s| s.user == user) {
        end_session(call.host, &session.key);
    }
    Ok(None)
}

/// ChangePassword(user, oldPassword, newPassword): a logged-in user changes their own password
/// by proving the old one (so that it cannot serve as an unthrottled password oracle, it needs
/// a session of that user).
fn change_password(call: &Call<'_>) -> MethodResult {
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
    let mut accounts = lock(&call.host.accounts);
    if !accounts.verify(user, old) {
        return Err(Fault::invalid_login(schema));
    }
    accounts
        .set_password(user, new)
        .map(|()| None)
        .map_err(|e| accounts_fault(call, e))
}

/// Names stay within what the account file and log lines can hold unambiguously.
fn check_name(call: &Call<'_>, id: &str) -> Result<(), Fault> {
    let valid = !id.is_empty()
        && id.len() <= MAX_NAME
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if valid {
        return Ok(());
    }
    Err(Fault::invalid_argument(
        call.schema,
        "user.id",
        format!("a user name is 1 to {MAX_NAME} letters, digits, '.', '_', '-' or '@'"),
    ))
}

fn accounts_fault(call: &Call<'_>, error: AccountsError) -> Fault {
    Fault::system_error(call.schema, error.to_string())
}
