//! Guest file transfers as ESXi hands them out: the one-time URLs
//! `https://<host>:<port>/guestFile?id=<n>&token=<random>` that InitiateFileTransferToGuest /
//! FromGuest (`methods::guest_operations::file_transfer`) issue once they have checked the
//! credentials and the file in the guest, and the endpoint the client PUTs the file to or GETs
//! it from. A URL works once (taken on first use, even if that use fails), expires after
//! [`TRANSFER_TTL`], and carries at most [`MAX_TRANSFER_BYTES`]; a wrong token is refused
//! without using the URL up. The bytes stream through the tools channel in chunks of the
//! guest's offered size, never held whole. Where the guest hands out tickets (vireo-tools),
//! the credentials are exchanged for one when the URL is issued and it is released after the
//! transfer: vireod keeps no password, and a chunk costs the guest no password check. A guest
//! without tickets (the test guest) gets the credentials with each chunk, kept in memory only
//! while the URL is outstanding. They are never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use vireo_tools::guest_ops::wire::{ChunkResult, GuestAuth, GuestFault, GuestOp};

use crate::http_files::{self, plain, Body};
use crate::vm::tools_host::{self, GuestOpFailure};
use crate::vm::Vm;

/// How long a transfer URL stays valid.
pub const TRANSFER_TTL: Duration = Duration::from_secs(300);
/// The largest file one transfer carries.
pub const MAX_TRANSFER_BYTES: u64 = 1 << 30;
/// Most transfer URLs outstanding at once.
pub const MAX_TRANSFERS: usize = 64;
/// Chunks read from the guest ahead of a slow client.
const CHUNKS_AHEAD: usize = 2;

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The client PUTs the guest file.
    ToGuest {
        /// The bytes the client sends.
        size: u64,
        /// Whether an existing file is replaced.
        overwrite: bool,
    },
    /// The client GETs the guest file.
    FromGuest,
}

/// One outstanding transfer URL.
struct Transfer {
    token: String,
    vm: Arc<Vm>,
    auth: GuestAuth,
    path: String,
    direction: Direction,
    expires: Instant,
}

/// The outstanding transfer URLs.
#[derive(Default)]
pub struct Transfers {
    entries: Mutex<HashMap<u64, Transfer>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Why a transfer URL was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Too many are outstanding.
    #[error("{MAX_TRANSFERS} guest file transfers are outstanding; use or let some expire first")]
    TooMany,
    /// No random token could be made.
    #[error("cannot make a transfer token: {0}")]
    Token(getrandom::Error),
}

