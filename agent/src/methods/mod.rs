//! Method dispatch: checks that `_this` exists and has the method, that the caller has a session
//! when the method's privilege needs one, then routes to the module of the managed type.

pub mod access;
pub mod account_manager;
pub mod authorization;
pub mod autostart_manager;
pub mod boot_device_system;
pub mod cpu_scheduler;
pub mod datastore_browser;
pub mod datastore_system;
pub mod date_time_system;
pub mod environment_browser;
pub mod event_history_collector;
pub mod event_manager;
pub mod file_manager;
pub mod firewall_system;
pub mod folder;
pub mod guest_operations;
pub mod history;
pub mod http_nfc_lease;
pub mod list_view;
pub mod managed_object;
pub mod memory_manager;
pub mod network_system;
pub mod object_view;
pub mod option_manager;
pub mod ovf_import;
pub mod ovf_manager;
pub mod performance_manager;
pub mod power_system;
pub mod property_collector;
pub mod property_filter;
pub mod resource_pool;
pub mod search_index;
pub mod service_instance;
pub mod service_system;
pub mod session_manager;
pub mod snapshot;
pub mod storage_system;
pub mod task;
pub mod task_history_collector;
pub mod task_manager;
pub mod user_directory;
pub mod view;
pub mod view_manager;
pub mod virtual_disk_manager;
pub mod virtual_machine;
pub mod vsan_system;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use vireo_api::codec::Request;
use vireo_api::fast_hash::FastMap;
use vireo_api::schema::{ClientVersion, Schema, TypeId};
use vireo_api::{Fault, MoRef, Value};

use crate::host::Host;
use crate::sessions::Session;

/// Who is calling, from where.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Client IP address.
    pub ip: std::net::IpAddr,
    /// Client User-Agent.
    pub user_agent: String,
    /// The address the client reached this server at (tickets point clients back to it).
    pub server: Option<std::net::SocketAddr>,
}

/// One method call being served.
pub struct Call<'a> {
    /// The host.
    pub host: &'a Arc<Host>,
    /// The schema.
    pub schema: &'static Schema,
    /// The caller's session, if logged in.
    pub session: Option<Arc<Session>>,
    /// The version the client negotiated.
    pub version: ClientVersion,
    /// The decoded request.
    pub request: &'a Request,
    /// The caller.
    pub peer: &'a Peer,
    /// A session created by this call (Login), to set as cookie.
    pub new_session: Option<Arc<Session>>,
}

/// What a method returns: a value, or nothing for void/unset results.
pub type MethodResult = Result<Option<Value>, Fault>;

/// A method result still being computed (a handler that waits, or that sets the call's new
/// session).
pub type PendingResult<'c> = Pin<Box<dyn Future<Output = MethodResult> + Send + 'c>>;

/// How one method is served.
#[derive(Clone, Copy)]
pub enum Handler {
    /// Serves the call at once.
    Sync(fn(&Call<'_>) -> MethodResult),
    /// Serves the call in a future.
    Async(for<'c, 'a> fn(&'c mut Call<'a>) -> PendingResult<'c>),
}

/// The methods one managed type implements: its own and inherited ones it serves.
pub struct MethodTable {
    /// The managed type (WSDL name).
    pub ty: &'static str,
    /// Method name → handler.
    pub methods: &'static [(&'static str, Handler)],
}

/// Every managed type's table; a method on an object is looked up from its type upward.
const TABLES: &[&MethodTable] = &[
    &managed_object::METHODS,
    &service_instance::METHODS,
    &session_manager::METHODS,
    &property_collector::METHODS,
    &property_filter::METHODS,
    &view_manager::METHODS,
    &view::METHODS,
    &list_view::METHODS,
    &search_index::METHODS,
    &environment_browser::METHODS,
    &task::METHODS,
    &task_manager::METHODS,
    &event_manager::METHODS,
    &history::METHODS,
    &task_history_collector::METHODS,
    &event_history_collector::METHODS,
    &authorization::METHODS,
    &account_manager::METHODS,
    &user_directory::METHODS,
    &folder::METHODS,
    &virtual_machine::METHODS,
    &network_system::METHODS,
    &snapshot::METHODS,
    &file_manager::METHODS,
    &virtual_disk_manager::METHODS,
    &guest_operations::auth_manager::METHODS,
    &guest_operations::process_manager::METHODS,
    &guest_operations::file_manager::METHODS,
    &datastore_browser::METHODS,
    &autostart_manager::METHODS,
    &performance_manager::METHODS,
    &option_manager::METHODS,
    &date_time_system::METHODS,
    &http_nfc_lease::METHODS,
    &ovf_manager::METHODS,
    &storage_system::METHODS,
    &datastore_system::METHODS,
    &vsan_system::METHODS,
    &service_system::METHODS,
    &firewall_system::METHODS,
    &memory_manager::METHODS,
    &power_system::METHODS,
    &boot_device_system::METHODS,
    &cpu_scheduler::METHODS,
    &resource_pool::METHODS,
];

impl Call<'_> {
    /// `_this`.
    pub fn this(&self) -> &MoRef {
        &self.request.this
    }

