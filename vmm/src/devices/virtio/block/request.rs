//! virtio-blk requests: parsing a descriptor chain into a request (pure, checked against the
//! device's limits) and carrying it out against the image.

use nix::errno::Errno;
use vireo_disk::block::BlockError;
use vireo_vmm_protocol::StallCause;

use super::disk::ConcurrentDisk;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::devices::virtio::queue::{Chain, Descriptor};

/// Bytes per virtio-blk sector.
pub const SECTOR_SIZE: u64 = 512;
/// Largest single data descriptor we accept (advertised as size_max).
pub const SIZE_MAX: u32 = 1 << 20;
/// Length of a GET_ID answer.
pub const ID_BYTES: usize = 20;
/// Bytes of one discard / write-zeroes segment.
const SEGMENT_BYTES: u32 = 16;
const HEADER_BYTES: u32 = 16;

const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_T_FLUSH: u32 = 4;
const VIRTIO_BLK_T_GET_ID: u32 = 8;
const VIRTIO_BLK_T_DISCARD: u32 = 11;
const VIRTIO_BLK_T_WRITE_ZEROES: u32 = 13;

/// Request completion status written to the status byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Done.
    Ok = 0,
    /// The request failed.
    IoErr = 1,
    /// The request type is not supported.
    Unsupported = 2,
}

/// What the driver asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Read sectors into the data buffers.
    In,
    /// Write the data buffers to sectors.
    Out,
    /// Make completed writes durable.
    Flush,
    /// Return the device id string.
    GetId,
    /// Discard the listed ranges.
    Discard,
    /// Zero the listed ranges.
    WriteZeroes,
    /// A type we do not implement.
    Other(u32),
}

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// Request type.
    pub kind: RequestKind,
    /// First sector.
    pub sector: u64,
    /// Data buffers between header and status.
    pub data: Vec<Descriptor>,
    /// Address of the status byte.
    pub status: GuestAddress,
}

/// Why a chain is not a valid request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// No device-writable status byte at the end of the chain; nothing can be reported.
    #[error("the chain has no writable status byte")]
    NoStatus,
    /// The header is missing, short or device-writable.
    #[error("bad request header")]
    BadHeader,
    /// The header could not be read from guest memory.
    #[error("cannot read the request header")]
    HeaderRead,
    /// A data buffer goes the wrong way for the request type.
    #[error("data buffer direction does not match the request type")]
    Direction,
    /// Data length not a whole number of sectors, or a buffer larger than size_max.
    #[error("data length is not sector-aligned or exceeds size_max")]
    Length,
    /// More data buffers than seg_max.
    #[error("more than {0} data segments")]
    TooManySegments(u32),
}

/// Parses `chain` for a device that accepts at most `seg_max` data segments.
pub fn parse(chain: &Chain, mem: &GuestMemoryMmap, seg_max: u32) -> Result<Request, RequestError> {
    let (status, rest) = chain
        .descriptors
        .split_last()
        .ok_or(RequestError::NoStatus)?;
    if !status.writable || status.len < 1 {
        return Err(RequestError::NoStatus);
    }
    let (header, data) = rest.split_first().ok_or(RequestError::BadHeader)?;
    if header.writable || header.len < HEADER_BYTES {
        return Err(RequestError::BadHeader);
    }
    let kind_raw: u32 = mem
        .read_obj(header.addr)
        .map_err(|_| RequestError::HeaderRead)?;
    let sector: u64 = mem
        .read_obj(header.addr.unchecked_add(8))
        .map_err(|_| RequestError::HeaderRead)?;
    let kind = match kind_raw {
        VIRTIO_BLK_T_IN => RequestKind::In,
        VIRTIO_BLK_T_OUT => RequestKind::Out,
        VIRTIO_BLK_T_FLUSH => RequestKind::Flush,
        VIRTIO_BLK_T_GET_ID => RequestKind::GetId,
        VIRTIO_BLK_T_DISCARD => RequestKind::Discard,
        VIRTIO_BLK_T_WRITE_ZEROES => RequestKind::WriteZeroes,
        other => RequestKind::Other(other),
    };
    if data.len() as u32 > seg_max {
        return Err(RequestError::TooManySegments(seg_max));
    }
    let device_writes = matches!(kind, RequestKind::In | RequestKind::GetId);
    if matches!(
        kind,
        RequestKind::In
            | RequestKind::Out
            | RequestKind::GetId
            | RequestKind::Discard
            | RequestKind::WriteZeroes
    ) && data.iter().any(|d| d.writable != device_writes)
    {
        return Err(RequestError::Direction);
    }
    let sector_aligned = |d: &Descriptor| u64::from(d.len) % SECTOR_SIZE == 0 && d.len <= SIZE_MAX;
    let segment_aligned = |d: &Descriptor| d.len.is_multiple_of(SEGMENT_BYTES) && d.len <= SIZE_MAX;
    let lengths_ok = match kind {
        RequestKind::In | RequestKind::Out => data.iter().all(sector_aligned),
        RequestKind::Discard | RequestKind::WriteZeroes => data.iter().all(segment_aligned),
        _ => true,
    };
    if !lengths_ok {
        return Err(RequestError::Length);
    }
    Ok(Request {
        kind,
        sector,
        data: data.to_vec(),
        status: status.addr,
    })
}

