//! Many requests in flight on one disk: `SharedDisk` lets several threads issue requests at
//! once. Requests the format can serve with plain positional I/O on its data file (a route),
//! and writes into freshly allocated storage (prepared, then committed), do their data I/O
//! outside the disk's lock; everything else (zeroing, discard, flush, copy-on-write that spans
//! clusters or races another) runs alone, after in-flight requests drain.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::block::{BlockDevice, BlockError};
use crate::direct::{Alignment, FileIo};
use crate::open::{probe_format, ImageFormat, OpenError};
use crate::qcow2::{Qcow2Image, Qcow2Options};
use crate::raw::RawDisk;

/// Bytes of the data file: `len` bytes at byte `host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostExtent {
    /// Offset in the data file.
    pub host: u64,
    /// Length in bytes.
    pub len: usize,
}

/// One stretch of a routed read, in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// Read from the data file (past its end: zeros).
    File(HostExtent),
    /// Reads as zeros.
    Zeros(usize),
}

/// A write into storage nothing references yet, prepared under the device lock: `data` (the
/// request merged into the content it replaces) is written at `host` outside the lock, then
/// `RoutableDevice::commit_write` maps it. Until then the range reads as before.
#[derive(Debug)]
pub struct PreparedWrite {
    /// Where `data` goes in the data file.
    pub host: u64,
    /// The bytes to write there.
    pub data: Vec<u8>,
    /// What the device needs to map it (for qcow2: the guest cluster).
    pub key: u64,
}

/// A block device that can tell where simple requests live in its data file.
pub trait RoutableDevice: BlockDevice {
    /// A second handle to the file holding the device's data.
    fn data_file(&self) -> std::io::Result<File>;
    /// The data file's path, for messages.
    fn data_path(&self) -> &Path;
    /// Where `[offset, offset + len)` can be read with plain file I/O; `None` when the read
    /// needs the device itself (backing files, compressed data).
    fn read_route(&mut self, offset: u64, len: u64) -> Result<Option<Vec<Segment>>, BlockError>;
    /// Where `[offset, offset + len)` can be overwritten in place without changing metadata;
    /// `None` when the write needs the device (allocation, copy-on-write). A route records
    /// the write (e.g. in dirty bitmaps) as if it had been performed.
    fn write_route(&mut self, offset: u64, len: u64)
        -> Result<Option<Vec<HostExtent>>, BlockError>;
    /// Prepares a write that needs fresh storage (e.g. copy-on-write of one cluster) so that
    /// its data can be written outside the device lock; `None` when the write needs the
    /// device itself. Devices without allocation never prepare.
    fn prepare_write(
        &mut self,
        _offset: u64,
        _buf: &[u8],
    ) -> Result<Option<PreparedWrite>, BlockError> {
        Ok(None)
    }
    /// Maps a prepared write once `written` says how writing its data went; on failure its
    /// storage is released and the error returned.
    fn commit_write(
        &mut self,
        _write: PreparedWrite,
        written: Result<(), BlockError>,
    ) -> Result<(), BlockError> {
        written
    }
}

/// A disk that several threads may use at once.
///
/// Routed and prepared requests hold the gate shared while their file I/O runs; every other
/// request holds it exclusively. Host storage a guest range maps to is only replaced by
/// exclusive requests, so a routed request never touches storage that stopped belonging to
/// its range; a prepared write's storage is referenced by nothing until it is committed.
pub struct SharedDisk {
    device: Mutex<Box<dyn RoutableDevice>>,
    gate: Arc<Gate>,
    writer: Mutex<()>,
    data: FileIo,
    path: PathBuf,
    capacity: u64,
}

impl SharedDisk {
    /// Wraps an open device.
    pub fn new(device: Box<dyn RoutableDevice>) -> Result<Self, OpenError> {
        let data = device.data_file().map_err(|source| OpenError::Io {
            path: device.data_path().to_path_buf(),
            source,
        })?;
        Ok(Self {
            data: FileIo::new(data),
            path: device.data_path().to_path_buf(),
            capacity: device.capacity(),
            gate: Arc::default(),
            writer: Mutex::new(()),
            device: Mutex::new(device),
        })
    }

