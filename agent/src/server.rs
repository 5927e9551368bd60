//! The HTTPS front door: TLS accept, HTTP/1.1 keep-alive via hyper, connection limits and
//! timeouts (`connections`), request size and read-time limits, gzip
//! for clients that accept it, and the routes `POST /sdk` and `GET /sdk/vimServiceVersions.xml`
//! (plus `/folder/...` and `GET /screen`, served by `http_files`, and the console's
//! WebSocket upgrade `GET /ticket/<ticket>`, served by `console::session`, the one-time
//! guest file transfer URLs `/guestFile?id=&token=`, served by `guest_files`, and the
//! disks of export and import leases, `GET`/`PUT`/`POST /nfc/<lease>/<file>`, served by
//! `nfc::endpoint`).

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, COOKIE,
    SET_COOKIE, USER_AGENT,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_rustls::TlsAcceptor;
use vireo_api::limits::clip;

use crate::connections::{peer_closed, Admission, Connections, Timeouts, Tracked, PEER_CHECK};
use crate::console;
use crate::host::Host;
use crate::http_files;
use crate::methods::Peer;
use crate::sessions::session_key_from_cookie;
use crate::soap;

/// Responses at least this large are gzipped for clients that accept gzip.
const GZIP_THRESHOLD: usize = 2048;
/// The SOAPAction request header.
const SOAP_ACTION: HeaderName = HeaderName::from_static("soapaction");
/// The Content-Type of every SOAP response.
const TEXT_XML: HeaderValue = HeaderValue::from_static("text/xml; charset=utf-8");

/// Accepts connections until the task is dropped, handing them round-robin to `workers`
/// (single-threaded runtimes, one per core): a connection lives on one thread, so requests on
/// it never wait for a cross-thread wake-up.
pub async fn serve(
    host: Arc<Host>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    workers: Vec<Handle>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Connections::new(host.config.max_connections);
    let mut next = 0usize;
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admission) = connections.admit() else {
            tracing::warn!(%addr, "connection refused: every connection is serving a request");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::warn!(%error, "cannot move a connection to a worker");
                continue;
            }
        };
        next = next.wrapping_add(1);
        let worker = &workers[next % workers.len()];
        worker.spawn(connection(
            host.clone(),
            acceptor.clone(),
            tcp,
            addr,
            admission,
        ));
    }
}

/// Serves one connection on the current (worker) runtime until it ends, times out or is
/// evicted to make room for another.
async fn connection(
    host: Arc<Host>,
    acceptor: TlsAcceptor,
    tcp: std::net::TcpStream,
    addr: SocketAddr,
    admission: Admission,
) {
    // A second handle on the socket, to see whether the client has gone while a request is
    // served: hyper is told not to look (`half_close`), as its look, a read in the middle of
    // every request, takes a fresh read buffer each time.
    let watch = match tcp.try_clone() {
        Ok(watch) => watch,
        Err(error) => return tracing::warn!(%addr, %error, "cannot watch a connection"),
    };
    let tcp = match tokio::net::TcpStream::from_std(tcp) {
        Ok(tcp) => tcp,
        Err(error) => return tracing::warn!(%addr, %error, "cannot register a connection"),
    };
    let tracker = admission.tracker.clone();
    let timeouts = Timeouts::from_config(&host.config);
    let server = tcp.local_addr().ok();
    let handshake = tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp));
    let tls = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => return tracing::debug!(%addr, %error, "TLS handshake failed"),
            Err(_) => return tracing::debug!(%addr, "TLS handshake timed out"),
        },
        _ = tracker.evicted.notified() => {
            return tracing::debug!(%addr, "closed during its handshake to make room");
        }
    };
    tracker.handshake_done();
    let serving = tracker.clone();
    let service = hyper::service::service_fn(move |request| {
        let request_guard = serving.serving();
        let host = host.clone();
        async move {
            let response = route(host, addr, server, timeouts, request).await;
            drop(request_guard);
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .half_close(true)
        // A response's head and body go to rustls as one buffer: cheaper for the small
        // responses most calls get than a vectored write of two, at the cost of one more copy
        // of large bodies (cheap beside encrypting them).
        .writev(false)
        .serve_connection(TokioIo::new(Tracked::new(tls, tracker.clone())), service)
        .with_upgrades();
    tokio::pin!(connection);
    loop {
        let deadline = tracker.deadline(&timeouts);
        // Woken at the deadline, and at least every PEER_CHECK to look for a client that left
        // while a request is served (there is no deadline then).
        let check = std::time::Instant::now() + PEER_CHECK;
        let wake = deadline.map_or(check, |deadline| deadline.min(check));
        // Biased: the connection comes first (it is what wakes the task nearly every time),
        // and no random number is drawn to pick an order.
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%addr, %error, "connection ended with an error");
                }
                return;
            }
            _ = tracker.evicted.notified() => {
                return tracing::debug!(%addr, "idle connection closed to make room");
            }
            _ = tokio::time::sleep_until(wake.into()) => match tracker.deadline(&timeouts) {
                Some(deadline) if deadline <= std::time::Instant::now() => {
                    return tracing::debug!(%addr, "connection timed out");
                }
                None if peer_closed(&watch) => {
                    return tracing::debug!(%addr, "client left during its request");
                }
                _ => {}
            }
        }
    }
}

