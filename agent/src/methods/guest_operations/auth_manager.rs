//! GuestAuthManager: ValidateCredentialsInGuest, AcquireCredentialsInGuest (a guest-issued
//! ticket, returned as TicketedSessionAuthentication) and ReleaseCredentialsInGuest. The guest
//! checks the credentials; vireod only carries them.

use vireo_api::{DataObject, Value};
use vireo_tools::guest_ops::wire::{GuestOp, TicketResult};

use super::{parse, run, GuestRequest};
use crate::methods::{Call, Handler, MethodTable, PendingResult};

/// GuestAuthManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "GuestAuthManager",
    methods: &[
        ("ValidateCredentialsInGuest", Handler::Async(validate)),
        ("AcquireCredentialsInGuest", Handler::Async(acquire)),
        ("ReleaseCredentialsInGuest", Handler::Async(release)),
    ],
};

fn validate<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        run(
            call,
            GuestRequest::on_file(GuestOp::ValidateCredentials, ""),
        )
        .await?;
        Ok(None)
    })
}

/// The requested credentials (`requestedAuth`, a NamePasswordAuthentication) exchanged in the
/// guest for a ticket.
fn acquire<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let schema = call.schema;
        let vm = super::target_vm(call)?;
        let requested = call.arg("requestedAuth").and_then(Value::as_data);
        let auth = super::guest_auth(schema, requested)?;
        let request = GuestRequest::on_file(GuestOp::AcquireTicket, "");
        let result = super::run_in(schema, vm, auth, request).await?;
        let ticket: TicketResult = parse(schema, result)?;
        let credentials = DataObject::of(schema, "TicketedSessionAuthentication")
            .with(schema, "interactiveSession", false)
            .with(schema, "ticket", ticket.ticket);
        Ok(Some(credentials.into()))
    })
}

fn release<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        run(call, GuestRequest::on_file(GuestOp::ReleaseTicket, "")).await?;
        Ok(None)
    })
}
