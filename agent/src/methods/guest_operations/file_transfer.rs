//! InitiateFileTransferToGuest / FromGuest: the credentials and the file are checked in the
//! guest, the credentials exchanged for a guest ticket where the guest hands them out, and a
//! one-time URL `https://<host>:<port>/guestFile?id=<n>&token=<random>` issued from
//! `crate::guest_files`, which serves it.

use std::net::SocketAddr;
use std::sync::Arc;

use vireo_api::{DataObject, Fault, Value};
use vireo_tools::guest_ops::wire::{FileEntry, FileKind, GuestAuth, GuestOp, TicketResult};

use super::file_manager::posix_attributes;
use super::{guest_auth, parse, run_in, target_vm, GuestRequest};
use crate::guest_files::{Direction, IssueError, MAX_TRANSFERS, MAX_TRANSFER_BYTES};
use crate::methods::{Call, PendingResult};
use crate::vm::Vm;

/// Registers a transfer and returns its URL.
fn issue_url(
    call: &Call<'_>,
    vm: Arc<Vm>,
    auth: GuestAuth,
    path: String,
    direction: Direction,
) -> Result<String, Fault> {
    let schema = call.schema;
    let (id, token) = call
        .host
        .guest_transfers
        .issue(vm, auth, path, direction)
        .map_err(|e| match e {
            IssueError::TooMany => {
                crate::faults::limit_exceeded(schema, MAX_TRANSFERS, e.to_string())
            }
            IssueError::Token(_) => Fault::system_error(schema, e.to_string()),
        })?;
    let server: SocketAddr = call.peer.server.unwrap_or(call.host.config.listen);
    Ok(format!("https://{server}/guestFile?id={id}&token={token}"))
}

/// The guest's facts of `path`, or `None` when it does not exist (the credentials are
/// checked either way).
async fn stat(
    call: &Call<'_>,
    vm: &Arc<Vm>,
    auth: &GuestAuth,
    path: &str,
) -> Result<Option<FileEntry>, Fault> {
    let op = GuestOp::StatFile {
        path: path.to_string(),
    };
    let request = GuestRequest::on_file(op, path);
    match run_in(call.schema, vm.clone(), auth.clone(), request).await {
        Ok(result) => parse(call.schema, result).map(Some),
        Err(fault) if fault.type_name(call.schema) == "FileNotFound" => Ok(None),
        Err(fault) => Err(fault),
    }
}

/// The credentials a transfer's chunks carry: a guest ticket standing for `auth` where the
/// guest hands them out, else `auth` itself.
async fn transfer_auth(call: &Call<'_>, vm: &Arc<Vm>, auth: GuestAuth) -> Result<GuestAuth, Fault> {
    let schema = call.schema;
    let request = GuestRequest::on_file(GuestOp::AcquireTicket, "");
    match run_in(schema, vm.clone(), auth.clone(), request).await {
        Ok(result) => {
            let ticket: TicketResult = parse(schema, result)?;
            Ok(GuestAuth::Ticket {
                ticket: ticket.ticket,
            })
        }
        Err(fault) if fault.type_name(schema) == "OperationNotSupportedByGuest" => Ok(auth),
        Err(fault) => Err(fault),
    }
}

/// InitiateFileTransferToGuest: a URL to PUT `fileSize` bytes to `guestFilePath` (an
/// existing file only with `overwrite`).
pub fn to_guest<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let schema = call.schema;
        let vm = target_vm(call)?;
        let auth = guest_auth(schema, call.arg("auth").and_then(Value::as_data))?;
        let path = call.str_arg("guestFilePath")?.to_string();
        let size = call.arg("fileSize").and_then(Value::as_i64).unwrap_or(-1);
        let size = u64::try_from(size)
            .ok()
            .filter(|&s| s <= MAX_TRANSFER_BYTES)
            .ok_or_else(|| {
                Fault::invalid_argument(
                    schema,
                    "fileSize",
                    format!("a transfer carries 0 to {MAX_TRANSFER_BYTES} bytes"),
                )
            })?;
        let overwrite = call
            .arg("overwrite")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        match stat(call, &vm, &auth, &path).await? {
            Some(entry) if entry.kind == FileKind::Directory => {
                return Err(crate::faults::not_a_file(
                    schema,
                    &path,
                    format!("{path} is a directory"),
                ));
            }
            Some(_) if !overwrite => {
                return Err(crate::faults::file_already_exists(schema, &path));
            }
            _ => {}
        }
        let direction = Direction::ToGuest { size, overwrite };
        let auth = transfer_auth(call, &vm, auth).await?;
        let url = issue_url(call, vm, auth, path, direction)?;
        Ok(Some(Value::from(url)))
    })
}

/// InitiateFileTransferFromGuest: the file's size and attributes and a URL to GET it from.
pub fn from_guest<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let schema = call.schema;
        let vm = target_vm(call)?;
        let auth = guest_auth(schema, call.arg("auth").and_then(Value::as_data))?;
        let path = call.str_arg("guestFilePath")?.to_string();
        let entry = stat(call, &vm, &auth, &path).await?.ok_or_else(|| {
            crate::faults::file_not_found(schema, &path, format!("{path} does not exist"))
        })?;
        if entry.kind != FileKind::File {
            return Err(crate::faults::not_a_file(
                schema,
                &path,
                format!("{path} is not a file"),
            ));
        }
        if entry.size > MAX_TRANSFER_BYTES {
            return Err(crate::faults::file_fault(
                schema,
                &path,
                format!("{path} is larger than a transfer carries ({MAX_TRANSFER_BYTES} bytes)"),
            ));
        }
        let info = DataObject::of(schema, "FileTransferInformation")
            .with(schema, "attributes", posix_attributes(schema, &entry))
            .with(schema, "size", entry.size as i64);
        let auth = transfer_auth(call, &vm, auth).await?;
        let url = issue_url(call, vm, auth, path, Direction::FromGuest)?;
        Ok(Some(info.with(schema, "url", url).into()))
    })
}