async fn route(
    host: Arc<Host>,
    addr: SocketAddr,
    server: Option<SocketAddr>,
    timeouts: Timeouts,
    mut request: Request<Incoming>,
) -> Result<Response<http_files::Body>, Infallible> {
    if request.method() == Method::POST && request.uri().path() == "/sdk" {
        let response = sdk(host, addr, server, timeouts, request).await;
        return Ok(http_files::boxed(response));
    }
    // The SOAP path takes the address from `addr`; the others read it from the request.
    request
        .extensions_mut()
        .insert(http_files::ClientIp(addr.ip()));
    let response = match (request.method(), request.uri().path()) {
        (_, path) if path.starts_with("/folder/") => {
            return Ok(http_files::folder(host, request).await)
        }
        (_, path) if path.starts_with("/nfc/") => {
            return Ok(crate::nfc::endpoint::serve(host, request).await)
        }
        (_, "/guestFile") => return Ok(crate::guest_files::endpoint(host, request).await),
        (&Method::GET, "/sdk/vimServiceVersions.xml") => {
            xml(StatusCode::OK, service_versions(&host).into_bytes())
        }
        (&Method::GET, "/screen") => http_files::screen(host, request).await,
        (&Method::GET, path) if path.starts_with("/ticket/") => {
            console::session::endpoint(host, request).await
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found\n")))
            .expect("static response"),
    };
    Ok(http_files::boxed(response))
}

async fn sdk(
    host: Arc<Host>,
    addr: SocketAddr,
    server: Option<SocketAddr>,
    timeouts: Timeouts,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let headers = SoapHeaders::read(&parts.headers);
    let (session_key, soap_action) = (headers.session_key, headers.soap_action);
    let gzip = headers.accept_encoding.is_some_and(|e| e.contains("gzip"));
    let peer = Peer {
        ip: addr.ip(),
        user_agent: headers
            .user_agent
            .map(|agent| clip(agent).into_owned())
            .unwrap_or_default(),
        server,
    };
    let limit = host.config.max_request_bytes;
    let outcome = match tokio::time::timeout(timeouts.read, read_body(body, limit)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(format!("request body exceeds {limit} bytes"))
        }
        Ok(Err(error)) => Err(format!("cannot read the request body: {error}")),
        Err(_) => Err(format!(
            "request body not received within {} s",
            timeouts.read.as_secs()
        )),
    };
    let body = match outcome {
        Ok(body) => body,
        Err(why) => return body_refused(&host, soap_action, why),
    };
    let outcome = soap::handle(&host, session_key, soap_action, body, &peer).await;
    soap_http_response(outcome, gzip)
}

