//! `GET /nfc/<lease>/<disk-N.vmdk>`: an export lease's disk sent as a streamOptimized VMDK
//! generated on the fly from the disk's qcow2 chain (no temporary copy), to a caller with a
//! session cookie (or Basic credentials) holding VApp.Export on the exported VM. Only the
//! file names the lease lists are served; nothing in the URL is ever used as a path.

use std::io::Write;
use std::sync::Arc;

use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc::Sender;
use vireo_disk::source::CopySource;
use vireo_disk::vmdk::write_stream_optimized;

use super::{record_file_size, Lease, LeaseState};
use crate::host::Host;
use crate::http_files::{self, authenticated_user, channel_body, plain, Body};
use crate::methods::access;

/// Bytes per chunk handed to the connection.
const CHUNK_BYTES: usize = 256 << 10;
/// Chunks generated ahead of a slow client.
const CHUNKS_AHEAD: usize = 4;

/// Serves one `/nfc/...` request.
pub async fn serve(host: Arc<Host>, request: Request<Incoming>) -> Response<Body> {
    match start(&host, &request).await {
        Ok(response) => response,
        Err(refusal) => http_files::boxed(refusal),
    }
}

async fn start(
    host: &Arc<Host>,
    request: &Request<Incoming>,
) -> Result<Response<Body>, Response<http_body_util::Full<Bytes>>> {
    if request.method() != hyper::Method::GET {
        return Err(plain(StatusCode::METHOD_NOT_ALLOWED, "GET only"));
    }
    let Some(user) = authenticated_user(host, request).await else {
        return Err(plain(
            StatusCode::UNAUTHORIZED,
            "log in first (session cookie)",
        ));
    };
    let not_found = || plain(StatusCode::NOT_FOUND, "no such lease file");
    let rest = request
        .uri()
        .path()
        .strip_prefix("/nfc/")
        .ok_or_else(not_found)?;
    let (id, target) = rest.split_once('/').ok_or_else(not_found)?;
    let lease = host.leases.get(id).ok_or_else(not_found)?;
    let index = lease
        .disks
        .iter()
        .position(|d| d.target_id == target)
        .ok_or_else(not_found)?;
    if !access::user_holds_any(host, &user, &["VApp.Export"], &lease.entity) {
        return Err(plain(
            StatusCode::FORBIDDEN,
            format!("{user} lacks VApp.Export on {}", lease.entity),
        ));
    }
    match lease.state() {
        LeaseState::Ready => {}
        LeaseState::Initializing => {
            return Err(plain(StatusCode::FORBIDDEN, "the lease is not ready yet"))
        }
        LeaseState::Done | LeaseState::Error => return Err(not_found()),
    }
    lease.touch();
    let (sender, chunks) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    let host = host.clone();
    tokio::task::spawn_blocking(move || generate(&host, &lease, index, sender));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(channel_body(chunks))
        .expect("valid response parts"))
}

/// Writes disk `index` of `lease` into `sender` as a streamOptimized VMDK; records its size
/// when it was sent whole, and ends the body with an error otherwise.
fn generate(host: &Host, lease: &Lease, index: usize, sender: Sender<std::io::Result<Bytes>>) {
    let disk = &lease.disks[index];
    let mut out = ChannelWriter {
        sender: sender.clone(),
        buffer: Vec::with_capacity(CHUNK_BYTES),
    };
    let written = CopySource::open_chain(&disk.top)
        .map_err(|e| e.to_string())
        .and_then(|mut source| {
            let mut keep_alive = |_: u64, _: u64| {
                lease.touch();
                true
            };
            write_stream_optimized(&mut source, &disk.target_id, &mut out, &mut keep_alive)
                .map_err(|e| e.to_string())
        });
    match written {
        Ok(bytes) => record_file_size(host, lease, index, bytes),
        Err(why) => {
            tracing::warn!(lease = %lease.moref.id, disk = %disk.target_id, "export stopped: {why}");
            let _ = sender.blocking_send(Err(std::io::Error::other(why)));
        }
    }
}

/// A `Write` that hands full chunks to the response body, waiting while the client is slow.
struct ChannelWriter {
    sender: Sender<std::io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        self.sender
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