/// A request the host had no space to carry out (ENOSPC, EDQUOT): it gets no status, so that
/// it can be retried once there is space (see `io_stall`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfSpace(pub StallCause);

/// Carries out `request`; returns its status and the bytes written into guest buffers
/// (the status byte included), or that it must wait for space.
pub fn execute(
    request: &Request,
    disk: &dyn ConcurrentDisk,
    mem: &GuestMemoryMmap,
    id: &[u8; ID_BYTES],
) -> Result<(Status, u32), OutOfSpace> {
    let result = match request.kind {
        RequestKind::In => read_sectors(request, mem, |buf, offset| {
            disk.read_at(buf, offset).map(|()| true)
        })
        .map(|written| written.unwrap_or(0)),
        RequestKind::Out => write_sectors(request, disk, mem).map(|_| 0),
        RequestKind::Flush => disk.flush().map(|_| 0).map_err(Failure::from),
        RequestKind::GetId => get_id(request, mem, id),
        RequestKind::Discard | RequestKind::WriteZeroes => ranges(request, disk, mem).map(|_| 0),
        RequestKind::Other(_) => Err(Failure::Unsupported),
    };
    reply(result)
}

/// Like `execute`, but a read whose data would have to come from storage rather than the host's
/// page cache is not carried out: `None` (the guest buffers may be partly filled; nothing else
/// changed).
pub fn execute_without_waiting(
    request: &Request,
    disk: &dyn ConcurrentDisk,
    mem: &GuestMemoryMmap,
    id: &[u8; ID_BYTES],
) -> Option<Result<(Status, u32), OutOfSpace>> {
    if request.kind != RequestKind::In {
        return Some(execute(request, disk, mem, id));
    }
    let result = read_sectors(request, mem, |buf, offset| disk.read_cached(buf, offset));
    result.transpose().map(reply)
}

/// The status of a request that ended with `result`, and the bytes written into guest buffers
/// (the status byte included); none when it ran out of host space.
fn reply(result: Result<u32, Failure>) -> Result<(Status, u32), OutOfSpace> {
    match result {
        Ok(written) => Ok((Status::Ok, written + 1)),
        Err(Failure::Unsupported) => Ok((Status::Unsupported, 1)),
        Err(Failure::Io) => Ok((Status::IoErr, 1)),
        Err(Failure::Space(cause)) => Err(OutOfSpace(cause)),
    }
}

/// Why a request failed: the disk or guest memory refused (IOERR), an unknown type, or the
/// host's file system is out of space for the image.
enum Failure {
    Io,
    Unsupported,
    Space(StallCause),
}

impl From<BlockError> for Failure {
    fn from(error: BlockError) -> Self {
        let BlockError::Io { source, .. } = &error else {
            return Failure::Io;
        };
        match source.raw_os_error().and_then(out_of_space) {
            Some(OutOfSpace(cause)) => Failure::Space(cause),
            None => Failure::Io,
        }
    }
}

/// Whether the host's error `errno` means it has no space for the image (the request is held).
pub fn out_of_space(errno: i32) -> Option<OutOfSpace> {
    match Errno::from_raw(errno) {
        Errno::ENOSPC => Some(OutOfSpace(StallCause::NoSpace)),
        Errno::EDQUOT => Some(OutOfSpace(StallCause::QuotaExceeded)),
        _ => None,
    }
}

