//! The block device's io_uring: reads and writes whose bytes lie at known places of the image's
//! data file (raw disks, allocated qcow2 clusters) are queued as `readv`/`writev` straight
//! between the file and guest memory, each request submitted as soon as it is taken;
//! completions raise an eventfd the device worker watches while it sleeps. Guest buffers that direct I/O
//! (cache=none) cannot use as they are go through aligned bounce buffers.
//!
//! The ring is created disabled, restricted to the two opcodes it uses (`READV`, `WRITEV`, no
//! SQE flags, no further registrations) and only then enabled: io_uring operations bypass
//! seccomp, so a compromised worker can do nothing through the ring that it could not do with
//! `preadv`/`pwritev` on its own descriptors. When io_uring is unavailable (kernel, sysctl
//! `io_uring_disabled`, a container's filter) the device uses its I/O threads instead.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::register::Restriction;
use io_uring::{opcode, types, IoUring};
use vireo_disk::direct::{AlignedBuf, Alignment};
use vireo_disk::shared::{Permit, Segment};
use vireo_disk::SharedDisk;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::request::{Request, RequestKind, SECTOR_SIZE};

/// Submission queue entries (the queue holds 256 requests; most need one entry each).
const ENTRIES: u32 = 512;

/// Operations one request may have (an entry's user data holds its slot and operation index).
const MAX_OPS: usize = 1 << OP_BITS;
const OP_BITS: u32 = 16;

/// How a request given to the ring ended, once all its I/O completed.
pub enum Outcome {
    /// Done; the bytes written into guest buffers (the status byte not counted).
    Done(u32),
    /// The file refused (`errno`).
    Failed(i32),
}

/// A ring with restrictions in force, and the requests it carries.
pub struct Ring {
    ring: IoUring,
    completions: EventFd,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    /// Entries submitted (or queued) and not yet completed.
    pending: usize,
}

// SAFETY: the raw pointers an in-flight request holds point into guest memory (mapped for as
// long as the device's memory handle, which outlives the ring's users) or into the request's
// own bounce buffers; the ring is used by one thread at a time.
unsafe impl Send for Ring {}

/// One request whose I/O is in the ring.
struct InFlight {
    head: u16,
    request: Request,
    ops: Vec<Op>,
    /// Operations not completed yet.
    left: usize,
    /// The first error an operation reported.
    errno: Option<i32>,
    /// Guest bytes read (reads) — the request's whole data length.
    len: u32,
    /// The route stays valid until the request completes.
    _permit: Permit,
}

/// One `readv`/`writev`: file range `[host, host + len)` to or from guest pieces.
struct Op {
    host: u64,
    pieces: Vec<libc::iovec>,
    /// Where the I/O goes when the guest pieces do not suit direct I/O.
    bounce: Option<AlignedBuf>,
    /// The iovecs handed to the kernel (the pieces, or the bounce buffer).
    iovecs: Vec<libc::iovec>,
}

/// Why a request is not for the ring (it runs on the worker the ordinary way).
pub struct NotForRing;

impl Ring {
    /// A restricted ring whose completions raise [`Ring::completions`]; the error when the
    /// kernel offers none.
    pub fn new() -> std::io::Result<Ring> {
        let ring = IoUring::builder().setup_r_disabled().build(ENTRIES)?;
        let completions = EventFd::new(EFD_NONBLOCK)?;
        let submitter = ring.submitter();
        submitter.register_eventfd(completions.as_raw_fd())?;
        submitter.register_restrictions(&mut [
            Restriction::sqe_op(opcode::Readv::CODE),
            Restriction::sqe_op(opcode::Writev::CODE),
            Restriction::sqe_flags_allowed(0),
        ])?;
        submitter.register_enable_rings()?;
        Ok(Ring {
            ring,
            completions,
            slots: Vec::new(),
            free: Vec::new(),
            pending: 0,
        })
    }

    /// The eventfd completions raise.
    pub fn completions(&self) -> RawFd {
        self.completions.as_raw_fd()
    }

    /// Whether I/O is in flight.
    pub fn busy(&self) -> bool {
        self.pending > 0
    }

