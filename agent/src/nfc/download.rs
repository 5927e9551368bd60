//! `GET /nfc/<lease>/<disk-N.vmdk>`: an export lease's disk sent as a streamOptimized VMDK
//! generated on the fly from the disk's qcow2 chain (no temporary copy), with its SHA-1
//! recorded for the manifest once sent whole.

use std::io::Write;
use std::sync::Arc;

use hyper::body::Bytes;
use hyper::header::CONTENT_TYPE;
use hyper::{Response, StatusCode};
use tokio::sync::mpsc::Sender;
use vireo_disk::source::CopySource;
use vireo_disk::vmdk::write_stream_optimized;

use super::{hex, record_download, Lease, Transfer};
use crate::host::Host;
use crate::http_files::{channel_body, Body};

/// Bytes per chunk handed to the connection.
const CHUNK_BYTES: usize = 256 << 10;
/// Chunks generated ahead of a slow client.
const CHUNKS_AHEAD: usize = 4;

/// The response streaming disk `index` of the export lease `lease`.
pub fn send(host: &Arc<Host>, lease: Arc<Lease>, index: usize) -> Response<Body> {
    let (sender, chunks) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    let host = host.clone();
    tokio::task::spawn_blocking(move || generate(&host, &lease, index, sender));
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(channel_body(chunks))
        .expect("valid response parts")
}

/// Writes disk `index` of `lease` into `sender` as a streamOptimized VMDK; records its size
/// when it was sent whole, and ends the body with an error otherwise.
fn generate(host: &Host, lease: &Lease, index: usize, sender: Sender<std::io::Result<Bytes>>) {
    let disk = &lease.disks[index];
    let mut out = ChannelWriter {
        sender: sender.clone(),
        buffer: Vec::with_capacity(CHUNK_BYTES),
        sha1: ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
    };
    let written = CopySource::open_chain(&disk.path)
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
        Ok(bytes) => {
            let sha1 = hex(out.sha1.finish());
            record_download(host, lease, index, Transfer { bytes, sha1 });
        }
        Err(why) => {
            tracing::warn!(lease = %lease.moref.id, disk = %disk.target_id, "export stopped: {why}");
            let _ = sender.blocking_send(Err(std::io::Error::other(why)));
        }
    }
}

/// A `Write` that hands full chunks to the response body, waiting while the client is slow,
/// and hashes what it sends.
struct ChannelWriter {
    sender: Sender<std::io::Result<Bytes>>,
    buffer: Vec<u8>,
    sha1: ring::digest::Context,
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
        self.sha1.update(data);
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