fn sector_offset(sector: u64) -> Result<u64, Failure> {
    sector.checked_mul(SECTOR_SIZE).ok_or(Failure::Io)
}

/// Runs `io` on the guest buffer of `desc` in place when it lies within one memory region (no
/// copy needed); `None` when it does not, and the caller goes through a bounce buffer.
fn in_guest_buffer<T>(
    mem: &GuestMemoryMmap,
    desc: &Descriptor,
    io: impl FnOnce(&mut [u8]) -> T,
) -> Option<T> {
    let len = desc.len as usize;
    let slice = mem.get_slice(desc.addr, len).ok()?;
    let guard = slice.ptr_guard_mut();
    // SAFETY: `slice` lies inside one mapped region of guest memory, mapped for as long as `mem`
    // lives, and the borrow ends with `io`. The guest may change these bytes meanwhile, as with
    // DMA on real hardware; the disk code treats them as plain bytes and never relies on them
    // staying put, so the worst outcome is the data the guest asked for.
    let buf = unsafe { std::slice::from_raw_parts_mut(guard.as_ptr(), len) };
    Some(io(buf))
}

/// Reads the request's sectors into its buffers with `read`, which may decline (false): then
/// `None`. Returns the bytes read.
fn read_sectors(
    request: &Request,
    mem: &GuestMemoryMmap,
    mut read: impl FnMut(&mut [u8], u64) -> Result<bool, BlockError>,
) -> Result<Option<u32>, Failure> {
    let mut offset = sector_offset(request.sector)?;
    let mut written = 0u32;
    for desc in &request.data {
        let done = match in_guest_buffer(mem, desc, |buf| read(buf, offset)) {
            Some(result) => result?,
            None => {
                let mut bounce = vec![0; desc.len as usize];
                let done = read(&mut bounce, offset)?;
                if done {
                    mem.write_slice(&bounce, desc.addr)
                        .map_err(|_| Failure::Io)?;
                }
                done
            }
        };
        if !done {
            return Ok(None);
        }
        offset += u64::from(desc.len);
        written += desc.len;
    }
    Ok(Some(written))
}

fn write_sectors(
    request: &Request,
    disk: &dyn ConcurrentDisk,
    mem: &GuestMemoryMmap,
) -> Result<(), Failure> {
    let mut offset = sector_offset(request.sector)?;
    for desc in &request.data {
        match in_guest_buffer(mem, desc, |buf| disk.write_at(buf, offset)) {
            Some(result) => result?,
            None => {
                let mut bounce = vec![0; desc.len as usize];
                mem.read_slice(&mut bounce, desc.addr)
                    .map_err(|_| Failure::Io)?;
                disk.write_at(&bounce, offset)?;
            }
        }
        offset += u64::from(desc.len);
    }
    Ok(())
}

fn get_id(request: &Request, mem: &GuestMemoryMmap, id: &[u8; ID_BYTES]) -> Result<u32, Failure> {
    let desc = request.data.first().ok_or(Failure::Io)?;
    let len = (desc.len as usize).min(ID_BYTES);
    mem.write_slice(&id[..len], desc.addr)
        .map_err(|_| Failure::Io)?;
    Ok(len as u32)
}

/// Discard or write-zeroes: each data buffer holds segments {sector u64, num_sectors u32, flags u32}.
fn ranges(
    request: &Request,
    disk: &dyn ConcurrentDisk,
    mem: &GuestMemoryMmap,
) -> Result<(), Failure> {
    for desc in &request.data {
        for i in 0..desc.len / SEGMENT_BYTES {
            let at = desc.addr.unchecked_add(u64::from(i * SEGMENT_BYTES));
            let sector: u64 = mem.read_obj(at).map_err(|_| Failure::Io)?;
            let count: u32 = mem.read_obj(at.unchecked_add(8)).map_err(|_| Failure::Io)?;
            let offset = sector_offset(sector)?;
            let len = u64::from(count) * SECTOR_SIZE;
            match request.kind {
                RequestKind::Discard => disk.discard(offset, len),
                _ => disk.write_zeroes(offset, len),
            }
            .map_err(Failure::from)?;
        }
    }
    Ok(())
}