    /// Opens a raw or qcow2 image (chosen by magic) with default options.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, OpenError> {
        Self::open_as(path, probe_format(path)?, read_only)
    }

    /// Opens the image at `path` as `format` (a raw disk is never probed).
    pub fn open_as(path: &Path, format: ImageFormat, read_only: bool) -> Result<Self, OpenError> {
        let file = crate::open::open_image_file(path, read_only)?;
        Self::from_file_as(file, path, format, read_only)
    }

    /// Opens the image already open as `file` (found at `path`) as `format`; a qcow2 image's
    /// backing chain comes from the installed backing opener.
    pub fn from_file_as(
        file: std::fs::File,
        path: &Path,
        format: ImageFormat,
        read_only: bool,
    ) -> Result<Self, OpenError> {
        let device: Box<dyn RoutableDevice> = match format {
            ImageFormat::Raw => Box::new(RawDisk::from_file(file, path, read_only)?),
            ImageFormat::Qcow2 => {
                let options = Qcow2Options {
                    read_only,
                    ..Qcow2Options::default()
                };
                Box::new(Qcow2Image::open_file(file, path, &options)?)
            }
        };
        Self::new(device)
    }

    /// Size of the disk in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Fills `buf` with the disk's contents at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        {
            let _shared = self.gate.shared(true);
            // the device lock is released before the I/O: only the shared gate stays held
            let route = self.device().read_route(offset, buf.len() as u64)?;
            if let Some(route) = route {
                self.read_route(&route, buf, FileIo::read_at)?;
                return Ok(());
            }
        }
        self.exclusive(|device| device.read_at(buf, offset))
    }

    /// Like `read_at`, but only from the host's page cache: `Ok(false)` (and `buf` partly
    /// filled) when the read would wait for storage or needs the disk to itself, so the caller
    /// can hand it to a thread that may block.
    pub fn read_cached(&self, buf: &mut [u8], offset: u64) -> Result<bool, BlockError> {
        if self.data.direct().is_some() {
            return Ok(false); // no page cache to read from
        }
        let _shared = self.gate.shared(true);
        match self.device().read_route(offset, buf.len() as u64)? {
            Some(route) => self.read_route(&route, buf, |data, buf, at| {
                read_cached_at(data.file(), buf, at)
            }),
            None => Ok(false),
        }
    }

    /// Writes `buf` at `offset`; durable after `flush`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BlockError> {
        {
            let _shared = self.gate.shared(true);
            let route = self.device().write_route(offset, buf.len() as u64)?;
            if let Some(route) = route {
                return self.write_route(&route, buf);
            }
            let prepared = self.device().prepare_write(offset, buf)?;
            if let Some(prepared) = prepared {
                let extent = HostExtent {
                    host: prepared.host,
                    len: prepared.data.len(),
                };
                let written = self.write_route(&[extent], &prepared.data);
                return self.device().commit_write(prepared, written);
            }
        }
        self.exclusive(|device| device.write_at(buf, offset))
    }

    /// Makes every completed write durable.
    pub fn flush(&self) -> Result<(), BlockError> {
        self.exclusive(|device| device.flush())
    }

    /// Discards the range (it then reads as zeros).
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.exclusive(|device| device.discard(offset, len))
    }

    /// Makes the range read as zeros.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.exclusive(|device| device.write_zeroes(offset, len))
    }

    /// Where `[offset, offset + len)` can be read with plain I/O on [`SharedDisk::data_file`],
    /// for a caller that carries the I/O out itself (e.g. through io_uring); `None` when the read
    /// needs the disk itself. The route stays valid while the returned permit lives: a caller
    /// holding permits must drop them before any other request on this disk, which may wait
    /// for them.
    pub fn plan_read(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Option<Planned<Vec<Segment>>>, BlockError> {
        let permit = self.gate.shared(false);
        let route = self.device().read_route(offset, len)?;
        Ok(route.map(|route| Planned { route, permit }))
    }

    /// Like [`SharedDisk::plan_read`], for an overwrite in place (recorded as done, as a routed
    /// write is); `None` when the write needs the disk (allocation, copy-on-write).
    pub fn plan_write(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Option<Planned<Vec<HostExtent>>>, BlockError> {
        let permit = self.gate.shared(false);
        let route = self.device().write_route(offset, len)?;
        Ok(route.map(|route| Planned { route, permit }))
    }

    /// The file routes point into.
    pub fn data_file(&self) -> &File {
        self.data.file()
    }

    /// The alignment I/O on the data file needs when it is open with `O_DIRECT`.
    pub fn direct(&self) -> Option<Alignment> {
        self.data.direct()
    }

    /// The wrapped device, e.g. to close it.
    pub fn into_inner(self) -> Box<dyn RoutableDevice> {
        self.device.into_inner().expect("disk lock poisoned")
    }

    fn device(&self) -> MutexGuard<'_, Box<dyn RoutableDevice>> {
        self.device.lock().expect("disk lock poisoned")
    }

    /// Runs `op` on the device once no routed request is in flight.
    fn exclusive<T>(
        &self,
        op: impl FnOnce(&mut dyn RoutableDevice) -> Result<T, BlockError>,
    ) -> Result<T, BlockError> {
        let _exclusive = self.gate.exclusive();
        op(self.device().as_mut())
    }

    /// Reads `route` into `buf`, each file piece with `read_once` (one positional read);
    /// false as soon as a read would block (only a non-blocking `read_once` says so).
    fn read_route(
        &self,
        route: &[Segment],
        buf: &mut [u8],
        read_once: impl Fn(&FileIo, &mut [u8], u64) -> std::io::Result<usize>,
    ) -> Result<bool, BlockError> {
        let mut at = 0;
        for segment in route {
            match *segment {
                Segment::File(extent) => {
                    let piece = &mut buf[at..at + extent.len];
                    if !self.read_zero_filled(piece, extent.host, &read_once)? {
                        return Ok(false);
                    }
                    at += extent.len;
                }
                Segment::Zeros(len) => {
                    buf[at..at + len].fill(0);
                    at += len;
                }
            }
        }
        Ok(true)
    }

    fn write_route(&self, route: &[HostExtent], buf: &[u8]) -> Result<(), BlockError> {
        // Buffered writes to one file serialize on its inode lock in the kernel anyway; taking
        // them one at a time here spares the threads the kernel's lock spinning. Direct writes
        // run in parallel.
        let _writer = match self.data.direct() {
            None => Some(self.writer.lock().expect("disk writer lock poisoned")),
            Some(_) => None,
        };
        let mut at = 0;
        for extent in route {
            self.data
                .write_all_at(&buf[at..at + extent.len], extent.host)
                .map_err(|e| self.io_err(e))?;
            at += extent.len;
        }
        Ok(())
    }

    /// Fills `buf` from the data file at `host` with `read_once`, zeros past its end; false if
    /// a read would block.
    fn read_zero_filled(
        &self,
        buf: &mut [u8],
        host: u64,
        read_once: impl Fn(&FileIo, &mut [u8], u64) -> std::io::Result<usize>,
    ) -> Result<bool, BlockError> {
        let mut done = 0;
        while done < buf.len() {
            match read_once(&self.data, &mut buf[done..], host + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(self.io_err(e)),
            }
        }
        Ok(true)
    }

    fn io_err(&self, source: std::io::Error) -> BlockError {
        BlockError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// A route planned by [`SharedDisk::plan_read`] or [`SharedDisk::plan_write`] and the
/// permission to use it.
pub struct Planned<R> {
    /// Where the request's bytes are in the data file.
    pub route: R,
    /// Keeps the route valid until dropped.
    pub permit: Permit,
}

/// Who holds a disk's storage map: any number of routed requests, or one request that may
/// change it. Routed requests yield to waiting exclusive ones, except planned ones (their
/// caller may already hold permits and would wait for itself).
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    shared: usize,
    exclusive: bool,
    waiting: usize,
}

/// Shared use of a disk's storage map: while it lives, no request replaces the storage a
/// planned route points at.
pub struct Permit(Arc<Gate>);

/// Exclusive use of the gate, until dropped.
struct Exclusive<'a>(&'a Gate);

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for shared use; behind waiting exclusive requests when `yield_to_exclusive`.
    fn shared(self: &Arc<Self>, yield_to_exclusive: bool) -> Permit {
        let mut state = self.lock();
        while state.exclusive || (yield_to_exclusive && state.waiting > 0) {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.shared += 1;
        Permit(self.clone())
    }

    /// Waits until nothing else holds the gate.
    fn exclusive(&self) -> Exclusive<'_> {
        let mut state = self.lock();
        state.waiting += 1;
        while state.exclusive || state.shared > 0 {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.waiting -= 1;
        state.exclusive = true;
        Exclusive(self)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.shared -= 1;
        // Only exclusive requests wait for the last permit (a wake-up is a system call).
        if state.shared == 0 && state.waiting > 0 {
            self.0.changed.notify_all();
        }
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.0.lock().exclusive = false;
        self.0.changed.notify_all();
    }
}

