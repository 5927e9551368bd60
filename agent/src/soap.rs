//! One SOAP exchange: decode the envelope, find the caller's session from the cookie, dispatch,
//! and encode the response or the fault (HTTP 500) for the client's negotiated version. Large
//! bodies are decoded on blocking threads, a few at a time, so that they never hold up the
//! other connections of a worker runtime.

use std::sync::Arc;

use hyper::body::Bytes;
use tokio::sync::Semaphore;
use vireo_api::codec::{
    decode_request, encode_fault, encode_response, DecodeRequestError, Request,
};
use vireo_api::schema::Schema;
use vireo_api::Fault;

use crate::host::Host;
use crate::methods::{dispatch, Call, Peer};

/// The HTTP-level outcome of a SOAP call.
pub struct SoapResponse {
    /// 200, or 500 for a fault.
    pub status: u16,
    /// The envelope.
    pub body: Vec<u8>,
    /// A new session key to set as cookie (after Login).
    pub new_session: Option<Arc<str>>,
}

/// Bodies at least this large are decoded off the worker runtime.
const DECODE_INLINE_MAX: usize = 64 * 1024;
/// How many large bodies are decoded at once; more wait their turn without blocking anything.
static LARGE_DECODES: Semaphore = Semaphore::const_new(2);

/// Serves one POST /sdk body.
pub async fn handle(
    host: &Arc<Host>,
    session_key: Option<&str>,
    soap_action: Option<&str>,
    body: Bytes,
    peer: &Peer,
) -> SoapResponse {
    let schema = host.schema;
    let version = schema.versions().from_soap_action(soap_action);
    let request = match decode(schema, body).await {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(%error, "undecodable request");
            return fault_response(host, version, &error.to_fault(schema));
        }
    };
    let session = session_key.and_then(|key| host.sessions.get(key));
    let mut call = Call {
        host,
        schema,
        session,
        version,
        request: &request,
        peer,
        new_session: None,
    };
    let result = dispatch(&mut call).await;
    let new_session = call.new_session.as_ref().map(|s| s.key.clone());
    match result {
        Ok(value) => {
            let mut out = Vec::with_capacity(1024);
            encode_response(schema, version, request.method, value.as_ref(), &mut out);
            SoapResponse {
                status: 200,
                body: out,
                new_session,
            }
        }
        Err(fault) => {
            tracing::debug!(
                method = &*schema.method(request.method).name,
                fault = fault.type_name(schema),
                "fault"
            );
            fault_response(host, version, &fault)
        }
    }
}

/// Decodes a body: small ones in place, large ones on a blocking thread.
async fn decode(schema: &'static Schema, body: Bytes) -> Result<Request, DecodeRequestError> {
    if body.len() < DECODE_INLINE_MAX {
        return decode_request(schema, &body);
    }
    let _permit = LARGE_DECODES.acquire().await;
    tokio::task::spawn_blocking(move || decode_request(schema, &body))
        .await
        .unwrap_or_else(|error| {
            Err(DecodeRequestError::Malformed(format!(
                "the decoder failed: {error}"
            )))
        })
}

/// A SOAP fault response.
pub fn fault_response(
    host: &Host,
    version: vireo_api::schema::ClientVersion,
    fault: &Fault,
) -> SoapResponse {
    let mut out = Vec::with_capacity(512);
    encode_fault(host.schema, version, fault, &mut out);
    SoapResponse {
        status: 500,
        body: out,
        new_session: None,
    }
}
