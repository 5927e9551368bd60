//! Method dispatch: checks that `_this` exists and has the method, that the caller has a session
//! when the method's privilege needs one, then routes to the module of the managed type.

pub mod access;
pub mod account_manager;
pub mod authorization;
pub mod console;
pub mod events;
pub mod history;
pub mod object_view;
pub mod property_collector;
pub mod search_index;
pub mod service_instance;
pub mod session_manager;
pub mod snapshot;
pub mod tasks;
pub mod view_manager;
pub mod virtual_machine;

use std::sync::Arc;

use vireo_api::codec::Request;
use vireo_api::schema::{ClientVersion, Schema};
use vireo_api::{Fault, MoRef, Value};

use crate::host::Host;
use crate::sessions::Session;

/// Who is calling, from where.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Client IP address.
    pub ip: String,
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

    /// The caller's session; NotAuthenticated without one.
    pub fn session(&self) -> Result<&Arc<Session>, Fault> {
        self.session
            .as_ref()
            .ok_or_else(|| Fault::not_authenticated(self.schema, self.this(), "System.View"))
    }

    /// The VirtualMachine `_this` names, or ManagedObjectNotFound.
    pub fn this_vm(&self) -> Result<Arc<crate::vm::Vm>, Fault> {
        self.host
            .vms
            .get(self.this())
            .ok_or_else(|| Fault::managed_object_not_found(self.schema, self.this()))
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
    route(call, &method.name).await
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
                Some(f) if f.privilege.as_deref() == Some("System.Anonymous") => {
                    "System.Anonymous".to_string()
                }
                Some(_) => "System.Read".to_string(),
                None if call.session.is_none() => "System.View".to_string(),
                None => return Err(Fault::invalid_property(schema, prop)),
            }
        }
        _ => method
            .privilege
            .as_deref()
            .unwrap_or("System.View")
            .to_string(),
    };
    if privilege == "System.Anonymous" {
        return Ok(());
    }
    match &call.session {
        Some(session) => access::check(call, &session.user, &privilege),
        None => Err(Fault::not_authenticated(schema, call.this(), &privilege)),
    }
}

async fn route(call: &mut Call<'_>, method: &str) -> MethodResult {
    match method {
        "Fetch" => object_view::fetch(call),
        "RetrieveServiceContent" | "CurrentTime" => service_instance::handle(call, method),
        "Login" => session_manager::login(call).await,
        "Logout"
        | "SessionIsActive"
        | "TerminateSession"
        | "SetLocale"
        | "UpdateServiceMessage" => session_manager::handle(call, method),
        "RetrieveProperties"
        | "RetrievePropertiesEx"
        | "ContinueRetrievePropertiesEx"
        | "CancelRetrievePropertiesEx"
        | "CreateFilter"
        | "DestroyPropertyFilter"
        | "CreatePropertyCollector"
        | "DestroyPropertyCollector"
        | "CheckForUpdates"
        | "CancelWaitForUpdates" => property_collector::handle(call, method),
        "WaitForUpdates" | "WaitForUpdatesEx" => property_collector::wait(call, method).await,
        "CreateContainerView"
        | "CreateListView"
        | "CreateListViewFromView"
        | "DestroyView"
        | "ModifyListView"
        | "ResetListView"
        | "ResetListViewFromView" => view_manager::handle(call, method),
        "FindByInventoryPath"
        | "FindChild"
        | "FindByUuid"
        | "FindAllByUuid"
        | "FindByDatastorePath"
        | "FindByDnsName"
        | "FindAllByDnsName"
        | "FindByIp"
        | "FindAllByIp" => search_index::handle(call, method),
        "CancelTask" | "CreateCollectorForTasks" => tasks::handle(call, method),
        "QueryEvents" | "CreateCollectorForEvents" => events::handle(call, method),
        "ReadNextTasks"
        | "ReadPreviousTasks"
        | "ReadNextEvents"
        | "ReadPreviousEvents"
        | "RewindCollector"
        | "ResetCollector"
        | "SetCollectorPageSize"
        | "DestroyCollector" => history::handle(call, method),
        "HasPrivilegeOnEntities"
        | "HasPrivilegeOnEntity"
        | "HasUserPrivilegeOnEntities"
        | "FetchUserPrivilegeOnEntities"
        | "RetrieveAllPermissions"
        | "RetrieveEntityPermissions"
        | "RetrieveRolePermissions"
        | "AddAuthorizationRole"
        | "UpdateAuthorizationRole"
        | "RemoveAuthorizationRole"
        | "SetEntityPermissions"
        | "ResetEntityPermissions"
        | "RemoveEntityPermission" => authorization::handle(call, method),
        "CreateUser" | "UpdateUser" | "RemoveUser" | "ChangePassword" => {
            account_manager::handle(call, method)
        }
        "PowerOnVM_Task"
        | "PowerOffVM_Task"
        | "ResetVM_Task"
        | "SuspendVM_Task"
        | "TerminateVM"
        | "ShutdownGuest"
        | "RebootGuest"
        | "StandbyGuest"
        | "ResetGuestInformation"
        | "RefreshStorageInfo"
        | "UnregisterVM"
        | "MarkAsTemplate"
        | "MarkAsVirtualMachine"
        | "CloneVM_Task"
        | "Reload"
        | "reloadVirtualMachineFromPath_Task" => virtual_machine::handle(call, method),
        "Destroy_Task" if &*call.this().ty == "VirtualMachine" => {
            virtual_machine::handle(call, method)
        }
        "CreateVM_Task" | "RegisterVM_Task" => virtual_machine::handle_folder(call, method),
        "CreateSnapshot_Task"
        | "CreateSnapshotEx_Task"
        | "RevertToCurrentSnapshot_Task"
        | "RemoveAllSnapshots_Task"
        | "ConsolidateVMDisks_Task"
        | "PromoteDisks_Task"
        | "EstimateStorageForConsolidateSnapshots_Task"
        | "QueryChangedDiskAreas"
        | "ReconfigVM_Task"
        | "CreateScreenshot_Task" => snapshot::handle_vm(call, method),
        "AcquireTicket" | "AcquireMksTicket" | "SetScreenResolution" => {
            console::handle(call, method)
        }
        "RevertToSnapshot_Task" | "RemoveSnapshot_Task" | "RenameSnapshot" => {
            snapshot::handle_snapshot(call, method)
        }
        other => Err(Fault::not_supported(
            call.schema,
            format!("{other} is not implemented by this host."),
        )),
    }
}
