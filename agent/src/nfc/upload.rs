//! `PUT`/`POST /nfc/<lease>/<disk-N.vmdk>`: an import lease's disk arriving as a VMDK
//! (streamOptimized, as OVF packages carry it, or a monolithicSparse file) or as a flat
//! extent (the disk's raw bytes: what a package holding a flat VMDK references), converted
//! into a qcow2 as it streams (the disk crate's `import_disk_stream`: the sparse magic
//! decides which) under a temporary name in the VM's folder and renamed over the disk once
//! whole. Bounded: a body larger than the disk could ever need is refused (by its
//! Content-Length at once, else when it gets there), a VMDK or flat extent larger than the
//! disk is refused, a client silent for the lease timeout is cut off, and an upload stops as
//! soon as its lease ends. One upload per disk, once.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_LENGTH;
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc::{Receiver, Sender};
use vireo_disk::grow::grow_image;
use vireo_disk::open::ImageFormat;
use vireo_disk::vmdk::{import_disk_stream, ImportVmdkError, MAX_STREAM_METADATA};

use super::{end_upload, hex, Lease, LeaseState, Transfer};
use crate::host::Host;
use crate::http_files::{self, plain, Body};

/// Chunks queued between the connection and the converter.
const CHUNKS_AHEAD: usize = 8;
/// How often a silent upload looks at its lease.
const LEASE_CHECK: Duration = Duration::from_secs(1);