/// One positional read that takes only what is in the page cache (preadv2 with RWF_NOWAIT);
/// WouldBlock when the data would have to come from storage or the file system cannot tell.
fn read_cached_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let at =
        i64::try_from(at).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // libc's: nix has no preadv2 (RWF_NOWAIT is the point of this read).
    // SAFETY: one iovec covering `buf`, which we own mutably for the call.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
    if n >= 0 {
        return Ok(n as usize);
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error().map(nix::errno::Errno::from_raw) {
        Some(nix::errno::Errno::EOPNOTSUPP) => {
            Err(std::io::Error::from(std::io::ErrorKind::WouldBlock))
        }
        _ => Err(error),
    }
}

/// Appends `segment` to `route`, merging it with the last one when they are contiguous.
pub fn push_segment(route: &mut Vec<Segment>, segment: Segment) {
    match (route.last_mut(), segment) {
        (Some(Segment::File(last)), Segment::File(next))
            if last.host + last.len as u64 == next.host =>
        {
            last.len += next.len
        }
        (Some(Segment::Zeros(len)), Segment::Zeros(n)) => *len += n,
        _ => route.push(segment),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_reads_match_plain_reads_and_decline_rather_than_wait() {
        let path = std::env::temp_dir().join(format!("vireo-cached-{}.raw", std::process::id()));
        let data: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let disk = SharedDisk::open(&path, true).unwrap();
        let mut cached = vec![0u8; 64 << 10];
        assert!(
            disk.read_cached(&mut cached, 128 << 10).unwrap(),
            "just written: cached"
        );
        assert_eq!(cached, &data[128 << 10..192 << 10]);
        // Evicted (where the file system lets us): declined, or still the right bytes.
        let file = std::fs::File::open(&path).unwrap();
        file.sync_all().unwrap();
        let dont_need = nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED;
        let _ = nix::fcntl::posix_fadvise(&file, 0, 0, dont_need);
        let mut again = vec![0u8; 64 << 10];
        if disk.read_cached(&mut again, 512 << 10).unwrap() {
            assert_eq!(again, &data[512 << 10..576 << 10]);
        }
        let mut plain = vec![0u8; 64 << 10];
        disk.read_at(&mut plain, 512 << 10).unwrap();
        assert_eq!(plain, &data[512 << 10..576 << 10]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn contiguous_segments_merge() {
        let file = |host, len| Segment::File(HostExtent { host, len });
        let mut route = Vec::new();
        for segment in [
            file(0, 512),
            file(512, 512),
            file(4096, 512),
            Segment::Zeros(5),
            Segment::Zeros(7),
        ] {
            push_segment(&mut route, segment);
        }
        assert_eq!(
            route,
            vec![file(0, 1024), file(4096, 512), Segment::Zeros(12)]
        );
    }
}