    /// Submits a read or write of `disk` at once, one system call for each request: the
    /// storage starts on it while the worker prepares the next (a kick's requests submitted
    /// together were held back until the last was prepared, with the storage idle: random
    /// 4 KiB reads at queue depth 32 went from 68k to 78k IOPS here). `NotForRing` when the
    /// request is something else, needs the disk itself (allocation, backing files), has no
    /// I/O (reads of zeros only) or cannot be done as direct I/O with bounce buffers alone.
    pub fn queue(
        &mut self,
        head: u16,
        request: Request,
        disk: &SharedDisk,
        mem: &GuestMemoryMmap,
    ) -> Result<(), (Request, NotForRing)> {
        match self.plan(&request, disk, mem) {
            Some((ops, zeros, permit)) => {
                let len = request.data.iter().map(|d| d.len).sum();
                for piece in zeros.iter().flatten() {
                    // SAFETY: a piece of guest memory checked by `guest_pieces`, mapped while
                    // the memory handle lives.
                    unsafe { std::ptr::write_bytes(piece.iov_base.cast::<u8>(), 0, piece.iov_len) };
                }
                self.push(
                    InFlight {
                        head,
                        request,
                        left: ops.len(),
                        ops,
                        errno: None,
                        len,
                        _permit: permit,
                    },
                    disk.data_file().as_raw_fd(),
                );
                self.submit();
                Ok(())
            }
            None => Err((request, NotForRing)),
        }
    }

    /// The operations of `request` (and the guest pieces that read as zeros), or `None` (none
    /// at all, or too many).
    #[allow(clippy::type_complexity)]
    fn plan(
        &self,
        request: &Request,
        disk: &SharedDisk,
        mem: &GuestMemoryMmap,
    ) -> Option<(Vec<Op>, Vec<Vec<libc::iovec>>, Permit)> {
        let offset = request.sector.checked_mul(SECTOR_SIZE)?;
        let len: u64 = request.data.iter().map(|d| u64::from(d.len)).sum();
        let (route, permit) = match request.kind {
            RequestKind::In => {
                let planned = disk.plan_read(offset, len).ok()??;
                (planned.route, planned.permit)
            }
            RequestKind::Out => {
                let planned = disk.plan_write(offset, len).ok()??;
                let route = planned.route.into_iter().map(Segment::File).collect();
                (route, planned.permit)
            }
            _ => return None,
        };
        let mut pieces = VecDeque::from(guest_pieces(request, mem)?);
        let (mut ops, mut zeros) = (Vec::new(), Vec::new());
        for segment in route {
            let (extent_len, host) = match segment {
                Segment::File(extent) => (extent.len, Some(extent.host)),
                Segment::Zeros(len) => (len, None),
            };
            let taken = take(&mut pieces, extent_len)?;
            match host {
                Some(host) => ops.push(Op::new(host, taken, disk.direct(), request.kind)?),
                None => zeros.push(taken),
            }
        }
        // A request with no I/O (all zeros) would never complete in the ring.
        (!ops.is_empty() && ops.len() <= MAX_OPS).then_some((ops, zeros, permit))
    }

