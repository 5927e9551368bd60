//! The inventory as one session sees it: objects scoped to other sessions, and inventory
//! objects its user lacks System.Read on, are invisible (as if they did not exist); and
//! properties that depend on the caller or on other objects (a view's contents, the current
//! session, a collector's latest page) are computed at read time.

use std::borrow::Cow;

use vireo_api::collector::ObjectSource;
use vireo_api::schema::TypeId;
use vireo_api::{Fault, MoRef, Value};

use super::access;
use crate::host::Host;
use crate::inventory::{now_micros, Inventory};
use crate::locks::lock;
use crate::sessions::Session;

/// The inventory through one caller's eyes.
pub struct ObjectView<'a> {
    /// The host.
    pub host: &'a Host,
    /// The locked inventory.
    pub inventory: &'a Inventory,
    /// The caller's session.
    pub session: Option<&'a Session>,
}

impl ObjectView<'_> {
    /// The object's type if it exists and is not scoped to another session.
    pub fn scoped_type(&self, obj: &MoRef) -> Option<TypeId> {
        let object = self.inventory.get(obj)?;
        match (&object.owner, self.session) {
            (None, _) => Some(object.ty),
            (Some(owner), Some(session)) if *owner == session.key => Some(object.ty),
            _ => None,
        }
    }

    /// The object's type if it exists and the caller may see it (without a session, only
    /// anonymous properties can be read, which [`ObjectSource::property`] enforces).
    pub fn visible_type(&self, obj: &MoRef) -> Option<TypeId> {
        let ty = self.scoped_type(obj)?;
        match self.session {
            Some(session) if !access::may_read(self.host, self.inventory, &session.user, obj) => {
                None
            }
            _ => Some(ty),
        }
    }

    fn computed(&self, obj: &MoRef, name: &str) -> Option<Option<Value>> {
        let schema = self.host.schema;
        let session = self.session;
        Some(match (&*obj.ty, name) {
            ("ServiceInstance", "serverClock") => Some(Value::DateTime(now_micros())),
            ("SessionManager", "currentSession") => session.map(|s| s.to_value(schema).into()),
            ("SessionManager", "sessionList") => {
                let user = session.map(|s| s.user.as_str()).unwrap_or_default();
                let sees_all = access::may_see_sessions(self.host, self.inventory, user);
                let all = self
                    .host
                    .sessions
                    .all()
                    .iter()
                    .filter(|s| sees_all || s.user == user)
                    .map(|s| s.to_value(schema).into())
                    .collect();
                Some(Value::Array(schema.known_type("UserSession"), all))
            }
            ("ContainerView" | "ListView", "view") => {
                let contents = match &*obj.ty {
                    "ContainerView" => {
                        super::view_manager::container_view_contents(schema, self.inventory, obj)
                    }
                    _ => self.inventory.refs(schema, obj, "view"),
                };
                let visible: Vec<MoRef> = contents
                    .into_iter()
                    .filter(|o| self.visible_type(o).is_some())
                    .collect();
                Some(Value::refs(schema, &visible))
            }
            ("ViewManager", "viewList") => Some(Value::refs(schema, &self.owned_of_type("View"))),
            ("PropertyCollector", "filter") => {
                let filters = session
                    .map(|s| s.with_collector(obj, |c| c.filter_refs()))
                    .unwrap_or_default();
                Some(Value::refs(schema, &filters))
            }
            ("EventHistoryCollector" | "TaskHistoryCollector", "latestPage") => {
                let collectors = lock(&self.host.history_collectors);
                collectors.get(obj).map(|c| {
                    let viewer = session.map(|s| s.user.as_str()).unwrap_or_default();
                    super::history::latest_page(c, self.host, self.inventory, viewer)
                })
            }
            _ => return None,
        })
    }

    /// Without a session only properties whose privilege is System.Anonymous may be read.
    fn check_anonymous_read(&self, obj: &MoRef, name: &str) -> Result<(), Fault> {
        let schema = self.host.schema;
        let ty = self
            .visible_type(obj)
            .unwrap_or(schema.well_known().managed_object);
        let privilege = schema
            .field_index(ty, name)
            .and_then(|i| schema.fields(ty)[i].privilege.as_deref())
            .unwrap_or("System.View");
        if privilege == "System.Anonymous" {
            return Ok(());
        }
        Err(Fault::not_authenticated(schema, obj, privilege))
    }

    /// A list of references without those to objects the caller may not see (a datastore's
    /// `vm`, an entity's `recentTask`...); other values as they are.
    fn without_hidden_refs<'v>(&self, value: &'v Value) -> Cow<'v, Value> {
        let hidden = |item: &Value| {
            item.as_moref()
                .is_some_and(|r| self.scoped_type(r).is_some() && self.visible_type(r).is_none())
        };
        match value {
            Value::Array(ty, items) if self.session.is_some() && items.iter().any(hidden) => {
                Cow::Owned(Value::Array(
                    *ty,
                    items.iter().filter(|i| !hidden(i)).cloned().collect(),
                ))
            }
            _ => Cow::Borrowed(value),
        }
    }

    fn owned_of_type(&self, ty: &str) -> Vec<MoRef> {
        let schema = self.host.schema;
        let Some(session) = self.session else {
            return Vec::new();
        };
        self.inventory
            .all_of_type(schema, schema.known_type(ty))
            .into_iter()
            .filter(|r| {
                self.inventory.get(r).and_then(|o| o.owner.as_deref()) == Some(&*session.key)
            })
            .collect()
    }
}

impl ObjectSource for ObjectView<'_> {
    fn type_of(&self, obj: &MoRef) -> Option<TypeId> {
        self.visible_type(obj)
    }

    fn property(&self, obj: &MoRef, name: &str) -> Result<Option<Cow<'_, Value>>, Fault> {
        if self.session.is_none() {
            self.check_anonymous_read(obj, name)?;
        }
        if let Some(value) = self.computed(obj, name) {
            return Ok(value.map(Cow::Owned));
        }
        Ok(self
            .inventory
            .stored(self.host.schema, obj, name)
            .map(|value| self.without_hidden_refs(value)))
    }
}