/// Why an upload did not become the disk.
#[derive(Debug, thiserror::Error)]
enum UploadError {
    /// The body is larger than the disk could need
    #[error("the upload exceeds the {0} bytes a VMDK of this disk can take")]
    TooLarge(u64),
    /// The client went silent
    #[error("the upload stalled")]
    Stalled,
    /// The lease ended (aborted, timed out) during the upload
    #[error("the lease ended during the upload")]
    LeaseEnded,
    /// The connection failed
    #[error("the upload failed: {0}")]
    Connection(String),
    /// The VMDK is larger than the disk
    #[error("the VMDK holds {vmdk} bytes, more than the disk's {disk}")]
    Capacity {
        /// The VMDK's capacity.
        vmdk: u64,
        /// The disk's.
        disk: u64,
    },
    /// The VMDK could not be converted
    #[error(transparent)]
    Vmdk(#[from] ImportVmdkError),
    /// The image could not be grown to the disk's size or put in place
    #[error("placing the disk: {0}")]
    Place(String),
}

impl UploadError {
    fn status(&self) -> StatusCode {
        match self {
            UploadError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::Stalled => StatusCode::REQUEST_TIMEOUT,
            UploadError::LeaseEnded | UploadError::Vmdk(ImportVmdkError::Cancelled) => {
                StatusCode::GONE
            }
            UploadError::Place(_) | UploadError::Vmdk(ImportVmdkError::Write(_)) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The most bytes a VMDK of a `capacity`-byte disk may take: every grain stored (deflate
/// can grow incompressible data a little), plus its metadata.
pub fn upload_limit(capacity: u64) -> u64 {
    capacity
        .saturating_add(capacity / 64)
        .saturating_add(MAX_STREAM_METADATA)
}

/// Receives disk `index` of the import lease `lease` from `request`'s body.
pub async fn receive(
    host: &Arc<Host>,
    lease: Arc<Lease>,
    index: usize,
    request: Request<Incoming>,
) -> Response<Body> {
    let disk = &lease.disks[index];
    let limit = upload_limit(disk.capacity);
    let declared: Option<u64> = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if declared.is_some_and(|length| length > limit) {
        return refusal(&UploadError::TooLarge(limit));
    }
    if !lease.begin_upload(index) {
        return http_files::boxed(plain(
            StatusCode::CONFLICT,
            format!("{} is being or was uploaded already", disk.target_id),
        ));
    }
    let (sender, chunks) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    let converter = {
        let lease = lease.clone();
        tokio::task::spawn_blocking(move || convert(&lease, index, chunks))
    };
    let pumped = pump(request.into_body(), sender, limit, &lease).await;
    let converted = converter
        .await
        .unwrap_or_else(|e| Err(UploadError::Place(e.to_string())));
    let outcome = match (converted, pumped) {
        (Ok(transfer), _) => Ok(transfer),
        (Err(_), Err(cut)) => Err(cut),
        (Err(failed), Ok(())) => Err(failed),
    };
    match outcome {
        Ok(transfer) => {
            let message = format!("{} received ({} bytes)", disk.target_id, transfer.bytes);
            end_upload(host, &lease, index, Some(transfer));
            http_files::boxed(plain(StatusCode::OK, message))
        }
        Err(error) => {
            tracing::warn!(lease = %lease.moref.id, disk = %disk.target_id, "upload refused: {error}");
            end_upload(host, &lease, index, None);
            refusal(&error)
        }
    }
}

fn refusal(error: &UploadError) -> Response<Body> {
    http_files::boxed(plain(error.status(), error.to_string()))
}

/// Hands the body's chunks to the converter until it ends, passes `limit`, stalls for the
/// lease timeout, the lease ends, or the converter stops taking them.
async fn pump(
    mut body: Incoming,
    sender: Sender<std::io::Result<Bytes>>,
    limit: u64,
    lease: &Lease,
) -> Result<(), UploadError> {
    let mut received = 0u64;
    let mut last_data = Instant::now();
    loop {
        let frame = match tokio::time::timeout(LEASE_CHECK, body.frame()).await {
            Err(_) if lease.state() != LeaseState::Ready => Err(UploadError::LeaseEnded),
            Err(_) if last_data.elapsed() >= lease.timeout => Err(UploadError::Stalled),
            Err(_) => continue,
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => Err(UploadError::Connection(e.to_string())),
            Ok(Some(Ok(frame))) => Ok(frame),
        };
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Err(error) => {
                let _ = sender
                    .send(Err(std::io::Error::other(error.to_string())))
                    .await;
                return Err(error);
            }
        };
        received += data.len() as u64;
        last_data = Instant::now();
        if received > limit {
            let error = UploadError::TooLarge(limit);
            let _ = sender
                .send(Err(std::io::Error::other(error.to_string())))
                .await;
            return Err(error);
        }
        lease.touch();
        if sender.send(Ok(data)).await.is_err() {
            return Ok(());
        }
    }
}

/// Converts the chunks into the disk's qcow2 (while the lease stays ready), grows it to the
/// disk's size when the VMDK is smaller, and puts it in place of the disk.
fn convert(
    lease: &Lease,
    index: usize,
    chunks: Receiver<std::io::Result<Bytes>>,
) -> Result<Transfer, UploadError> {
    let disk = &lease.disks[index];
    let staging = staging_path(&disk.path);
    let _ = std::fs::remove_file(&staging);
    let mut reader = ChunkReader {
        chunks,
        current: Bytes::new(),
        bytes: 0,
        sha1: ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
    };
    let mut still_leased = |_: u64, _: u64| lease.state() == LeaseState::Ready;
    let summary = import_disk_stream(&mut reader, &staging, disk.capacity, &mut still_leased)?;
    // What follows the end-of-stream marker (padding) is part of the file the client sent.
    let placed = std::io::copy(&mut reader, &mut std::io::sink())
        .map_err(|e| UploadError::Vmdk(ImportVmdkError::Read(e)))
        .and_then(|_| place(&staging, &disk.path, summary.capacity, disk.capacity));
    if placed.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    placed?;
    Ok(Transfer {
        bytes: reader.bytes,
        sha1: hex(reader.sha1.finish()),
    })
}

/// Checks the converted image's size against the disk's, grows it to the disk's size, and
/// renames it over the disk.
fn place(staging: &Path, disk: &Path, vmdk: u64, capacity: u64) -> Result<(), UploadError> {
    if vmdk > capacity {
        return Err(UploadError::Capacity {
            vmdk,
            disk: capacity,
        });
    }
    if vmdk < capacity {
        grow_image(staging, ImageFormat::Qcow2, capacity)
            .map_err(|e| UploadError::Place(e.to_string()))?;
    }
    std::fs::rename(staging, disk).map_err(|e| UploadError::Place(e.to_string()))
}

/// Where the upload of `disk` is converted: beside it, under a name no disk has.
fn staging_path(disk: &Path) -> PathBuf {
    let mut name = disk.file_name().unwrap_or_default().to_os_string();
    name.push(".upload");
    disk.with_file_name(name)
}

/// A `Read` over the chunks the connection hands on, counting and hashing them.
struct ChunkReader {
    chunks: Receiver<std::io::Result<Bytes>>,
    current: Bytes,
    bytes: u64,
    sha1: ring::digest::Context,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        let piece = self.current.split_to(n);
        out[..n].copy_from_slice(&piece);
        self.sha1.update(&piece);
        self.bytes += n as u64;
        Ok(n)
    }
}
