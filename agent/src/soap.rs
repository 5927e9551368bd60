//! One SOAP exchange: decode the envelope, find the caller's session from the cookie, dispatch,
//! and encode the response or the fault (HTTP 500) for the client's negotiated version. Large
//! bodies are decoded on blocking threads, a few at a time, so that they never hold up the
//! other connections of a worker runtime.

use std::cell::RefCell;
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
        Ok(value) => SoapResponse {
            status: 200,
            body: encoded(|out| {
                encode_response(schema, version, request.method, value.as_ref(), out)
            }),
            new_session,
        },
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
    SoapResponse {
        status: 500,
        body: encoded(|out| encode_fault(host.schema, version, fault, out)),
        new_session: None,
    }
}

thread_local! {
    /// The buffer this thread encodes responses into, kept from one response to the next.
    static ENCODING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A buffer kept beyond this capacity (after a very large response) is released.
const ENCODING_KEPT_MAX: usize = 1 << 20;

/// What `encode` writes, encoded into this thread's kept buffer (so a large response does not
/// grow a fresh one step by step) and returned in one allocation of its exact size.
fn encoded(encode: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    ENCODING.with_borrow_mut(|out| {
        out.clear();
        encode(out);
        let body = out.to_vec();
        if out.capacity() > ENCODING_KEPT_MAX {
            *out = Vec::new();
        }
        body
    })
}
