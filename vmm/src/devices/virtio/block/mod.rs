//! virtio-blk: one request queue against an image from the disk crate (raw or qcow2). A kick
//! wakes the worker thread, which takes every available request off the queue. Kicks are asked
//! for (EVENT_IDX) only when the worker would otherwise not look again: while requests are in
//! the io_uring their completions wake it (and the worker watches the ring and the queue for
//! an adaptive window first, `poll`), and after answering it watches the queue briefly for the
//! driver's next request (`POLL`), so a busy driver rarely has to exit to notify.
//!
//! With cache=none (direct I/O), reads and writes whose bytes lie at known places of the image
//! file go to the device's io_uring (`uring`), each submitted as soon as it is taken, and are
//! answered as their completions come in (an eventfd in the worker's epoll); everything else
//! (flush, discard, allocating writes, reads through backing files) runs on the worker once the
//! ring has drained.
//!
//! With cache=writeback, or where io_uring is unavailable, the worker carries requests out
//! itself, except reads that would wait for storage (not in the host's page cache, or any read
//! with cache=none): those run on the device's I/O threads, in parallel. (Cold buffered reads
//! through io_uring measured slower here than through the threads: `scripts/bench/blk.sh`.) A chain that breaks the queue rules
//! marks the device broken; a bad request gets an error status and the device carries on.
//! A request the host has no space for is held unanswered and the device takes no more
//! (`crate::io_stall`: the VM pauses until a restart of the device retries it).

pub mod disk;
pub mod io_pool;
mod poll;
pub mod request;
pub mod uring;

#[cfg(test)]
mod ring_tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_queue::Queue;
use vm_memory::{ByteValued, GuestAddress, GuestMemoryMmap};

use super::queue::{
    add_used, has_available, needs_notification, pop_chain, pop_chain_unarmed, Chain, QueueError,
};
use super::worker::{self, Worker};
use super::{
    read_config_bytes, ActivateError, Activation, DeviceSignals, VirtioDevice, INTERRUPT_USED_RING,
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};
use crate::devices::bus::lock;
use crate::io_stall::IoStalls;
use disk::{ConcurrentDisk, SharedImage};
use io_pool::{IoPool, IO_THREADS};
use poll::PollWindow;
use request::{
    execute, execute_without_waiting, out_of_space, parse, OutOfSpace, Request, RequestError,
    RequestKind, Status, ID_BYTES, SECTOR_SIZE, SIZE_MAX,
};
use uring::{Outcome, Ring};
use vireo_disk::SharedDisk;
use vireo_vmm_protocol::control::DiskCounters;

/// virtio device type of a block device.
pub const VIRTIO_ID_BLOCK: u32 = 2;
/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request (the queue minus header and status).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;

const VIRTIO_BLK_F_SIZE_MAX: u32 = 1;
const VIRTIO_BLK_F_SEG_MAX: u32 = 2;
const VIRTIO_BLK_F_RO: u32 = 5;
const VIRTIO_BLK_F_BLK_SIZE: u32 = 6;
const VIRTIO_BLK_F_FLUSH: u32 = 9;
const VIRTIO_BLK_F_DISCARD: u32 = 13;
const VIRTIO_BLK_F_WRITE_ZEROES: u32 = 14;
/// How long the worker watches the queue for the driver's next request after answering, before
/// it asks to be notified instead (`RequestQueue::take_next`).
const POLL: Duration = Duration::from_micros(20);
/// Sectors one discard / write-zeroes segment may cover.
const MAX_RANGE_SECTORS: u32 = 1 << 22;

/// Where a block device's image lives: shared with the machine so the image can be closed and
/// another of the same size (or, when the disk grows, a larger one) opened while the device is
/// quiesced (live snapshots swap layers).
pub struct DiskImage {
    /// The size the guest is told (configuration space `capacity`).
    capacity: AtomicU64,
    /// The open image (`None` while detached).
    pub image: Mutex<Option<SharedImage>>,
    /// Requests completed so far (kept across image swaps).
    pub counters: IoCounters,
}

/// A disk's completed reads and writes and their bytes (the `stats` control command).
#[derive(Default)]
pub struct IoCounters {
    reads: AtomicU64,
    writes: AtomicU64,
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
}

impl IoCounters {
    /// Counts a completed request (only reads and writes count).
    fn count(&self, request: &Request) {
        let bytes: u64 = request.data.iter().map(|d| u64::from(d.len)).sum();
        let (requests, total) = match request.kind {
            RequestKind::In => (&self.reads, &self.read_bytes),
            RequestKind::Out => (&self.writes, &self.written_bytes),
            _ => return,
        };
        requests.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn read(&self) -> DiskCounters {
        DiskCounters {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            written_bytes: self.written_bytes.load(Ordering::Relaxed),
        }
    }
}

impl DiskImage {
    /// The size the guest is told, in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::SeqCst)
    }

