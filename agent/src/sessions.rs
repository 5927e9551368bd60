//! Logged-in sessions: keys (the `vmware_soap_session` cookie), users, activity counters, and
//! each session's PropertyCollector state. Objects a session creates die with it
//! ([`end_session`]: Logout, TerminateSession, idle expiry, a removed account).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use vireo_api::fast_hash::FastMap;
use vireo_api::schema::Schema;
use vireo_api::{DataObject, MoRef, Value};

use crate::collectors::CollectorState;
use crate::events::post_event;
use crate::host::Host;
use crate::inventory::now_micros;
use crate::locks::lock;

/// One logged-in session.
pub struct Session {
    /// Session key (cookie value).
    pub key: Arc<str>,
    /// User name.
    pub user: String,
    /// Login time, µs since the epoch.
    pub login_time: i64,
    last_active: AtomicI64,
    call_count: AtomicI64,
    /// Client address.
    pub ip: String,
    /// Client's User-Agent.
    pub user_agent: String,
    /// PropertyCollector state per collector object.
    pub collectors: Mutex<HashMap<MoRef, CollectorState>>,
}

impl Session {
    /// Counts a call and refreshes the activity time.
    pub fn touch(&self) {
        self.last_active.store(now_micros(), Ordering::Relaxed);
        self.call_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Last activity, µs since the epoch.
    pub fn last_active(&self) -> i64 {
        self.last_active.load(Ordering::Relaxed)
    }

    /// The session as a `UserSession` value.
    pub fn to_value(&self, schema: &Schema) -> DataObject {
        DataObject::of(schema, "UserSession")
            .with(schema, "key", &*self.key)
            .with(schema, "userName", self.user.as_str())
            .with(schema, "fullName", self.user.as_str())
            .with(schema, "loginTime", Value::DateTime(self.login_time))
            .with(
                schema,
                "lastActiveTime",
                Value::DateTime(self.last_active()),
            )
            .with(schema, "locale", "en")
            .with(schema, "messageLocale", "en")
            .with(schema, "extensionSession", false)
            .with(schema, "ipAddress", self.ip.as_str())
            .with(schema, "userAgent", self.user_agent.as_str())
            .with(schema, "callCount", self.call_count.load(Ordering::Relaxed))
    }

    /// A reference for a new object scoped to this session (`session[key]N`, ESXi's form).
    pub fn scoped_ref(&self, ty: &str, n: u64) -> MoRef {
        MoRef::new(ty, format!("session[{}]{n}", self.key))
    }

    /// This session's collector state for `collector`, created on first use.
    pub fn with_collector<R>(
        &self,
        collector: &MoRef,
        f: impl FnOnce(&mut CollectorState) -> R,
    ) -> R {
        let mut collectors = lock(&self.collectors);
        f(collectors.entry(collector.clone()).or_default())
    }
}

/// All sessions by key.
#[derive(Default)]
pub struct Sessions {
    by_key: RwLock<FastMap<Arc<str>, Arc<Session>>>,
}

impl Sessions {
    /// Creates a session for a user who just logged in.
    pub fn create(
        &self,
        user: &str,
        ip: &str,
        user_agent: &str,
    ) -> Result<Arc<Session>, getrandom::Error> {
        let now = now_micros();
        let session = Arc::new(Session {
            key: new_session_key()?.into(),
            user: user.to_string(),
            login_time: now,
            last_active: AtomicI64::new(now),
            call_count: AtomicI64::new(0),
            ip: ip.to_string(),
            user_agent: user_agent.to_string(),
            collectors: Mutex::new(HashMap::new()),
        });
        self.by_key
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session.key.clone(), session.clone());
        Ok(session)
    }

    /// The session for a key.
    pub fn get(&self, key: &str) -> Option<Arc<Session>> {
        self.by_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Ends a session; returns it if it existed.
    pub fn remove(&self, key: &str) -> Option<Arc<Session>> {
        self.by_key
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
    }

    /// Every session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        let mut all: Vec<_> = self
            .by_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|s| s.login_time);
        all
    }

    /// Sessions idle longer than `idle_micros`.
    pub fn idle(&self, idle_micros: i64) -> Vec<Arc<Session>> {
        let cutoff = now_micros() - idle_micros;
        self.all()
            .into_iter()
            .filter(|s| s.last_active() < cutoff)
            .collect()
    }
}

/// A random key in UUID form, as ESXi's `52xxxxxx-...` keys look.
fn new_session_key() -> Result<String, getrandom::Error> {
    crate::vm::uuid::try_random()
}

/// The session key in a Cookie header, parsed leniently: clients echo back attributes
/// (`; Path=/; HttpOnly`) and may or may not keep the quotes.
pub fn session_key_from_cookie(header: &str) -> Option<&str> {
    header.split(';').find_map(|part| {
        let (name, value) = part.split_once('=')?;
        (name.trim() == "vmware_soap_session")
            .then(|| value.trim().trim_matches('"'))
            .filter(|v| !v.is_empty())
    })
}

/// Ends a session: forgets it and removes every object it created.
pub fn end_session(host: &Host, key: &str) {
    let Some(session) = host.sessions.remove(key) else {
        return;
    };
    let schema = host.schema;
    lock(&host.history_collectors).retain(|obj, _| !obj.id.starts_with(&format!("session[{key}]")));
    host.mutate(|inv| inv.remove_owned_by(key));
    let event = DataObject::of(schema, "UserLogoutSessionEvent")
        .with(schema, "ipAddress", session.ip.as_str())
        .with(schema, "userAgent", session.user_agent.as_str())
        .with(schema, "sessionId", key)
        .with(schema, "loginTime", Value::DateTime(session.login_time))
        .with(
            schema,
            "fullFormattedMessage",
            format!("User {}@{} logged out", session.user, session.ip),
        );
    post_event(host, event, None, &session.user);
    tracing::info!(user = session.user, "logout");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_parsing_is_lenient() {
        assert_eq!(
            session_key_from_cookie("vmware_soap_session=abc; Path=/; HttpOnly"),
            Some("abc")
        );
        assert_eq!(
            session_key_from_cookie(
                "other=1; vmware_soap_session=\"k-1\"; Path=/; HttpOnly; Secure;"
            ),
            Some("k-1")
        );
        assert_eq!(session_key_from_cookie(""), None);
        assert_eq!(session_key_from_cookie("vmware_soap_session="), None);
    }

    #[test]
    fn session_keys_are_unique_uuids() {
        let sessions = Sessions::default();
        let a = sessions.create("root", "127.0.0.1", "test").unwrap();
        let b = sessions.create("root", "127.0.0.1", "test").unwrap();
        assert_ne!(a.key, b.key);
        assert_eq!(a.key.len(), 36);
        assert!(sessions.get(&a.key).is_some());
        sessions.remove(&a.key);
        assert!(sessions.get(&a.key).is_none());
    }
}