impl Transfers {
    /// Registers a transfer of guest file `path` of `vm`, its chunks sent with `auth`, for
    /// [`TRANSFER_TTL`]: its id and one-time token.
    pub fn issue(
        &self,
        vm: Arc<Vm>,
        auth: GuestAuth,
        path: String,
        direction: Direction,
    ) -> Result<(u64, String), IssueError> {
        let token = random_token().map_err(IssueError::Token)?;
        let transfer = Transfer {
            token: token.clone(),
            vm,
            auth,
            path,
            direction,
            expires: Instant::now() + TRANSFER_TTL,
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        entries.retain(|_, t| t.expires > now);
        if entries.len() >= MAX_TRANSFERS {
            return Err(IssueError::TooMany);
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        entries.insert(id, transfer);
        Ok((id, token))
    }

    /// The transfer `id` if `token` is its token: removed, so it serves once.
    fn take(&self, id: u64, token: &str) -> Option<Transfer> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(&id)?;
        let matches = entry.token.len() == token.len()
            && entry
                .token
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !matches {
            return None;
        }
        entries.remove(&id).filter(|t| t.expires > Instant::now())
    }
}

fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `?id=<n>&token=<t>` of a transfer URL.
fn id_and_token(query: Option<&str>) -> Option<(u64, String)> {
    let mut id = None;
    let mut token = None;
    for pair in query?.split('&') {
        match pair.split_once('=') {
            Some(("id", value)) => id = value.parse().ok(),
            Some(("token", value)) => token = Some(value.to_string()),
            _ => {}
        }
    }
    Some((id?, token?))
}

/// The HTTP status a failed guest chunk answers with.
fn refused(failure: GuestOpFailure) -> Response<Full<Bytes>> {
    let status = match &failure {
        GuestOpFailure::Unavailable | GuestOpFailure::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        GuestOpFailure::Guest(error) => match error.fault {
            GuestFault::NotFound => StatusCode::NOT_FOUND,
            GuestFault::InvalidLogin | GuestFault::PermissionDenied => StatusCode::FORBIDDEN,
            GuestFault::AlreadyExists => StatusCode::CONFLICT,
            GuestFault::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
    };
    plain(status, failure.to_string())
}

/// Gives back the ticket a transfer used (a guest without tickets has none to release).
async fn release(transfer: &Transfer) {
    if matches!(transfer.auth, GuestAuth::Ticket { .. }) {
        let _ = chunk_op(transfer, GuestOp::ReleaseTicket).await;
    }
}

/// Runs one guest operation of a transfer on a blocking thread.
async fn chunk_op(
    transfer: &Transfer,
    op: GuestOp,
) -> Result<Option<serde_json::Value>, GuestOpFailure> {
    let (vm, auth) = (transfer.vm.clone(), transfer.auth.clone());
    tokio::task::spawn_blocking(move || tools_host::guest_op(&vm, auth, op))
        .await
        .unwrap_or(Err(GuestOpFailure::Unavailable))
}

/// `/guestFile?id=&token=`: GET a FromGuest transfer, PUT a ToGuest one.
pub async fn endpoint(host: Arc<crate::host::Host>, request: Request<Incoming>) -> Response<Body> {
    let Some((id, token)) = id_and_token(request.uri().query()) else {
        return http_files::boxed(plain(StatusCode::BAD_REQUEST, "id and token are required"));
    };
    let Some(transfer) = host.guest_transfers.take(id, &token) else {
        return http_files::boxed(plain(
            StatusCode::NOT_FOUND,
            "no such transfer (used, expired or never issued)",
        ));
    };
    let chunk = tools_host::guest_ops_offer(&transfer.vm).map(|o| o.chunk_bytes.max(1));
    let Some(chunk) = chunk else {
        return http_files::boxed(refused(GuestOpFailure::Unavailable));
    };
    match (request.method(), transfer.direction) {
        (&Method::PUT, Direction::ToGuest { size, overwrite }) => {
            let upload = Upload {
                transfer,
                size,
                overwrite,
                chunk: chunk as usize,
            };
            let response = upload.run(request.into_body()).await;
            release(&upload.transfer).await;
            http_files::boxed(response)
        }
        (&Method::GET, Direction::FromGuest) => download(transfer, chunk).await,
        _ => {
            release(&transfer).await;
            http_files::boxed(plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "PUT an upload URL, GET a download URL",
            ))
        }
    }
}

/// A PUT into the guest, cut into chunks as the body arrives.
struct Upload {
    transfer: Transfer,
    size: u64,
    overwrite: bool,
    chunk: usize,
}

impl Upload {
    async fn run(&self, mut body: Incoming) -> Response<Full<Bytes>> {
        let mut pending: Vec<u8> = Vec::with_capacity(self.chunk);
        let mut written = 0u64;
        loop {
            let frame = match body.frame().await {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    return plain(StatusCode::BAD_REQUEST, format!("upload failed: {error}"))
                }
                None => break,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if written + (pending.len() + data.len()) as u64 > self.size {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the upload is longer than the {} bytes announced",
                        self.size
                    ),
                );
            }
            let mut data = &data[..];
            while !data.is_empty() {
                let take = (self.chunk - pending.len()).min(data.len());
                pending.extend_from_slice(&data[..take]);
                data = &data[take..];
                if pending.len() == self.chunk {
                    if let Err(failure) = self.write(written, &pending).await {
                        return refused(failure);
                    }
                    written += pending.len() as u64;
                    pending.clear();
                }
            }
        }
        if written + pending.len() as u64 != self.size {
            return plain(
                StatusCode::BAD_REQUEST,
                format!(
                    "the upload is shorter than the {} bytes announced",
                    self.size
                ),
            );
        }
        // The last (or, for an empty file, the only) chunk.
        if !pending.is_empty() || written == 0 {
            if let Err(failure) = self.write(written, &pending).await {
                return refused(failure);
            }
        }
        plain(StatusCode::OK, format!("{} bytes written", self.size))
    }

    async fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), GuestOpFailure> {
        let op = GuestOp::WriteFile {
            path: self.transfer.path.clone(),
            offset,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
            overwrite: self.overwrite,
        };
        chunk_op(&self.transfer, op).await.map(drop)
    }
}

/// Reads one chunk of the guest file.
async fn read_chunk(
    transfer: &Transfer,
    offset: u64,
    chunk: u32,
) -> Result<(Bytes, u64), GuestOpFailure> {
    let op = GuestOp::ReadFile {
        path: transfer.path.clone(),
        offset,
        length: chunk,
    };
    let result = chunk_op(transfer, op).await?;
    let malformed = |why: String| {
        GuestOpFailure::Guest(vireo_tools::guest_ops::wire::GuestOpError::new(
            GuestFault::Failed,
            format!("the guest's chunk is malformed: {why}"),
        ))
    };
    let read: ChunkResult =
        serde_json::from_value(result.unwrap_or_default()).map_err(|e| malformed(e.to_string()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(read.data)
        .map_err(|e| malformed(e.to_string()))?;
    Ok((Bytes::from(bytes), read.size))
}

/// Sends the chunks from `at` to `size` as the client takes them; a failure ends the body
/// with an error.
async fn stream_rest(
    transfer: &Transfer,
    sender: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    mut at: u64,
    size: u64,
    chunk: u32,
) {
    while at < size {
        let failure = match read_chunk(transfer, at, chunk).await {
            Ok((bytes, _)) if !bytes.is_empty() => {
                at += bytes.len() as u64;
                if sender.send(Ok(bytes)).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(_) => "the guest file shrank during the download".to_string(),
            Err(failure) => failure.to_string(),
        };
        let _ = sender.send(Err(std::io::Error::other(failure))).await;
        return;
    }
}

/// A GET from the guest: the first chunk fixes the length, the rest stream as the client
/// takes them.
async fn download(transfer: Transfer, chunk: u32) -> Response<Body> {
    let (first, size) = match read_chunk(&transfer, 0, chunk).await {
        Ok(read) => read,
        Err(failure) => {
            release(&transfer).await;
            return http_files::boxed(refused(failure));
        }
    };
    let size = size.min(MAX_TRANSFER_BYTES);
    let (sender, chunks) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    let at = first.len() as u64;
    let _ = sender.try_send(Ok(first));
    tokio::spawn(async move {
        stream_rest(&transfer, &sender, at, size, chunk).await;
        release(&transfer).await;
    });
    let mut response = Response::new(http_files::channel_body(chunks));
    let headers = response.headers_mut();
    headers.insert(CONTENT_LENGTH, size.into());
    headers.insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    response
}