    /// Records a new size (the transport then tells the driver with `config_changed`).
    pub fn set_capacity(&self, bytes: u64) {
        self.capacity.store(bytes, Ordering::SeqCst);
    }
}

/// A block device's image slot.
pub type DiskSlot = Arc<DiskImage>;

/// A virtio block device.
pub struct Block {
    disk: DiskSlot,
    id: [u8; ID_BYTES],
    config: BlockConfig,
    features: u64,
    worker: Option<Worker>,
    name: String,
    /// Where it reports requests held for lack of space, as disk `index`.
    stalls: Arc<IoStalls>,
    index: usize,
    /// Whether the image is open for direct I/O (cache=none): served through an io_uring.
    direct: bool,
}

impl Block {
    /// Disk `index` serving `image`, answering GET_ID with `serial` (truncated to 20 bytes),
    /// reporting held requests to `stalls`.
    pub fn new(
        image: SharedImage,
        read_only: bool,
        serial: &str,
        (index, stalls): (usize, Arc<IoStalls>),
    ) -> Block {
        let mut id = [0u8; ID_BYTES];
        let len = serial.len().min(ID_BYTES);
        id[..len].copy_from_slice(&serial.as_bytes()[..len]);
        let mut features = [
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_BLK_F_SIZE_MAX,
            VIRTIO_BLK_F_SEG_MAX,
            VIRTIO_BLK_F_BLK_SIZE,
            VIRTIO_BLK_F_FLUSH,
        ]
        .iter()
        .fold(0u64, |acc, bit| acc | 1 << bit);
        if read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        } else {
            features |= (1 << VIRTIO_BLK_F_DISCARD) | (1 << VIRTIO_BLK_F_WRITE_ZEROES);
        }
        let capacity = image.capacity();
        // Direct I/O needs requests aligned to the host's block: the guest is told its size.
        let direct = image.shared().and_then(SharedDisk::direct);
        let block_size = direct.map_or(SECTOR_SIZE as u32, |align| {
            align.offset.max(SECTOR_SIZE as usize) as u32
        });
        Block {
            disk: Arc::new(DiskImage {
                capacity: AtomicU64::new(capacity),
                image: Mutex::new(Some(image)),
                counters: IoCounters::default(),
            }),
            id,
            config: BlockConfig::new(block_size),
            features,
            worker: None,
            name: format!("virtio-blk{index}"),
            stalls,
            index,
            direct: direct.is_some(),
        }
    }

    /// The slot holding the image.
    pub fn slot(&self) -> DiskSlot {
        self.disk.clone()
    }
}

/// `struct virtio_blk_config` (virtio 1.2, 5.2.4): 60 bytes, packed as Linux declares it, every
/// multi-byte field little-endian. The geometry, topology and writeback fields stay zero (their
/// feature bits are not offered).
#[derive(Clone, Copy, Default)]
#[repr(C, packed)]
struct BlockConfig {
    /// In 512-byte sectors; `read_config` fills it from the slot.
    capacity: u64,
    size_max: u32,
    seg_max: u32,
    /// cylinders (u16), heads (u8), sectors (u8).
    geometry: [u8; 4],
    blk_size: u32,
    /// physical_block_exp, alignment_offset, min_io_size (u16), opt_io_size (u32).
    topology: [u8; 8],
    writeback: u8,
    unused0: u8,
    num_queues: u16,
    max_discard_sectors: u32,
    max_discard_seg: u32,
    discard_sector_alignment: u32,
    max_write_zeroes_sectors: u32,
    max_write_zeroes_seg: u32,
    write_zeroes_may_unmap: u8,
    unused1: [u8; 3],
}

// SAFETY: a packed repr(C) struct of integers and byte arrays: no padding, every bit pattern valid.
unsafe impl ByteValued for BlockConfig {}

