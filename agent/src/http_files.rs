//! HTTP beside SOAP: `/folder/<path>?dsName=<datastore>[&dcPath=ha-datacenter]` serves
//! datastore files through the datastore resolver — GET/HEAD a file (whole, or one byte range
//! with `Range: bytes=a-b`, as backup clients read the frozen layers of a snapshot) streamed
//! in bounded chunks, or a folder's index; PUT streams an upload into place; DELETE — and
//! `GET /screen?id=<vm moid>` a PNG of a running VM's console. All need a session cookie
//! (`vmware_soap_session`) or Basic credentials, and the datastore privilege of the method.

use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{
    HeaderValue, ACCEPT_RANGES, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, COOKIE,
    WWW_AUTHENTICATE,
};
use hyper::{Request, Response, StatusCode};
use vireo_api::MoRef;

use crate::datastore::files::{self, EntryKind, FileError};
use crate::datastore::listing;
use crate::host::Host;
use crate::sessions::session_key_from_cookie;
use crate::vm::beneath::Access;
use crate::vm::datastore_path::{DatastorePath, DatastorePathError};
use crate::vm::screenshot;

/// Bytes per chunk of a streamed datastore file.
const CHUNK_BYTES: u64 = 64 << 10;
/// Chunks read ahead of a slow client: the most one download holds in memory.
const CHUNKS_AHEAD: usize = 2;
/// How long a client may take to accept the next chunk before the download stops.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

type HttpResponse = Response<Full<Bytes>>;

/// A response body: a whole buffer or a streamed file.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A buffered response as a [`Body`] response.
pub fn boxed(response: HttpResponse) -> Response<Body> {
    response.map(|full| full.map_err(|never| match never {}).boxed())
}

/// A plain-text response (a line of explanation).
pub(crate) fn plain(status: StatusCode, text: impl Into<String>) -> HttpResponse {
    let mut text = text.into();
    text.push('\n');
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text)))
        .expect("valid response parts")
}

/// The address a request came from, which the server puts in the request's extensions (Basic
/// credentials are checked in turn with other clients' logins).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub std::net::IpAddr);

/// The user a request authenticates as: a live session cookie's, or valid Basic credentials'.
pub(crate) async fn authenticated_user(
    host: &Arc<Host>,
    request: &Request<Incoming>,
) -> Option<String> {
    let headers = request.headers();
    let from_cookie = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(session_key_from_cookie)
        .find_map(|key| host.sessions.get(key));
    if let Some(session) = from_cookie {
        return Some(session.user.clone());
    }
    let (user, password) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic_credentials)?;
    let client = request.extensions().get::<ClientIp>()?.0;
    let valid = host
        .logins
        .check(&host.accounts, (&user, &password), client)
        .await;
    valid.unwrap_or(false).then_some(user)
}

/// 401 without credentials; 403 unless the user holds one of `privileges` on `obj` (an object
/// that does not exist is the handler's 404 to report).
async fn authorize(
    host: &Arc<Host>,
    request: &Request<Incoming>,
    privileges: &[&str],
    obj: &MoRef,
) -> Result<(), HttpResponse> {
    let user = authenticated_user(host, request)
        .await
        .ok_or_else(unauthorized)?;
    let exists = host.inventory().get(obj).is_some();
    if !exists || host.user_holds_any(&user, privileges, obj) {
        return Ok(());
    }
    Err(plain(
        StatusCode::FORBIDDEN,
        format!("{user} lacks {} on {obj}", privileges.join(" or ")),
    ))
}

/// `Basic base64(user:password)` → (user, password).
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn unauthorized() -> HttpResponse {
    let mut response = plain(
        StatusCode::UNAUTHORIZED,
        "log in first (session cookie or Basic)",
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"VMware HTTP server\""),
    );
    response
}

/// `%xx` decoding of a URL path or query value (`+` is a space in query values).
fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A query parameter's decoded value.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| percent_decode(value, true)).flatten()
    })
}

/// The datastore path a `/folder` URL names, checked by the datastore resolver's parser
/// (no `..`, no absolute path), or why not.
fn folder_path(path: &str, query: Option<&str>) -> Result<DatastorePath, (StatusCode, String)> {
    let relative = path
        .strip_prefix("/folder/")
        .and_then(|p| percent_decode(p, false))
        .ok_or_else(|| (StatusCode::BAD_REQUEST, "bad path".to_string()))?;
    let ds_name = query_param(query, "dsName")
        .ok_or_else(|| (StatusCode::BAD_REQUEST, "dsName is required".to_string()))?;
    if let Some(dc) = query_param(query, "dcPath").filter(|dc| dc != "ha-datacenter") {
        return Err((StatusCode::NOT_FOUND, format!("no datacenter {dc}")));
    }
    if relative.starts_with('/') {
        return Err(path_refused(DatastorePathError::Escapes(relative)));
    }
    DatastorePath::parse(&format!("[{ds_name}] {relative}")).map_err(path_refused)
}

