//! HttpNfcLease: HttpNfcLeaseProgress (keeps the lease alive), HttpNfcLeaseComplete (ready →
//! done), HttpNfcLeaseAbort (→ error with the client's fault) and HttpNfcLeaseGetManifest
//! (the SHA-1 of each file transferred). The lease itself lives in `crate::nfc`.

use vireo_api::{Fault, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::faults;
use crate::nfc::{end, lease_of, manifest, report_progress, LeaseState};

/// HttpNfcLease's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HttpNfcLease",
    methods: &[
        ("HttpNfcLeaseProgress", Handler::Sync(progress)),
        ("HttpNfcLeaseComplete", Handler::Sync(complete)),
        ("HttpNfcLeaseAbort", Handler::Sync(abort)),
        ("HttpNfcLeaseGetManifest", Handler::Sync(get_manifest)),
    ],
};

fn progress(call: &Call<'_>) -> MethodResult {
    let lease = lease_of(call.host, call.this())?;
    let percent = call
        .arg("percent")
        .and_then(Value::as_i64)
        .ok_or_else(|| Fault::invalid_argument(call.schema, "percent", "percent is required"))?;
    report_progress(call.host, &lease, percent).map(|()| None)
}

fn complete(call: &Call<'_>) -> MethodResult {
    let lease = lease_of(call.host, call.this())?;
    end(call.host, &lease, LeaseState::Done, None, false).map(|()| None)
}

fn abort(call: &Call<'_>) -> MethodResult {
    let lease = lease_of(call.host, call.this())?;
    let fault = match call.arg("fault").and_then(Value::as_data) {
        Some(data) => data.clone(),
        None => faults::request_canceled(call.schema, "The lease was aborted by the client").data,
    };
    end(call.host, &lease, LeaseState::Error, Some(fault), false).map(|()| None)
}

fn get_manifest(call: &Call<'_>) -> MethodResult {
    let lease = lease_of(call.host, call.this())?;
    let entries = manifest(call.host, &lease)?;
    Ok(Some(Value::Array(
        call.schema.known_type("HttpNfcLeaseManifestEntry"),
        entries,
    )))
}