impl BlockConfig {
    /// What this device offers with logical blocks of `block_size` bytes, capacity aside.
    fn new(block_size: u32) -> BlockConfig {
        BlockConfig {
            size_max: SIZE_MAX.to_le(),
            seg_max: SEG_MAX.to_le(),
            blk_size: block_size.to_le(),
            num_queues: 1u16.to_le(),
            max_discard_sectors: MAX_RANGE_SECTORS.to_le(),
            max_discard_seg: 1u32.to_le(),
            discard_sector_alignment: 1u32.to_le(),
            max_write_zeroes_sectors: MAX_RANGE_SECTORS.to_le(),
            max_write_zeroes_seg: 1u32.to_le(),
            write_zeroes_may_unmap: 1,
            ..BlockConfig::default()
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = BlockConfig {
            capacity: (self.disk.capacity() / SECTOR_SIZE).to_le(),
            ..self.config
        };
        read_config_bytes(config.as_slice(), offset, data);
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        let [queue] = activation.take_queues()?;
        let requests = Arc::new(RequestQueue {
            queue: Mutex::new(queue),
            memory: activation.memory,
            signals: activation.signals,
            id: self.id,
            held: AtomicBool::new(false),
            stalls: self.stalls.clone(),
            index: self.index,
            disk: self.disk.clone(),
        });
        let disk = self.disk.clone();
        // The slot is only emptied while the device is quiesced (no worker running).
        let image = move || lock(&disk.image).clone();
        let ring = match self.direct {
            true => Ring::new().map_err(|e| format!("no io_uring: {e}")),
            false => Err("cache=writeback".to_owned()),
        };
        let worker = match ring {
            Ok(ring) => {
                eprintln!("vireo-vmm: {}: requests through io_uring", self.name);
                let completions = ring.completions();
                // Owned by the worker's handler: stopping the worker drains the ring.
                let mut server = RingServer::new(ring, requests);
                Worker::spawn_with_fds(
                    self.name.clone(),
                    activation.queue_events,
                    &[completions],
                    move |source| {
                        // Sources: the queue's kick (0), then the ring's completions.
                        if source == 1 {
                            server.ring.acknowledge();
                        }
                        match image() {
                            Some(image) => server.serve(&image),
                            None => server.reap(),
                        }
                    },
                )?
            }
            Err(why) => {
                eprintln!(
                    "vireo-vmm: {}: requests through I/O threads ({why})",
                    self.name
                );
                // Owned by the worker's handler: stopping the worker drains and joins the I/O
                // threads.
                let pool = IoPool::new(&self.name, IO_THREADS);
                Worker::spawn(self.name.clone(), activation.queue_events, move |_| {
                    if let Some(image) = image() {
                        requests.serve(&image, &pool);
                    }
                })?
            }
        };
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        worker::stop(&mut self.worker);
    }
}

/// The request queue and what answering it needs, shared by the worker and the I/O threads.
struct RequestQueue {
    queue: Mutex<Queue>,
    memory: GuestMemoryMmap,
    signals: Arc<DeviceSignals>,
    id: [u8; ID_BYTES],
    /// Set once a request is held for space: nothing more is taken off the queue.
    held: AtomicBool,
    stalls: Arc<IoStalls>,
    index: usize,
    /// The disk (its counters).
    disk: DiskSlot,
}

impl RequestQueue {
    /// Answers a kick: every available request is carried out here, on the worker, except
    /// reads whose data is not in the host's page cache; those go to the I/O threads, which
    /// may wait for storage while the worker carries on. The requests answered here are
    /// published together, with one interrupt if the driver wants it.
    /// A request out of space stops the pass: it and the requests taken after it stay
    /// unanswered (taken again when the device restarts) and the stall is reported.
    fn serve(self: &Arc<Self>, image: &SharedImage, pool: &IoPool) {
        let mut answered_any = false;
        loop {
            let taken = match self.take_next(answered_any, true) {
                Ok(taken) if taken.is_empty() => return,
                Ok(taken) => taken,
                Err(_) => return self.signals.mark_broken(),
            };
            let answered = self.start(image, pool, taken);
            if self.held.load(Ordering::SeqCst) {
                return;
            }
            answered_any = answered > 0;
        }
    }

    /// Carries out `taken` on this thread, or on the I/O threads for reads that would wait;
    /// publishes what was answered here and returns how many.
    fn start(
        self: &Arc<Self>,
        image: &SharedImage,
        pool: &IoPool,
        taken: Vec<(u16, Work)>,
    ) -> usize {
        let mut answered = Vec::with_capacity(taken.len());
        let mut stalled = None;
        for (head, work) in taken {
            match work.perform_without_waiting(&**image, &self.memory, &self.id) {
                Some(Ok(len)) => {
                    self.count(&work);
                    answered.push((head, len));
                }
                Some(Err(out_of_space)) => {
                    stalled = Some(out_of_space);
                    break;
                }
                None => {
                    let (requests, image) = (self.clone(), image.clone());
                    pool.submit(Box::new(move || {
                        match work.perform(&*image, &requests.memory, &requests.id) {
                            Ok(len) => {
                                requests.count(&work);
                                requests.publish(&[(head, len)]);
                            }
                            Err(out_of_space) => requests.hold(out_of_space),
                        }
                    }));
                }
            }
        }
        self.conclude(&answered, stalled);
        answered.len()
    }

    /// Publishes `answered`; then, if a request ran out of space, stops taking requests.
    fn conclude(&self, answered: &[(u16, u32)], stalled: Option<OutOfSpace>) {
        if !answered.is_empty() {
            self.publish(answered);
        }
        if let Some(out_of_space) = stalled {
            self.hold(out_of_space);
        }
    }