    /// An argument by name.
    pub fn arg(&self, name: &str) -> Option<&Value> {
        self.request.arg(self.schema, name)
    }

    /// A required string argument.
    pub fn str_arg(&self, name: &str) -> Result<&str, Fault> {
        self.arg(name).and_then(Value::as_str).ok_or_else(|| {
            Fault::invalid_argument(self.schema, name, format!("{name} is required"))
        })
    }

    /// A required reference argument.
    pub fn moref_arg(&self, name: &str) -> Result<&MoRef, Fault> {
        self.arg(name).and_then(Value::as_moref).ok_or_else(|| {
            Fault::invalid_argument(self.schema, name, format!("{name} is required"))
        })
    }

    /// The references of an array argument (empty when unset).
    pub fn moref_list_arg(&self, name: &str) -> Vec<MoRef> {
        self.arg(name)
            .map(Value::items)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_moref)
            .cloned()
            .collect()
    }

    /// The strings of an array argument (empty when unset).
    pub fn string_list_arg(&self, name: &str) -> Vec<String> {
        self.arg(name)
            .map(Value::items)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    }

    /// The caller's session; NotAuthenticated without one.
    pub fn session(&self) -> Result<&Arc<Session>, Fault> {
        self.session
            .as_ref()
            .ok_or_else(|| Fault::not_authenticated(self.schema, self.this(), "System.View"))
    }

    /// LimitExceeded if the session already holds `max_session_objects` objects (filters,
    /// collectors, views); called before creating one.
    pub fn check_session_quota(&self, session: &Session) -> Result<(), Fault> {
        let limit = self.host.config.max_session_objects;
        if self.host.inventory().owned_by(&session.key) < limit {
            return Ok(());
        }
        Err(crate::faults::limit_exceeded(
            self.schema,
            limit,
            format!(
                "the session holds {limit} property filters, collectors and views, its limit; \
                 destroy some first"
            ),
        ))
    }

    /// The VirtualMachine `_this` names, or ManagedObjectNotFound.
    pub fn this_vm(&self) -> Result<Arc<crate::vm::Vm>, Fault> {
        self.host
            .vms
            .get(self.this())
            .ok_or_else(|| Fault::managed_object_not_found(self.schema, self.this()))
    }

    /// A task of this call's method on `entity`, neither cancelable nor exclusive (other tasks
    /// may act on the entity meanwhile).
    pub fn shared_task(
        &self,
        entity: &MoRef,
        description_id: &str,
    ) -> Result<crate::tasks::TaskHandle, Fault> {
        crate::tasks::create_task(
            self.host,
            crate::tasks::TaskSpec {
                entity,
                description_id,
                method: self.schema.method(self.request.method).name.as_ref(),
                user: self.user(),
                cancelable: false,
                mutating: false,
            },
        )
    }

    /// The calling user's name ("" without a session).
    pub fn user(&self) -> &str {
        self.session
            .as_ref()
            .map(|s| s.user.as_str())
            .unwrap_or_default()
    }

    /// An object view for the caller.
    pub fn objects<'v>(
        &'v self,
        inv: &'v crate::inventory::Inventory,
    ) -> object_view::ObjectView<'v> {
        object_view::ObjectView {
            host: self.host,
            inventory: inv,
            session: self.session.as_deref(),
        }
    }
}