/// The status a resolver refusal is answered with.
fn path_refused(e: DatastorePathError) -> (StatusCode, String) {
    match e {
        DatastorePathError::NoDatastore(_) => (StatusCode::NOT_FOUND, e.to_string()),
        e if e.is_not_found() => (StatusCode::NOT_FOUND, "no such file".to_string()),
        DatastorePathError::Unreachable { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        DatastorePathError::Symlink(_) => (StatusCode::FORBIDDEN, e.to_string()),
        e => (StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// A refusal as a response.
fn refused((status, why): (StatusCode, String)) -> HttpResponse {
    plain(status, why)
}

/// The answer to a datastore file operation's failure.
fn file_refused(e: FileError) -> HttpResponse {
    let why = e.to_string();
    let status = match e {
        FileError::Path(e) => path_refused(e).0,
        FileError::NotFound(_) => StatusCode::NOT_FOUND,
        FileError::Exists(_) => StatusCode::CONFLICT,
        FileError::DatastoreRoot(_) => StatusCode::BAD_REQUEST,
        FileError::Special(_) => StatusCode::FORBIDDEN,
        FileError::Io { source, .. }
            if source.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) =>
        {
            StatusCode::INSUFFICIENT_STORAGE
        }
        FileError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    plain(status, why)
}

/// A `Range: bytes=...` header against a file of `size` bytes: the inclusive byte span.
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (size.checked_sub(n.min(size))?, size.checked_sub(1)?)
        }
        (first, "") => (first.parse().ok()?, size.checked_sub(1)?),
        (first, last) => (
            first.parse().ok()?,
            last.parse::<u64>().ok()?.min(size.checked_sub(1)?),
        ),
    };
    (first <= last && last < size).then_some((first, last))
}

/// A file's bytes sent in chunks as the client takes them: at most [`CHUNKS_AHEAD`] chunks
/// are read ahead of a slow client, and one that takes nothing for [`WRITE_TIMEOUT`] gets no
/// more (the connection then ends by its own timeouts).
struct FileStream {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
}

impl hyper::body::Body for FileStream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| bytes.map(Frame::data)))
    }
}