    /// Counts a request answered (a refused one is not).
    fn count(&self, work: &Work) {
        if let Work::Run(request) = work {
            self.disk.counters.count(request);
        }
    }

    /// Stops taking requests and reports the stall (which pauses the VM).
    fn hold(&self, OutOfSpace(cause): OutOfSpace) {
        self.held.store(true, Ordering::SeqCst);
        self.stalls.report(self.index, cause);
    }

    /// The requests to serve next: every available one. When there are none and nothing the
    /// device started still runs (`idle`), then, if the pass just answered requests
    /// (`answered`), the queue is watched for up to [`POLL`] first: a driver that waits for
    /// its answers by polling the used ring publishes its next request within microseconds,
    /// and catching it here spares the driver's notification (an exit) and the worker's
    /// wake-up. Failing that, the driver is asked to notify the next request.
    fn take_next(&self, answered: bool, idle: bool) -> Result<Vec<(u16, Work)>, QueueError> {
        let taken = self.take_available(false)?;
        if !taken.is_empty() || !idle {
            return Ok(taken);
        }
        if answered && self.poll_available() {
            return self.take_available(false);
        }
        self.take_available(true)
    }

    /// Whether a request becomes available within [`POLL`] (spinning on the avail index).
    fn poll_available(&self) -> bool {
        let start = Instant::now();
        loop {
            if has_available(&lock(&self.queue), &self.memory) {
                return true;
            }
            if start.elapsed() >= POLL {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Every request the driver made available (none once the device is broken). With `arm`,
    /// a queue that runs dry asks the driver to notify again (EVENT_IDX); without, the caller
    /// promises to look again by itself.
    fn take_available(&self, arm: bool) -> Result<Vec<(u16, Work)>, QueueError> {
        let mut taken = Vec::new();
        if self.signals.is_broken() || self.held.load(Ordering::SeqCst) {
            return Ok(taken);
        }
        let pop = if arm { pop_chain } else { pop_chain_unarmed };
        let mut queue = lock(&self.queue);
        while let Some(chain) = pop(&mut queue, &self.memory)? {
            taken.push((chain.head, Work::of(&chain, &self.memory)));
        }
        Ok(taken)
    }

    /// Returns answered chains (head, bytes written) to the driver; interrupts if it wants.
    fn publish(&self, answered: &[(u16, u32)]) {
        let mut queue = lock(&self.queue);
        for &(head, len) in answered {
            if add_used(&mut queue, &self.memory, head, len).is_err() {
                return self.signals.mark_broken();
            }
        }
        // The driver says through used_event (EVENT_IDX) whether it wants these.
        if needs_notification(&mut queue, &self.memory) {
            self.signals.notify(INTERRUPT_USED_RING);
        }
    }
}

/// A request queue served through an io_uring.
struct RingServer {
    ring: Ring,
    requests: Arc<RequestQueue>,
    /// How long to watch for completions and requests while I/O is in flight.
    poll: PollWindow,
}

impl RingServer {
    fn new(ring: Ring, requests: Arc<RequestQueue>) -> RingServer {
        RingServer {
            ring,
            requests,
            poll: PollWindow::default(),
        }
    }

    /// Answers a kick or completions, until neither is left (`serve_awake`). Completions
    /// raise the eventfd only while the worker sleeps: awake, it looks for them itself.
    fn serve(&mut self, image: &SharedImage) {
        self.poll.woke();
        loop {
            self.ring.mute();
            self.serve_awake(image);
            if !self.ring.unmute() {
                return;
            }
        }
    }

    /// Completed requests are answered, then every available request taken — reads and
    /// writes with a route go to the ring, each submitted at once; any other request runs here
    /// once everything before it completed. Answers are published together. While the ring
    /// has I/O in flight the driver is not asked to notify: the worker watches the ring and
    /// the queue for the poll window, and after that each completion wakes it, and it looks
    /// at the queue then. A request out of space stops the pass, as in `RequestQueue::serve`.
    fn serve_awake(&mut self, image: &SharedImage) {
        let requests = self.requests.clone();
        loop {
            let mut answered = Vec::new();
            let done = self.ring.reap(false);
            let stalled = self.settle(done, &mut answered);
            requests.conclude(&answered, stalled);
            if requests.held.load(Ordering::SeqCst) {
                return;
            }
            let taken = match requests.take_next(!answered.is_empty(), !self.ring.busy()) {
                Ok(taken) if taken.is_empty() && self.ring.busy() && self.poll_busy() => continue,
                Ok(taken) if taken.is_empty() => return,
                Ok(taken) => taken,
                Err(_) => return requests.signals.mark_broken(),
            };
            let mut answered = Vec::new();
            let stalled = self.start(image, taken, &mut answered);
            requests.conclude(&answered, stalled);
        }
    }

    /// Carries out `taken`: submitted to the ring, or run here; what ran here is
    /// added to `answered`. Returns the request the host had no space for, if one had not.
    fn start(
        &mut self,
        image: &SharedImage,
        taken: Vec<(u16, Work)>,
        answered: &mut Vec<(u16, u32)>,
    ) -> Option<OutOfSpace> {
        let requests = self.requests.clone();
        let mut stalled = None;
        for (head, work) in taken {
            let work = match (work, image.shared()) {
                (Work::Run(request), Some(disk)) => {
                    match self.ring.queue(head, request, disk, &requests.memory) {
                        Ok(()) => continue,
                        Err((request, _)) => Work::Run(request),
                    }
                }
                (work, _) => work,
            };
            // It may need the disk to itself, which waits for the ring's requests.
            if self.ring.busy() {
                let done = self.ring.drain();
                stalled = stalled.or(self.settle(done, answered));
            }
            match work.perform(&**image, &requests.memory, &requests.id) {
                Ok(len) => {
                    requests.count(&work);
                    answered.push((head, len));
                }
                Err(out_of_space) => {
                    stalled = Some(out_of_space);
                    break;
                }
            }
        }
        stalled
    }

    /// Whether a completion or a request (to a device that takes them) comes within the poll
    /// window.
    fn poll_busy(&mut self) -> bool {
        let (ring, requests) = (&mut self.ring, &self.requests);
        self.poll.watch(|| {
            ring.has_completions()
                || (!requests.signals.is_broken()
                    && has_available(&lock(&requests.queue), &requests.memory))
        })
    }

    /// Answers the requests whose I/O completed.
    fn reap(&mut self) {
        let mut answered = Vec::new();
        let done = self.ring.reap(false);
        let stalled = self.settle(done, &mut answered);
        self.requests.conclude(&answered, stalled);
    }

    /// Writes the status of each request in `done` and adds it to `answered`, except one the
    /// host had no space for: that one is left unanswered and returned.
    fn settle(
        &self,
        done: Vec<(u16, Request, Outcome)>,
        answered: &mut Vec<(u16, u32)>,
    ) -> Option<OutOfSpace> {
        let mut stalled = None;
        for (head, request, outcome) in done {
            let (status, len) = match outcome {
                Outcome::Done(len) => (Status::Ok, len),
                Outcome::Failed(errno) => match out_of_space(errno) {
                    Some(out_of_space) => {
                        stalled = Some(out_of_space);
                        continue;
                    }
                    None => (Status::IoErr, 0),
                },
            };
            // Counted as the worker counts the requests it answers, whatever their status.
            self.requests.disk.counters.count(&request);
            answered.push((
                head,
                answer(&self.requests.memory, &request, status, len + 1),
            ));
        }
        stalled
    }
}

impl Drop for RingServer {
    /// Answers the I/O in flight (a device reset or quiesce).
    fn drop(&mut self) {
        self.drain();
    }
}

impl RingServer {
    /// Waits for the I/O in flight and answers it.
    fn drain(&mut self) {
        let done = self.ring.drain();
        let mut answered = Vec::new();
        let stalled = self.settle(done, &mut answered);
        self.requests.conclude(&answered, stalled);
    }
}

/// What a chain taken off the queue asks for.
enum Work {
    /// A valid request.
    Run(Request),
    /// An invalid one: answered IOERR through its last descriptor, or not at all when the chain
    /// has no status byte.
    Refuse(Option<GuestAddress>),
}

impl Work {
    fn of(chain: &Chain, mem: &GuestMemoryMmap) -> Work {
        match parse(chain, mem, SEG_MAX) {
            Ok(request) => Work::Run(request),
            Err(RequestError::NoStatus) => Work::Refuse(None),
            Err(_) => Work::Refuse(chain.descriptors.last().map(|status| status.addr)),
        }
    }

    /// Like `perform`, unless the request is a read that would wait for storage: `None`, and
    /// nothing is reported yet.
    fn perform_without_waiting(
        &self,
        disk: &dyn ConcurrentDisk,
        mem: &GuestMemoryMmap,
        id: &[u8; ID_BYTES],
    ) -> Option<Result<u32, OutOfSpace>> {
        match self {
            Work::Run(request) => Some(
                execute_without_waiting(request, disk, mem, id)?
                    .map(|(status, len)| answer(mem, request, status, len)),
            ),
            Work::Refuse(_) => Some(self.perform(disk, mem, id)),
        }
    }

    /// Runs the request and writes its status; returns the bytes written into guest buffers,
    /// or that it must wait for space (no status written).
    fn perform(
        &self,
        disk: &dyn ConcurrentDisk,
        mem: &GuestMemoryMmap,
        id: &[u8; ID_BYTES],
    ) -> Result<u32, OutOfSpace> {
        match self {
            Work::Run(request) => execute(request, disk, mem, id)
                .map(|(status, len)| answer(mem, request, status, len)),
            Work::Refuse(None) => Ok(0),
            Work::Refuse(Some(status)) => {
                write_status(mem, *status, Status::IoErr);
                Ok(1)
            }
        }
    }
}

/// Writes `request`'s status; returns `len`.
fn answer(mem: &GuestMemoryMmap, request: &Request, status: Status, len: u32) -> u32 {
    write_status(mem, request.status, status);
    len
}

/// Serves every available request on the calling thread, one after another; interrupts once
/// if the driver wants it (tests and the fuzz target). A request out of space stays
/// unanswered and ends the pass.
pub fn serve_queue(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    disk: &dyn ConcurrentDisk,
    signals: &DeviceSignals,
    id: &[u8; ID_BYTES],
) {
    signals.serve(|| {
        let mut used = 0;
        while let Some(chain) = pop_chain(queue, mem)? {
            let Ok(len) = Work::of(&chain, mem).perform(disk, mem, id) else {
                break;
            };
            add_used(queue, mem, chain.head, len)?;
            used += 1;
        }
        Ok(used > 0 && needs_notification(queue, mem))
    });
}

fn write_status(mem: &GuestMemoryMmap, addr: GuestAddress, status: Status) {
    use vm_memory::Bytes;
    // The address was validated when the chain was popped.
    let _ = mem.write_obj(status as u8, addr);
}

#[cfg(test)]
impl RequestQueue {
    /// A 16-entry queue over `memory` with no image yet (capacity 0), as the tests drive it.
    fn for_test(memory: GuestMemoryMmap) -> Arc<Self> {
        use crate::devices::virtio::queue::testing::queue;
        Arc::new(RequestQueue {
            queue: Mutex::new(queue(16)),
            memory,
            signals: Arc::new(DeviceSignals::new(
                vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap(),
            )),
            id: [0; ID_BYTES],
            held: AtomicBool::new(false),
            stalls: Arc::default(),
            index: 0,
            disk: Arc::new(DiskImage {
                capacity: AtomicU64::new(0),
                image: Mutex::new(None),
                counters: IoCounters::default(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::queue::testing::*;
    use std::path::PathBuf;
    use vireo_disk::block::BlockDevice;
    use vireo_vmm_protocol::CacheMode;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    const HEADER: u64 = BUFFERS;
    const DATA: u64 = BUFFERS + 0x1000;
    const STATUS: u64 = BUFFERS + 0x8000;

    struct Fixture {
        mem: GuestMemoryMmap,
        queue: Queue,
        disk: Mutex<Box<dyn BlockDevice>>,
        signals: DeviceSignals,
        path: PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    #[test]
    fn config_space_has_the_virtio_layout() {
        use std::mem::{offset_of, size_of};
        use vireo_vmm_protocol::DiskFormat;
        assert_eq!(size_of::<BlockConfig>(), 60);
        let offsets = [
            (offset_of!(BlockConfig, size_max), 8),
            (offset_of!(BlockConfig, seg_max), 12),
            (offset_of!(BlockConfig, geometry), 16),
            (offset_of!(BlockConfig, blk_size), 20),
            (offset_of!(BlockConfig, topology), 24),
            (offset_of!(BlockConfig, writeback), 32),
            (offset_of!(BlockConfig, num_queues), 34),
            (offset_of!(BlockConfig, max_discard_sectors), 36),
            (offset_of!(BlockConfig, max_discard_seg), 40),
            (offset_of!(BlockConfig, discard_sector_alignment), 44),
            (offset_of!(BlockConfig, max_write_zeroes_sectors), 48),
            (offset_of!(BlockConfig, max_write_zeroes_seg), 52),
            (offset_of!(BlockConfig, write_zeroes_may_unmap), 56),
        ];
        for (actual, spec) in offsets {
            assert_eq!(actual, spec);
        }
        let fixture = fixture("config", false);
        let image = disk::open_image(
            &fixture.path,
            Some(DiskFormat::Raw),
            false,
            CacheMode::Writeback,
        )
        .unwrap();
        let block = Block::new(image, false, "config", (0, Arc::default()));
        let read = |offset: u64, len: usize| {
            let mut data = vec![0u8; len];
            block.read_config(offset, &mut data);
            data
        };
        assert_eq!(read(0, 8), ((1u64 << 20) / SECTOR_SIZE).to_le_bytes());
        assert_eq!(read(8, 4), SIZE_MAX.to_le_bytes());
        assert_eq!(read(20, 4), (SECTOR_SIZE as u32).to_le_bytes());
        assert_eq!(read(34, 2), 1u16.to_le_bytes());
        assert_eq!(read(56, 4), [1, 0, 0, 0]);
    }

    fn fixture(name: &str, read_only: bool) -> Fixture {
        let path =
            std::env::temp_dir().join(format!("vireo-blk-{}-{name}.raw", std::process::id()));
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let disk = Mutex::new(vireo_disk::open::open_disk(&path, read_only).unwrap());
        let signals =
            DeviceSignals::new(EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap());
        Fixture {
            mem: memory(),
            queue: queue(16),
            disk,
            signals,
            path,
        }
    }

    impl Fixture {
        /// Builds header + one data buffer + status as descriptors 0..=2 and publishes it.
        fn request(&self, kind: u32, sector: u64, data_len: u32, data_writable: bool) {
            self.mem.write_obj(kind, GuestAddress(HEADER)).unwrap();
            self.mem
                .write_obj(sector, GuestAddress(HEADER + 8))
                .unwrap();
            self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
            set_desc(&self.mem, 0, HEADER, 16, NEXT, 1);
            set_desc(
                &self.mem,
                1,
                DATA,
                data_len,
                NEXT | if data_writable { WRITE } else { 0 },
                2,
            );
            set_desc(&self.mem, 2, STATUS, 1, WRITE, 0);
            let used = used_idx(&self.mem);
            publish_at(&self.mem, used, 0);
        }

        fn serve(&mut self) {
            serve_queue(
                &mut self.queue,
                &self.mem,
                &self.disk,
                &self.signals,
                b"vireo-test-serial\0\0\0",
            );
        }

        fn status(&self) -> u8 {
            self.mem.read_obj(GuestAddress(STATUS)).unwrap()
        }
    }

    /// Publishes `head` in avail slot `slot` and sets the avail index past it.
    fn publish_at(mem: &GuestMemoryMmap, slot: u16, head: u16) {
        mem.write_obj(
            head,
            GuestAddress(AVAIL_RING + 4 + 2 * u64::from(slot % 16)),
        )
        .unwrap();
        set_avail_idx(mem, slot + 1);
    }

    #[test]
    fn written_sectors_read_back_and_reach_the_file() {
        let mut f = fixture("rw", false);
        f.mem
            .write_slice(&[0xa5; 1024], GuestAddress(DATA))
            .unwrap();
        f.request(1, 8, 1024, false);
        f.serve();
        assert_eq!(f.status(), Status::Ok as u8);
        assert_eq!(used_entry(&f.mem, 0), (0, 1));
        f.mem.write_slice(&[0; 1024], GuestAddress(DATA)).unwrap();
        f.request(0, 8, 1024, true);
        f.serve();
        assert_eq!(f.status(), Status::Ok as u8);
        assert_eq!(used_entry(&f.mem, 1), (0, 1025), "data plus status written");
        let mut back = [0u8; 1024];
        f.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
        assert_eq!(back, [0xa5; 1024]);
        f.request(4, 0, 0, false);
        f.serve();
        assert_eq!(f.status(), Status::Ok as u8, "flush");
        let file = std::fs::read(&f.path).unwrap();
        assert_eq!(&file[8 * 512..8 * 512 + 1024], &[0xa5; 1024][..]);
        assert!(!f.signals.is_broken());
    }

    #[test]
    fn read_only_disks_reject_writes_and_unknown_types_are_unsupported() {
        let mut f = fixture("ro", true);
        f.request(1, 0, 512, false);
        f.serve();
        assert_eq!(f.status(), Status::IoErr as u8);
        f.request(77, 0, 512, false);
        f.serve();
        assert_eq!(f.status(), Status::Unsupported as u8);
        assert!(!f.signals.is_broken());
    }

    #[test]
    fn bad_requests_get_an_error_status_and_the_device_carries_on() {
        let mut f = fixture("bad", false);
        // Read into a device-readable buffer: wrong direction.
        f.request(0, 0, 512, false);
        f.serve();
        assert_eq!(f.status(), Status::IoErr as u8);
        // Not a whole sector.
        f.request(1, 0, 100, false);
        f.serve();
        assert_eq!(f.status(), Status::IoErr as u8);
        // Past the end of the disk.
        f.request(0, 1 << 40, 512, true);
        f.serve();
        assert_eq!(f.status(), Status::IoErr as u8);
        // GET_ID still works afterwards.
        f.request(8, 0, 20, true);
        f.serve();
        assert_eq!(f.status(), Status::Ok as u8);
        let mut id = [0u8; 17];
        f.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id, b"vireo-test-serial");
        assert!(!f.signals.is_broken());
    }

    #[test]
    fn discard_and_write_zeroes_make_ranges_read_as_zero() {
        let mut f = fixture("zero", false);
        f.mem
            .write_slice(&[0x5a; 4096], GuestAddress(DATA))
            .unwrap();
        f.request(1, 0, 4096, false);
        f.serve();
        // One segment: sectors 0..4 zeroed, 4..8 discarded.
        for (kind, sector) in [(13u32, 0u64), (11, 4)] {
            f.mem
                .write_obj(sector, GuestAddress(DATA + 0x2000))
                .unwrap();
            f.mem.write_obj(4u32, GuestAddress(DATA + 0x2008)).unwrap();
            f.mem.write_obj(0u32, GuestAddress(DATA + 0x200c)).unwrap();
            f.request(kind, 0, 16, false);
            set_desc(&f.mem, 1, DATA + 0x2000, 16, NEXT, 2);
            f.serve();
            assert_eq!(f.status(), Status::Ok as u8);
        }
        let file = std::fs::read(&f.path).unwrap();
        assert!(file[..4096].iter().all(|b| *b == 0));
    }

    #[test]
    fn requests_queued_together_all_complete_through_the_io_threads() {
        let f = fixture("parallel", false);
        // Five writes of 512 bytes to sectors 0..5, each its own chain (header, data, status).
        let requests = 5u16;
        for i in 0..requests {
            let base = BUFFERS + 0x1000 * u64::from(i);
            f.mem.write_obj(1u32, GuestAddress(base)).unwrap();
            f.mem
                .write_obj(u64::from(i), GuestAddress(base + 8))
                .unwrap();
            f.mem
                .write_slice(&[0x40 + i as u8; 512], GuestAddress(base + 0x100))
                .unwrap();
            f.mem.write_obj(0xffu8, GuestAddress(base + 0x800)).unwrap();
            set_desc(&f.mem, 3 * i, base, 16, NEXT, 3 * i + 1);
            set_desc(&f.mem, 3 * i + 1, base + 0x100, 512, NEXT, 3 * i + 2);
            set_desc(&f.mem, 3 * i + 2, base + 0x800, 1, WRITE, 0);
        }
        let heads: Vec<u16> = (0..requests).map(|i| 3 * i).collect();
        publish(&f.mem, &heads);
        let requests_queue = RequestQueue::for_test(f.mem.clone());
        // The image as the VMM opens it (SharedDisk), beside the fixture's own handle.
        let image = disk::open_image(&f.path, None, false, CacheMode::Writeback).unwrap();
        let pool = IoPool::new("test-blk", 3);
        requests_queue.serve(&image, &pool);
        drop(pool);
        assert_eq!(used_idx(&f.mem), requests);
        let mut answered: Vec<u32> = (0..requests)
            .map(|slot| used_entry(&f.mem, slot).0)
            .collect();
        answered.sort();
        assert_eq!(
            answered,
            heads.iter().map(|h| u32::from(*h)).collect::<Vec<_>>()
        );
        assert!(!requests_queue.signals.is_broken());
        let counted = requests_queue.disk.counters.read();
        assert_eq!((counted.writes, counted.written_bytes), (5, 5 * 512));
        assert_eq!((counted.reads, counted.read_bytes), (0, 0));
        drop(image);
        let file = std::fs::read(&f.path).unwrap();
        for i in 0..requests as usize {
            let status: u8 = f
                .mem
                .read_obj(GuestAddress(BUFFERS + 0x1000 * i as u64 + 0x800))
                .unwrap();
            assert_eq!(status, Status::Ok as u8, "request {i}");
            assert!(file[i * 512..(i + 1) * 512]
                .iter()
                .all(|b| *b == 0x40 + i as u8));
        }
    }

    #[test]
    fn hostile_queues_break_the_device_without_panicking() {
        // A descriptor loop.
        let mut f = fixture("loop", false);
        f.request(0, 0, 512, true);
        set_desc(&f.mem, 2, STATUS, 1, WRITE | NEXT, 0);
        f.serve();
        assert!(f.signals.is_broken());
        assert_ne!(
            f.signals.interrupt_status() & super::super::INTERRUPT_CONFIG,
            0,
            "driver told"
        );
        // Further notifications are ignored rather than served.
        f.serve();
        assert_eq!(used_idx(&f.mem), 0);

        // An avail index far ahead of the queue size.
        let mut f = fixture("jump", false);
        set_avail_idx(&f.mem, 1000);
        f.serve();
        assert!(f.signals.is_broken());

        // A data buffer outside guest memory.
        let mut f = fixture("oob", false);
        f.request(0, 0, 512, true);
        set_desc(&f.mem, 1, 0x7fff_ffff_0000, 512, NEXT | WRITE, 2);
        f.serve();
        assert!(f.signals.is_broken());

        // An over-long chain: every descriptor of the table chained, and then some.
        let mut f = fixture("long", false);
        for i in 0..16 {
            set_desc(&f.mem, i, DATA, 512, NEXT | WRITE, (i + 1) % 16);
        }
        publish(&f.mem, &[0]);
        f.serve();
        assert!(f.signals.is_broken());
    }
}