/// Serves one decoded call.
pub async fn dispatch(call: &mut Call<'_>) -> MethodResult {
    let schema = call.schema;
    let this = call.this().clone();
    let ty = {
        let inv = call.host.inventory();
        call.objects(&inv).scoped_type(&this)
    };
    let method = schema.method(call.request.method);
    let Some(ty) = ty else {
        if call.session.is_none() && method.privilege.as_deref() != Some("System.Anonymous") {
            return Err(Fault::not_authenticated(
                schema,
                &this,
                method.privilege.as_deref().unwrap_or("System.View"),
            ));
        }
        return Err(Fault::managed_object_not_found(schema, &this));
    };
    if !schema.is_a(ty, method.owner) {
        return Err(Fault::method_not_found(schema, &this, &method.name));
    }
    check_privilege(call)?;
    if let Some(session) = &call.session {
        session.touch();
    }
    route(call, ty, &method.name).await
}

/// Anonymous methods and properties need nothing; everything else needs a session whose user
/// holds the method's privileges (`access`). Reading a property of an inventory object needs
/// System.Read on it.
fn check_privilege(call: &Call<'_>) -> Result<(), Fault> {
    let schema = call.schema;
    let method = schema.method(call.request.method);
    let privilege = match &*method.name {
        "Fetch" => {
            let prop = call.str_arg("prop")?;
            let ty = schema
                .type_id(&call.this().ty)
                .unwrap_or(schema.well_known().managed_object);
            let root = prop.split('.').next().unwrap_or(prop);
            let field = schema.field_index(ty, root).map(|i| &schema.fields(ty)[i]);
            match field {
                Some(f) if f.privilege.as_deref() == Some("System.Anonymous") => "System.Anonymous",
                Some(_) => "System.Read",
                None if call.session.is_none() => "System.View",
                None => return Err(Fault::invalid_property(schema, prop)),
            }
        }
        _ => method.privilege.as_deref().unwrap_or("System.View"),
    };
    if privilege == "System.Anonymous" {
        return Ok(());
    }
    match &call.session {
        Some(session) => access::check(call, &session.user, privilege),
        None => Err(Fault::not_authenticated(schema, call.this(), privilege)),
    }
}

/// Finds the handler for `method` on an object of type `ty`: the table of `ty` first, then of
/// each ancestor up to the type that declares the method (a subtype may implement an inherited
/// method, as VirtualMachine implements ManagedEntity's Destroy_Task).
fn handler(schema: &Schema, ty: TypeId, method: &str) -> Option<Handler> {
    let owner = schema.method(schema.method_id(method)?).owner;
    let mut current = Some(ty);
    while let Some(id) = current {
        let found = handlers()
            .get(&*schema.ty(id).name)
            .and_then(|methods| methods.get(method));
        if let Some(handler) = found {
            return Some(*handler);
        }
        if id == owner {
            return None;
        }
        current = schema.ty(id).parent;
    }
    None
}

/// [`TABLES`] indexed by managed type and method name (the first entry of each pair wins),
/// built on first use.
fn handlers() -> &'static FastMap<&'static str, FastMap<&'static str, Handler>> {
    static HANDLERS: OnceLock<FastMap<&'static str, FastMap<&'static str, Handler>>> =
        OnceLock::new();
    HANDLERS.get_or_init(|| {
        let mut by_type: FastMap<&'static str, FastMap<&'static str, Handler>> = FastMap::default();
        for table in TABLES {
            let methods = by_type.entry(table.ty).or_default();
            for (method, handler) in table.methods {
                methods.entry(*method).or_insert(*handler);
            }
        }
        by_type
    })
}

/// Runs the handler of the method on `_this`'s type; NotSupported when no table has it.
async fn route(call: &mut Call<'_>, ty: TypeId, method: &str) -> MethodResult {
    match handler(call.schema, ty, method) {
        Some(Handler::Sync(serve)) => serve(call),
        Some(Handler::Async(serve)) => serve(call).await,
        None => Err(Fault::not_supported(
            call.schema,
            format!("{method} is not implemented by this host."),
        )),
    }
}

#[cfg(test)]
mod tests;