/// A response body streaming the chunks `chunks` delivers (an error ends it).
pub(crate) fn channel_body(chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Body {
    FileStream { chunks }.boxed()
}

/// Streams `len` bytes of `file` from `first`.
fn stream(file: std::fs::File, first: u64, len: u64) -> FileStream {
    let (sender, chunks) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    let file = Arc::new(file);
    tokio::spawn(async move {
        let end = first + len;
        let mut at = first;
        while at < end {
            let n = (end - at).min(CHUNK_BYTES);
            let source = file.clone();
            let chunk = tokio::task::spawn_blocking(move || {
                let mut buffer = vec![0u8; n as usize];
                source
                    .read_exact_at(&mut buffer, at)
                    .map(|()| Bytes::from(buffer))
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let failed = chunk.is_err();
            let sent = tokio::time::timeout(WRITE_TIMEOUT, sender.send(chunk)).await;
            if failed || !matches!(sent, Ok(Ok(()))) {
                return;
            }
            at += n;
        }
    });
    FileStream { chunks }
}

/// `/folder/<path>?dsName=...`: GET and HEAD read a file (whole or one range, streamed) or
/// list a folder; PUT uploads a file; DELETE deletes one.
pub async fn folder(host: Arc<Host>, request: Request<Incoming>) -> Response<Body> {
    let served = match *request.method() {
        hyper::Method::GET | hyper::Method::HEAD => read(host, request).await,
        hyper::Method::PUT => upload(host, request).await.map(boxed),
        hyper::Method::DELETE => delete(host, request).await.map(boxed),
        _ => Err(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET, HEAD, PUT or DELETE",
        )),
    };
    served.unwrap_or_else(boxed)
}

/// Authenticates the request, checks `privilege` on the datastore it names, and returns the
/// datastore path it names.
async fn authorized_path(
    host: &Arc<Host>,
    request: &Request<Incoming>,
    privilege: &str,
) -> Result<DatastorePath, HttpResponse> {
    let datastore = query_param(request.uri().query(), "dsName").unwrap_or_default();
    let datastore = MoRef::new("Datastore", datastore.as_str());
    authorize(host, request, &[privilege], &datastore).await?;
    folder_path(request.uri().path(), request.uri().query()).map_err(refused)
}

/// GET or HEAD: the streamed file or the folder's index (HEAD: their headers alone).
async fn read(host: Arc<Host>, request: Request<Incoming>) -> Result<Response<Body>, HttpResponse> {
    let path = authorized_path(&host, &request, "Datastore.Browse").await?;
    let head_only = request.method() == hyper::Method::HEAD;
    if files::is_folder(&host.datastores(), &path) {
        let page = folder_index(&host, &path, &request).map_err(file_refused)?;
        let length = page.len();
        let body = if head_only {
            Bytes::new()
        } else {
            Bytes::from(page)
        };
        let mut response = Response::new(Full::new(body));
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        return Ok(boxed(response));
    }
    let file = path
        .open(&host.datastores(), Access::Read)
        .map_err(|e| refused(path_refused(e)))?;
    let size = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        _ => return Err(plain(StatusCode::NOT_FOUND, "no such file")),
    };
    let range = request
        .headers()
        .get(hyper::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, first, last) = match range {
        Some(header) => match parse_range(&header, size) {
            Some((first, last)) => (StatusCode::PARTIAL_CONTENT, first, last),
            None => {
                let mut response = plain(StatusCode::RANGE_NOT_SATISFIABLE, "unsatisfiable range");
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(CONTENT_RANGE, value);
                }
                return Err(response);
            }
        },
        None if size == 0 => (StatusCode::OK, 0, 0),
        None => (StatusCode::OK, 0, size - 1),
    };
    let len = if size == 0 { 0 } else { last - first + 1 };
    let mut builder = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, len)
        .header(ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(CONTENT_RANGE, format!("bytes {first}-{last}/{size}"));
    }
    let body = if head_only {
        boxed(Response::new(Full::new(Bytes::new()))).into_body()
    } else {
        BodyExt::boxed(stream(file, first, len))
    };
    Ok(builder.body(body).expect("valid response parts"))
}

/// The HTML index of a folder.
fn folder_index(
    host: &Host,
    path: &DatastorePath,
    request: &Request<Incoming>,
) -> Result<String, FileError> {
    let entries = files::read_folder(&host.datastores(), path)?;
    let rows: Vec<listing::Row> = entries
        .into_iter()
        .filter(|(name, kind, _)| {
            matches!(kind, EntryKind::File | EntryKind::Folder) && !files::is_partial(name)
        })
        .map(|(name, kind, stat)| listing::Row {
            name,
            kind,
            size: stat.st_size,
            modified: stat.st_mtime,
        })
        .collect();
    let dc_path =
        query_param(request.uri().query(), "dcPath").unwrap_or_else(|| "ha-datacenter".to_string());
    Ok(listing::html(path, &dc_path, &rows))
}

