//! SessionManager: Login (argon2-checked, sets the session cookie, posts a login event),
//! Logout (ends the session and everything it created), SessionIsActive, TerminateSession.
//! SetLocale and UpdateServiceMessage are not served.

use vireo_api::limits::clip;
use vireo_api::{DataObject, Fault, Value};

use super::{Call, Handler, MethodResult, MethodTable, PendingResult};
use crate::events::post_event;
use crate::sessions::end_session;

/// SessionManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "SessionManager",
    methods: &[
        ("Login", Handler::Async(login)),
        ("Logout", Handler::Sync(logout)),
        ("SessionIsActive", Handler::Sync(session_is_active)),
        ("TerminateSession", Handler::Sync(terminate_session)),
    ],
};

fn login<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(check_login(call))
}

/// Login(userName, password, locale).
async fn check_login(call: &mut Call<'_>) -> MethodResult {
    let schema = call.schema;
    let user = call.str_arg("userName")?.to_string();
    let password = call.str_arg("password")?;
    let valid = call
        .host
        .logins
        .check(&call.host.accounts, (&user, password), call.peer.ip)
        .await
        .map_err(|e| Fault::system_error(schema, e.to_string()))?;
    if !valid {
        let user = clip(&user);
        tracing::info!(user = &*user, ip = %call.peer.ip, "login refused");
        let event = DataObject::of(schema, "BadUsernameSessionEvent")
            .with(schema, "ipAddress", call.peer.ip.to_string())
            .with(
                schema,
                "fullFormattedMessage",
                format!("Cannot login {user}@{}", call.peer.ip),
            );
        post_event(call.host, event, None, &user);
        return Err(Fault::invalid_login(schema));
    }
    let session = call
        .host
        .sessions
        .create(&user, &call.peer.ip.to_string(), &call.peer.user_agent)
        .map_err(|e| {
            Fault::system_error(schema, format!("no randomness for a session key: {e}"))
        })?;
    session.touch();
    tracing::info!(user, ip = %call.peer.ip, "login");
    let event = DataObject::of(schema, "UserLoginSessionEvent")
        .with(schema, "ipAddress", call.peer.ip.to_string())
        .with(schema, "userAgent", call.peer.user_agent.as_str())
        .with(schema, "locale", "en")
        .with(schema, "sessionId", &*session.key)
        .with(
            schema,
            "fullFormattedMessage",
            format!(
                "User {user}@{} logged in as {}",
                call.peer.ip, call.peer.user_agent
            ),
        );
    post_event(call.host, event, None, &user);
    let value = session.to_value(schema);
    call.session = Some(session.clone());
    call.new_session = Some(session);
    Ok(Some(value.into()))
}

fn logout(call: &Call<'_>) -> MethodResult {
    let key = call.session()?.key.clone();
    end_session(call.host, &key);
    Ok(None)
}

fn session_is_active(call: &Call<'_>) -> MethodResult {
    let key = call.str_arg("sessionID")?;
    let user = call.str_arg("userName")?;
    let session = call
        .host
        .sessions
        .get(key)
        .ok_or_else(|| Fault::not_found(call.schema, "no such session"))?;
    Ok(Some(Value::Bool(session.user == user)))
}

fn terminate_session(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let current = call.session()?.key.clone();
    let keys: Vec<String> = call
        .arg("sessionId")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if keys.iter().any(|k| **k == *current) {
        return Err(Fault::invalid_argument(
            schema,
            "sessionId",
            "the current session cannot be terminated; use Logout",
        ));
    }
    if let Some(missing) = keys.iter().find(|k| call.host.sessions.get(k).is_none()) {
        return Err(Fault::not_found(schema, format!("no session {missing}")));
    }
    for key in keys {
        end_session(call.host, &key);
    }
    Ok(None)
}
