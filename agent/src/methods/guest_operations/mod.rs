//! The GuestOperationsManager's three managers (vSphere's guest operations): what every call
//! shares — the `vm` (which must be powered on) and `auth` (NamePasswordAuthentication or
//! TicketedSessionAuthentication, passed to the guest untouched: vireod never checks, keeps
//! or logs guest credentials), one operation sent through the tools channel off the async
//! runtime, and the guest's failures turned into the faults ESXi raises.

pub mod auth_manager;
pub mod file_manager;
mod file_transfer;
pub mod process_manager;

use std::sync::Arc;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, Value};
use vireo_tools::guest_ops::wire::{GuestAuth, GuestFault, GuestOp};

use super::Call;
use crate::faults;
use crate::vm::tools_host::{self, GuestOpFailure};
use crate::vm::{Power, Vm};

/// The VM a guest operation runs in: it exists and is powered on.
pub(crate) fn target_vm(call: &Call<'_>) -> Result<Arc<Vm>, Fault> {
    let schema = call.schema;
    let vm_ref = call.moref_arg("vm")?;
    let vm = call
        .host
        .vms
        .get(vm_ref)
        .ok_or_else(|| Fault::managed_object_not_found(schema, vm_ref))?;
    let power = vm.state().power;
    if power != Power::On {
        return Err(faults::invalid_power_state(schema, Some(Power::On), power));
    }
    Ok(vm)
}

/// The `auth` argument as the guest receives it.
pub(crate) fn guest_auth(schema: &Schema, auth: Option<&DataObject>) -> Result<GuestAuth, Fault> {
    let auth = auth.ok_or_else(|| Fault::invalid_argument(schema, "auth", "auth is required"))?;
    let text = |name: &str| {
        auth.get(schema, name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match &*schema.ty(auth.ty).name {
        "NamePasswordAuthentication" => Ok(GuestAuth::Password {
            user: text("username"),
            password: text("password"),
        }),
        "TicketedSessionAuthentication" => Ok(GuestAuth::Ticket {
            ticket: text("ticket"),
        }),
        other => Err(Fault::not_supported(
            schema,
            format!("{other} is not supported by this guest; use NamePasswordAuthentication"),
        )),
    }
}

/// The fault ESXi raises for a guest operation's failure (`file` names the path a file fault
/// is about, `pid` the process).
fn guest_fault(schema: &Schema, failure: GuestOpFailure, file: &str, pid: i64) -> Fault {
    let error = match failure {
        GuestOpFailure::Unavailable | GuestOpFailure::Timeout => {
            return faults::guest_operations_unavailable(schema, failure)
        }
        GuestOpFailure::Guest(error) => error,
    };
    let message = error.message;
    let file_fault = |ty: &str| faults::file_fault_of_type(schema, ty, file, message.clone());
    match error.fault {
        GuestFault::InvalidLogin => faults::invalid_guest_login(schema),
        GuestFault::PermissionDenied => faults::guest_permission_denied(schema, message),
        GuestFault::NotFound => file_fault("FileNotFound"),
        GuestFault::AlreadyExists => file_fault("FileAlreadyExists"),
        GuestFault::NotADirectory => file_fault("NotADirectory"),
        GuestFault::NotAFile => file_fault("NotAFile"),
        GuestFault::DirectoryNotEmpty => file_fault("DirectoryNotEmpty"),
        GuestFault::NoSpace => file_fault("FileFault"),
        GuestFault::ProcessNotFound => faults::guest_process_not_found(schema, pid, message),
        GuestFault::BadRequest => Fault::invalid_argument(schema, "", message),
        GuestFault::Unsupported => faults::operation_not_supported_by_guest(schema, message),
        GuestFault::Failed => Fault::system_error(schema, message),
    }
}

/// One guest operation, with what its faults name.
pub(crate) struct GuestRequest {
    /// The operation.
    pub op: GuestOp,
    /// The path a file fault names ("" when none).
    pub file: String,
    /// The process a GuestProcessNotFound names (0 when none).
    pub pid: i64,
}

impl GuestRequest {
    /// An operation about `file`.
    pub fn on_file(op: GuestOp, file: &str) -> GuestRequest {
        GuestRequest {
            op,
            file: file.to_string(),
            pid: 0,
        }
    }
}

/// Runs `request` in the call's VM with the call's credentials; the guest's result.
async fn run(call: &Call<'_>, request: GuestRequest) -> Result<Option<serde_json::Value>, Fault> {
    let schema = call.schema;
    let vm = target_vm(call)?;
    let auth = guest_auth(schema, call.arg("auth").and_then(Value::as_data))?;
    run_in(schema, vm, auth, request).await
}

/// Runs `request` in `vm` with `auth` on a blocking thread (the guest may take its time).
pub(crate) async fn run_in(
    schema: &'static Schema,
    vm: Arc<Vm>,
    auth: GuestAuth,
    request: GuestRequest,
) -> Result<Option<serde_json::Value>, Fault> {
    let GuestRequest { op, file, pid } = request;
    tokio::task::spawn_blocking(move || tools_host::guest_op(&vm, auth, op))
        .await
        .map_err(|e| Fault::system_error(schema, e.to_string()))?
        .map_err(|failure| guest_fault(schema, failure, &file, pid))
}

/// The guest's result read as `T`, or SystemError.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    schema: &Schema,
    result: Option<serde_json::Value>,
) -> Result<T, Fault> {
    serde_json::from_value(result.unwrap_or_default())
        .map_err(|e| Fault::system_error(schema, format!("the guest's answer is malformed: {e}")))
}

/// An optional boolean argument (false when unset).
fn flag_arg(call: &Call<'_>, name: &str) -> bool {
    call.arg(name).and_then(Value::as_bool).unwrap_or(false)
}

/// Seconds since the epoch as an xsd:dateTime.
fn date_time(seconds: i64) -> Value {
    Value::DateTime(seconds.saturating_mul(1_000_000))
}