/// PUT: streams the body into a new file under a temporary name, renamed over `path` once
/// complete (201 Created, or 200 when it replaced a file); nothing is left when the upload
/// fails or stops short. A declared length beyond the datastore's free space is refused.
async fn upload(host: Arc<Host>, request: Request<Incoming>) -> Result<HttpResponse, HttpResponse> {
    let path = authorized_path(&host, &request, "Datastore.FileManagement").await?;
    let declared: Option<u64> = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let datastores = host.datastores().clone();
    let target = path.clone();
    let begun = tokio::task::spawn_blocking(move || {
        let replaces = files::Entry::locate(&datastores, &target)?
            .kind()?
            .is_some();
        let new_file = files::NewFile::create(&datastores, &target)?;
        let free = files::free_bytes(&new_file.file).map_err(|source| FileError::Io {
            path: target.to_string(),
            source,
        })?;
        Ok::<_, FileError>((new_file, replaces, free))
    })
    .await
    .map_err(|e| plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (new_file, replaces, free) = begun.map_err(file_refused)?;
    if declared.is_some_and(|length| length > free) {
        return Err(plain(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "{path}: {} bytes do not fit in the {free} bytes free",
                declared.unwrap_or(0)
            ),
        ));
    }
    let timeout = Duration::from_secs(host.config.read_timeout_secs);
    let written = receive(request.into_body(), new_file, timeout).await?;
    if let Some(length) = declared.filter(|&length| length != written.1) {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            format!("the upload stopped after {} of {length} bytes", written.1),
        ));
    }
    let committed = tokio::task::spawn_blocking(move || written.0.commit()).await;
    match committed {
        Ok(Ok(())) if replaces => Ok(plain(StatusCode::OK, format!("{path} replaced"))),
        Ok(Ok(())) => Ok(plain(StatusCode::CREATED, format!("{path} created"))),
        Ok(Err(e)) => Err(file_refused(e)),
        Err(e) => Err(plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// Writes the request body into `new_file` as it arrives (a bounded queue of chunks between
/// the connection and a writer thread); returns the file and the bytes written. A client
/// silent for `timeout` ends the upload.
async fn receive(
    mut body: Incoming,
    new_file: files::NewFile,
    timeout: Duration,
) -> Result<(files::NewFile, u64), HttpResponse> {
    let (sender, mut chunks) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_AHEAD);
    let writer = tokio::task::spawn_blocking(move || {
        let mut new_file = new_file;
        let mut written = 0u64;
        while let Some(chunk) = chunks.blocking_recv() {
            std::io::Write::write_all(&mut new_file.file, &chunk)?;
            written += chunk.len() as u64;
        }
        Ok::<_, std::io::Error>((new_file, written))
    });
    let mut failure = None;
    loop {
        match tokio::time::timeout(timeout, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if sender.send(data).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                failure = Some(plain(
                    StatusCode::BAD_REQUEST,
                    format!("upload failed: {e}"),
                ));
                break;
            }
            Err(_) => {
                failure = Some(plain(StatusCode::REQUEST_TIMEOUT, "the upload stalled"));
                break;
            }
        }
    }
    drop(sender);
    let outcome = writer
        .await
        .map_err(|e| plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match (outcome, failure) {
        (Err(e), _) if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => Err(plain(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("the datastore is full: {e}"),
        )),
        (Err(e), _) => Err(plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        (Ok(_), Some(failure)) => Err(failure),
        (Ok(done), None) => Ok(done),
    }
}

/// DELETE: deletes the file (or folder) at the path.
async fn delete(host: Arc<Host>, request: Request<Incoming>) -> Result<HttpResponse, HttpResponse> {
    let path = authorized_path(&host, &request, "Datastore.DeleteFile").await?;
    let target = path.clone();
    let deleted =
        tokio::task::spawn_blocking(move || files::delete(&host.datastores(), &target)).await;
    match deleted {
        Ok(Ok(())) => Ok(plain(StatusCode::NO_CONTENT, "")),
        Ok(Err(e)) => Err(file_refused(e)),
        Err(e) => Err(plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// `GET /screen?id=<moid>`: a PNG of the VM's console (409 when it is not running).
pub async fn screen(host: Arc<Host>, request: Request<Incoming>) -> HttpResponse {
    let Some(id) = query_param(request.uri().query(), "id") else {
        return plain(StatusCode::BAD_REQUEST, "id is required");
    };
    let privileges = [
        "VirtualMachine.Interact.ConsoleInteract",
        "VirtualMachine.Interact.CreateScreenshot",
    ];
    let vm = MoRef::new("VirtualMachine", id.as_str());
    if let Err(refused) = authorize(&host, &request, &privileges, &vm).await {
        return refused;
    }
    let Some(vm) = host.vms.get(&MoRef::new("VirtualMachine", id.as_str())) else {
        return plain(StatusCode::NOT_FOUND, format!("no virtual machine {id}"));
    };
    let shot = tokio::task::spawn_blocking(move || screenshot::capture(&host, &vm)).await;
    match shot {
        Ok(Ok(png)) => Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "image/png")
            .body(Full::new(Bytes::from(png)))
            .expect("valid response parts"),
        Ok(Err(fault)) => plain(StatusCode::CONFLICT, fault.message),
        Err(error) => plain(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-1", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }

    #[test]
    fn urls_decode_and_credentials_split() {
        assert_eq!(
            percent_decode("a%20b/c%2Bd", false).as_deref(),
            Some("a b/c+d")
        );
        assert_eq!(
            query_param(Some("dcPath=ha-datacenter&dsName=data+store"), "dsName").as_deref(),
            Some("data store")
        );
        assert_eq!(percent_decode("%zz", false), None);
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("root:pa:ss")
        );
        assert_eq!(
            basic_credentials(&header),
            Some(("root".into(), "pa:ss".into()))
        );
    }
}