    /// Puts `flight`'s operations on the submission queue.
    fn push(&mut self, mut flight: InFlight, fd: RawFd) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let write = flight.request.kind == RequestKind::Out;
        for (index, op) in flight.ops.iter_mut().enumerate() {
            let (iovecs, count) = (op.iovecs.as_ptr(), op.iovecs.len() as u32);
            let entry = if write {
                opcode::Writev::new(types::Fd(fd), iovecs, count)
                    .offset(op.host)
                    .build()
            } else {
                opcode::Readv::new(types::Fd(fd), iovecs, count)
                    .offset(op.host)
                    .build()
            }
            .user_data(((slot as u64) << OP_BITS) | index as u64);
            // SAFETY: the iovecs and the buffers they point at live in `flight`, kept in
            // `slots` until the entry's completion is reaped.
            while unsafe { self.ring.submission().push(&entry) }.is_err() {
                // Full: hand the queued entries to the kernel to make room.
                let _ = self.ring.submit();
            }
            self.pending += 1;
        }
        self.slots[slot] = Some(flight);
    }

    /// Hands every queued entry to the kernel (one system call).
    fn submit(&mut self) {
        if let Err(e) = self.ring.submit() {
            eprintln!("vireo-vmm: io_uring submit: {e}");
        }
    }

    /// Whether completions wait to be reaped.
    pub fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Stops completions from raising the eventfd, while the worker is awake and reaps them
    /// itself (each raise would cost the kernel a wake-up and the worker a pass for nothing).
    pub fn mute(&mut self) {
        self.ring.completion().disable_eventfd();
    }

    /// Lets completions raise the eventfd again, before the worker sleeps; whether completions
    /// came in while it was muted (they raised nothing: the worker must reap them first).
    pub fn unmute(&mut self) -> bool {
        self.ring.completion().enable_eventfd();
        // The kernel reads the flag after it posts a completion: order the flag before our
        // look at the queue, so that a completion is either seen here or raises the eventfd.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.has_completions()
    }

    /// Resets the eventfd completions raise, before reaping what raised it (completions
    /// reaped without it only cost a pass that finds nothing).
    pub fn acknowledge(&self) {
        let _ = self.completions.read();
    }

    /// Requests whose I/O all completed, with how they ended; waits for one completion at
    /// least when `wait`.
    pub fn reap(&mut self, wait: bool) -> Vec<(u16, Request, Outcome)> {
        if wait && self.pending > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                eprintln!("vireo-vmm: io_uring wait: {e}");
            }
        }
        let mut done = Vec::new();
        let completed: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|entry| (entry.user_data(), entry.result()))
            .collect();
        for (data, result) in completed {
            self.pending -= 1;
            let (slot, op) = ((data >> OP_BITS) as usize, (data as usize) & (MAX_OPS - 1));
            if let Some(finished) = self.complete(slot, op, result) {
                done.push(finished);
            }
        }
        done
    }

    /// Records the `result` of operation `op` of the request in `slot`; the request's outcome
    /// once its last operation is in. A read cut short by the end of the file reads zeros
    /// beyond it; a short write is an error.
    fn complete(&mut self, slot: usize, op: usize, result: i32) -> Option<(u16, Request, Outcome)> {
        let flight = self.slots.get_mut(slot)?.as_mut()?;
        flight.left -= 1;
        let reading = flight.request.kind == RequestKind::In;
        let op = flight.ops.get(op)?;
        let expected: usize = op.pieces.iter().map(|p| p.iov_len).sum();
        let error = match usize::try_from(result) {
            Err(_) => Some(-result),
            Ok(done) if done < expected && reading => {
                if op.bounce.is_none() {
                    zero_after(&op.pieces, done);
                }
                None
            }
            Ok(done) if done < expected => Some(libc::EIO),
            Ok(_) => None,
        };
        if let Some(errno) = error {
            flight.errno.get_or_insert(errno);
        }
        if flight.left > 0 {
            return None;
        }
        let flight = self.slots[slot].take()?;
        self.free.push(slot);
        Some(flight.finish())
    }

    /// Waits for every operation in flight; the requests they finish.
    pub fn drain(&mut self) -> Vec<(u16, Request, Outcome)> {
        let mut done = Vec::new();
        while self.pending > 0 {
            done.extend(self.reap(true));
        }
        done
    }
}

impl InFlight {
    /// Copies bounced reads into guest memory; the outcome.
    fn finish(self) -> (u16, Request, Outcome) {
        if let Some(errno) = self.errno {
            return (self.head, self.request, Outcome::Failed(errno));
        }
        if self.request.kind == RequestKind::In {
            for op in &self.ops {
                if let Some(bounce) = &op.bounce {
                    scatter(bounce, &op.pieces);
                }
            }
        }
        let len = if self.request.kind == RequestKind::In {
            self.len
        } else {
            0
        };
        (self.head, self.request, Outcome::Done(len))
    }
}

impl Op {
    /// The operation straight on the guest's `pieces`.
    fn unbounced(host: u64, pieces: Vec<libc::iovec>) -> Op {
        let iovecs = pieces.clone();
        Op {
            host,
            pieces,
            bounce: None,
            iovecs,
        }
    }