/// The request headers a SOAP call reads, found in one pass over the headers (rather than a
/// hashed lookup for each). Each is its name's first value, if that is text; the session key
/// comes from the first `Cookie` header that holds one.
#[derive(Default)]
struct SoapHeaders<'a> {
    session_key: Option<&'a str>,
    soap_action: Option<&'a str>,
    accept_encoding: Option<&'a str>,
    user_agent: Option<&'a str>,
}

impl<'a> SoapHeaders<'a> {
    fn read(headers: &'a HeaderMap) -> SoapHeaders<'a> {
        let mut found = SoapHeaders::default();
        // Whether each single-valued header has been met, text or not.
        let (mut soap_action, mut accept_encoding, mut user_agent) = (false, false, false);
        for (name, value) in headers {
            let first = |seen: &mut bool| !std::mem::replace(seen, true);
            let slot = if name == COOKIE {
                if found.session_key.is_none() {
                    found.session_key = value.to_str().ok().and_then(session_key_from_cookie);
                }
                continue;
            } else if name == SOAP_ACTION && first(&mut soap_action) {
                &mut found.soap_action
            } else if name == ACCEPT_ENCODING && first(&mut accept_encoding) {
                &mut found.accept_encoding
            } else if name == USER_AGENT && first(&mut user_agent) {
                &mut found.user_agent
            } else {
                continue;
            };
            *slot = value.to_str().ok();
        }
        found
    }
}

/// A request body of at most `limit` bytes: as received when it came in one piece (the usual
/// case for SOAP, kept without a copy), else joined. Trailers are ignored.
async fn read_body(
    body: Incoming,
    limit: usize,
) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
    let mut body = Limited::new(body, limit);
    let mut first: Option<Bytes> = None;
    let mut joined = Vec::new();
    // Once the announced length has all arrived the body is not polled again: that poll would
    // only lock hyper's body channel to find its end (or wait for the end to be sent).
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else {
            break;
        };
        let Ok(chunk) = frame?.into_data() else {
            continue;
        };
        match first.take() {
            None if joined.is_empty() => first = Some(chunk),
            earlier => {
                joined.extend_from_slice(earlier.as_deref().unwrap_or_default());
                joined.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.into()))
}

/// The fault for a body that could not be read, closing the connection.
fn body_refused(host: &Host, soap_action: Option<&str>, why: String) -> Response<Full<Bytes>> {
    let version = host.schema.versions().from_soap_action(soap_action);
    let fault = vireo_api::Fault::invalid_request(host.schema, why);
    let mut response = soap_http_response(soap::fault_response(host, version, &fault), false);
    response
        .headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn soap_http_response(outcome: soap::SoapResponse, gzip: bool) -> Response<Full<Bytes>> {
    let status = if outcome.status == 200 {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let mut body = outcome.body;
    let mut gzipped = false;
    if gzip && body.len() >= GZIP_THRESHOLD {
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        if encoder.write_all(&body).is_ok() {
            if let Ok(compressed) = encoder.finish() {
                body = compressed;
                gzipped = true;
            }
        }
    }
    // Built in place rather than through `Response::builder`, which moves the parts through a
    // `Result` at every step: this runs for every SOAP call.
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, TEXT_XML);
    if let Some(key) = outcome.new_session {
        let cookie = format!("vmware_soap_session=\"{key}\"; Path=/; HttpOnly; Secure;");
        headers.insert(
            SET_COOKIE,
            HeaderValue::try_from(cookie).expect("a session key is header text"),
        );
    }
    if gzipped {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

fn xml(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/xml; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response parts")
}

/// vimServiceVersions.xml: urn:vim25 at 8.0.3.0 with every prior version a client may pick.
pub fn service_versions(host: &Host) -> String {
    let mut ids = host.schema.versions().wire_ids();
    let newest = ids.next().unwrap_or("8.0.3.0");
    let prior: String = ids
        .map(|id| format!("   <version>{id}</version>\n"))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<namespaces version=\"1.0\">\n <namespace>\n  <name>urn:vim25</name>\n  <version>{newest}</version>\n  <priorVersions>\n{prior}  </priorVersions>\n </namespace>\n</namespaces>\n"
    )
}