    /// The operation at `host` on guest `pieces`, bounced when direct I/O (`direct`) cannot
    /// take them as they are; `None` when even a bounce buffer would not be aligned.
    fn new(
        host: u64,
        pieces: Vec<libc::iovec>,
        direct: Option<Alignment>,
        kind: RequestKind,
    ) -> Option<Op> {
        let len: usize = pieces.iter().map(|p| p.iov_len).sum();
        let Some(align) = direct else {
            return Some(Op::unbounced(host, pieces));
        };
        if !host.is_multiple_of(align.offset as u64) || !len.is_multiple_of(align.offset) {
            return None;
        }
        let fits = |p: &libc::iovec| {
            (p.iov_base as usize).is_multiple_of(align.memory)
                && p.iov_len.is_multiple_of(align.offset)
        };
        if pieces.iter().all(fits) {
            return Some(Op::unbounced(host, pieces));
        }
        let mut bounce = AlignedBuf::zeroed(len, align.memory.max(align.offset));
        if kind == RequestKind::Out {
            gather(&pieces, &mut bounce);
        }
        let iovecs = vec![libc::iovec {
            iov_base: bounce.as_mut_ptr().cast(),
            iov_len: len,
        }];
        Some(Op {
            host,
            pieces,
            bounce: Some(bounce),
            iovecs,
        })
    }
}

/// The host addresses of `request`'s data buffers; `None` when one spans memory regions.
fn guest_pieces(request: &Request, mem: &GuestMemoryMmap) -> Option<Vec<libc::iovec>> {
    request
        .data
        .iter()
        .map(|desc| {
            let slice = mem.get_slice(desc.addr, desc.len as usize).ok()?;
            Some(libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: desc.len as usize,
            })
        })
        .collect()
}

/// The next `len` bytes of `pieces` (splitting one where needed); `None` if they run out.
fn take(pieces: &mut VecDeque<libc::iovec>, mut len: usize) -> Option<Vec<libc::iovec>> {
    let mut taken = Vec::new();
    while len > 0 {
        let piece = pieces.front_mut()?;
        let n = piece.iov_len.min(len);
        taken.push(libc::iovec {
            iov_base: piece.iov_base,
            iov_len: n,
        });
        // SAFETY: stays within the piece (n <= its length).
        piece.iov_base = unsafe { piece.iov_base.cast::<u8>().add(n).cast() };
        piece.iov_len -= n;
        if piece.iov_len == 0 {
            pieces.pop_front();
        }
        len -= n;
    }
    Some(taken)
}

/// Zeroes `pieces` from byte `from` of their concatenation on.
fn zero_after(pieces: &[libc::iovec], mut from: usize) {
    for piece in pieces {
        let skip = from.min(piece.iov_len);
        from -= skip;
        // SAFETY: guest memory checked by `guest_pieces`, lent for this read; stays in the piece.
        unsafe {
            std::ptr::write_bytes(
                piece.iov_base.cast::<u8>().add(skip),
                0,
                piece.iov_len - skip,
            )
        };
    }
}

/// Copies guest `pieces` into `bounce`, in order.
fn gather(pieces: &[libc::iovec], bounce: &mut [u8]) {
    let mut at = 0;
    for piece in pieces {
        // SAFETY: guest memory checked by `guest_pieces`; `bounce` holds the pieces' total.
        let from =
            unsafe { std::slice::from_raw_parts(piece.iov_base.cast::<u8>(), piece.iov_len) };
        bounce[at..at + piece.iov_len].copy_from_slice(from);
        at += piece.iov_len;
    }
}

/// Copies `bounce` out to guest `pieces`, in order.
fn scatter(bounce: &[u8], pieces: &[libc::iovec]) {
    let mut at = 0;
    for piece in pieces {
        // SAFETY: guest memory checked by `guest_pieces`, which the guest lent for this read.
        let to =
            unsafe { std::slice::from_raw_parts_mut(piece.iov_base.cast::<u8>(), piece.iov_len) };
        to.copy_from_slice(&bounce[at..at + piece.iov_len]);
        at += piece.iov_len;
    }
}
