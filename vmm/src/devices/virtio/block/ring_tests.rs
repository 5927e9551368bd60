//! The block device served through its io_uring, with cache=writeback and cache=none: data
//! written by the guest reaches the image file (read back by plain reads and by `qemu-img
//! compare`), guest buffers at any address work (bounced for direct I/O), a flush queued
//! behind writes waits for them, hostile chains are refused as on the thread path, and the
//! driver is asked to notify only while nothing is in flight.

use std::path::{Path, PathBuf};

use vireo_vmm_protocol::{CacheMode, DiskFormat};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::uring::Ring;
use super::*;
use crate::devices::virtio::queue::testing::*;

const HEADERS: u64 = 0x8000;
const STATUSES: u64 = 0x9000;
const IN: u32 = 0;
const OUT: u32 = 1;
const FLUSH: u32 = 4;

/// A request to lay out: type, first sector, data buffers (guest address, length).
struct Req(u32, u64, Vec<(u64, u32)>);

/// A device on an image, served through a ring, and the guest side of its queue.
struct Rig {
    mem: GuestMemoryMmap,
    server: RingServer,
    image: SharedImage,
    published: u16,
}

impl Rig {
    /// The device on `path` (opened as the VMM opens it, probed when `format` is `None`);
    /// `None` where io_uring is unavailable.
    fn new(
        path: &Path,
        format: Option<DiskFormat>,
        read_only: bool,
        cache: CacheMode,
    ) -> Option<Rig> {
        let ring = match Ring::new() {
            Ok(ring) => ring,
            Err(e) => {
                eprintln!("no io_uring here ({e}): skipped");
                return None;
            }
        };
        let mem = memory();
        let requests = RequestQueue::for_test(mem.clone());
        let image = disk::open_image(path, format, read_only, cache).unwrap();
        let direct = image.shared().and_then(SharedDisk::direct).is_some();
        assert_eq!(
            direct,
            cache == CacheMode::None,
            "O_DIRECT exactly with cache=none"
        );
        Some(Rig {
            mem,
            server: RingServer::new(ring, requests),
            image,
            published: 0,
        })
    }

    /// Queues `requests` together, serves them, waits for all; their statuses and used lengths.
    fn run(&mut self, requests: &[Req]) -> Vec<(u8, u32)> {
        let heads = self.publish(requests);
        self.server.serve(&self.image);
        self.server.drain();
        assert_eq!(
            used_idx(&self.mem),
            self.published,
            "every request answered"
        );
        // Completions come in any order: the used lengths by head.
        let first = self.published - requests.len() as u16;
        let used: Vec<(u32, u32)> = (first..self.published)
            .map(|slot| used_entry(&self.mem, slot % 16))
            .collect();
        heads
            .iter()
            .enumerate()
            .map(|(i, head)| {
                let status = self
                    .mem
                    .read_obj(GuestAddress(STATUSES + i as u64))
                    .unwrap();
                let (_, len) = used.iter().find(|(h, _)| *h == u32::from(*head)).unwrap();
                (status, *len)
            })
            .collect()
    }

    /// Lays `requests` out and makes them available together; their head descriptors.
    fn publish(&mut self, requests: &[Req]) -> Vec<u16> {
        let mut heads = Vec::new();
        let mut next = 0u16;
        for (i, Req(kind, sector, data)) in requests.iter().enumerate() {
            let header = HEADERS + 0x20 * i as u64;
            let status = STATUSES + i as u64;
            self.mem.write_obj(*kind, GuestAddress(header)).unwrap();
            self.mem
                .write_obj(*sector, GuestAddress(header + 8))
                .unwrap();
            self.mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
            heads.push(next);
            set_desc(&self.mem, next, header, 16, NEXT, next + 1);
            next += 1;
            for &(addr, len) in data {
                let writable = if *kind == IN { WRITE } else { 0 };
                set_desc(&self.mem, next, addr, len, NEXT | writable, next + 1);
                next += 1;
            }
            set_desc(&self.mem, next, status, 1, WRITE, 0);
            next += 1;
        }
        for head in &heads {
            let slot = u64::from(self.published % 16);
            self.mem
                .write_obj(*head, GuestAddress(AVAIL_RING + 4 + 2 * slot))
                .unwrap();
            self.published = self.published.wrapping_add(1);
        }
        set_avail_idx(&self.mem, self.published);
        heads
    }

    /// The avail index at which the device asked the driver to notify it (EVENT_IDX).
    fn avail_event(&self) -> u16 {
        self.mem
            .read_obj(GuestAddress(USED_RING + 4 + 8 * 16))
            .unwrap()
    }

    fn fill(&self, addr: u64, len: usize, byte: u8) {
        self.mem
            .write_slice(&vec![byte; len], GuestAddress(addr))
            .unwrap();
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }
}

fn scratch(name: &str) -> PathBuf {
    // On disk, not tmpfs: direct I/O needs a file system that offers it.
    std::env::temp_dir().join(format!("vireo-blk-ring-{}-{name}", std::process::id()))
}

/// Writes through the ring (aligned, misaligned and split buffers, a flush queued behind
/// them), then reads back into misaligned buffers; the file holds what the guest wrote.
fn writes_reach_the_file_and_read_back(cache: CacheMode) {
    let path = scratch(&format!("raw-{}", cache.name()));
    std::fs::write(&path, vec![0x11u8; 1 << 20]).unwrap();
    let Some(mut rig) = Rig::new(&path, None, false, cache) else {
        return;
    };
    rig.fill(0x20000, 4096, 0xa1);
    rig.fill(0x30003, 512, 0xb2);
    rig.fill(0x31000, 1024, 0xc3);
    rig.fill(0x32200, 512, 0xd4);
    let answers = rig.run(&[
        Req(OUT, 0, vec![(0x20000, 4096)]),
        Req(OUT, 8, vec![(0x30003, 512), (0x31000, 1024)]),
        Req(OUT, 2047, vec![(0x32200, 512)]),
        Req(FLUSH, 0, vec![]),
    ]);
    assert_eq!(answers, vec![(Status::Ok as u8, 1); 4]);
    let mut expect = vec![0x11u8; 1 << 20];
    expect[..4096].fill(0xa1);
    expect[8 * 512..9 * 512].fill(0xb2);
    expect[9 * 512..11 * 512].fill(0xc3);
    expect[2047 * 512..].fill(0xd4);
    assert!(
        std::fs::read(&path).unwrap() == expect,
        "the file holds the guest's writes"
    );

    let answers = rig.run(&[
        Req(IN, 0, vec![(0x40005, 4096)]),
        Req(IN, 7, vec![(0x50000, 1024), (0x60001, 1024)]),
        Req(IN, 2048, vec![(0x70000, 512)]),
    ]);
    assert_eq!(answers[0], (Status::Ok as u8, 4097));
    assert_eq!(answers[1], (Status::Ok as u8, 2049));
    assert_eq!(
        answers[2].0,
        Status::IoErr as u8,
        "past the end of the disk"
    );
    assert_eq!(rig.read(0x40005, 4096), &expect[..4096]);
    assert_eq!(rig.read(0x50000, 1024), &expect[7 * 512..9 * 512]);
    assert_eq!(rig.read(0x60001, 1024), &expect[9 * 512..11 * 512]);
    let counted = rig.server.requests.disk.counters.read();
    assert_eq!(
        (counted.writes, counted.written_bytes),
        (3, 4096 + 1536 + 512)
    );
    // The read past the end counts too, as the worker counts it.
    assert_eq!((counted.reads, counted.read_bytes), (3, 4096 + 2048 + 512));
    assert!(!rig.server.requests.signals.is_broken());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn writes_through_the_ring_reach_the_file_with_cache_writeback() {
    writes_reach_the_file_and_read_back(CacheMode::Writeback);
}

#[test]
fn writes_through_the_ring_reach_the_file_with_cache_none() {
    writes_reach_the_file_and_read_back(CacheMode::None);
}

/// A qcow2 image with cache=none: writes that allocate (on the worker) and overwrites (through
/// the ring) give the image qemu-img reads as the guest's data.
#[test]
fn a_qcow2_image_written_with_cache_none_matches_for_qemu_img() {
    use vireo_disk::qcow2::{create, CreateOptions};
    let path = scratch("image.qcow2");
    let model = scratch("model.raw");
    create(&path, &CreateOptions::new(1 << 20)).unwrap();
    let Some(mut rig) = Rig::new(&path, Some(DiskFormat::Qcow2), false, CacheMode::None) else {
        return;
    };
    rig.fill(0x20000, 8192, 0x5a);
    rig.fill(0x30007, 1024, 0x6b);
    let first = rig.run(&[
        Req(OUT, 16, vec![(0x20000, 8192)]),
        Req(OUT, 1000, vec![(0x30007, 1024)]),
    ]);
    rig.fill(0x20000, 4096, 0x7c);
    let second = rig.run(&[Req(OUT, 20, vec![(0x20000, 4096)]), Req(FLUSH, 0, vec![])]);
    assert!(first
        .iter()
        .chain(&second)
        .all(|a| *a == (Status::Ok as u8, 1)));
    drop(rig);
    let mut expect = vec![0u8; 1 << 20];
    expect[16 * 512..32 * 512].fill(0x5a);
    expect[20 * 512..28 * 512].fill(0x7c);
    expect[1000 * 512..1002 * 512].fill(0x6b);
    std::fs::write(&model, &expect).unwrap();
    let compared = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "raw"])
        .arg(&path)
        .arg(&model)
        .output()
        .unwrap();
    assert!(compared.status.success(), "{compared:?}");
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&model).unwrap();
}

/// A read of a qcow2 range no cluster backs has no I/O for the ring: it is answered (zeros)
/// all the same.
#[test]
fn a_read_of_unallocated_qcow2_clusters_is_answered_with_zeros() {
    use vireo_disk::qcow2::{create, CreateOptions};
    let path = scratch("hole.qcow2");
    create(&path, &CreateOptions::new(1 << 20)).unwrap();
    let Some(mut rig) = Rig::new(&path, Some(DiskFormat::Qcow2), false, CacheMode::None) else {
        return;
    };
    rig.fill(0x20000, 4096, 0xee);
    let answers = rig.run(&[Req(IN, 64, vec![(0x20000, 4096)])]);
    assert_eq!(answers, [(Status::Ok as u8, 4097)]);
    assert_eq!(rig.read(0x20000, 4096), vec![0u8; 4096]);
    std::fs::remove_file(&path).unwrap();
}

/// Chains the thread path refuses are refused through the ring too.
#[test]
fn hostile_chains_are_refused_through_the_ring() {
    let path = scratch("hostile");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let Some(mut rig) = Rig::new(&path, Some(DiskFormat::Raw), true, CacheMode::None) else {
        return;
    };
    let answers = rig.run(&[
        Req(OUT, 0, vec![(0x20000, 512)]),
        Req(IN, 0, vec![(0x20000, 100)]),
        Req(IN, u64::MAX / 256, vec![(0x20000, 512)]),
    ]);
    assert_eq!(answers[0].0, Status::IoErr as u8, "read-only");
    assert_eq!(answers[1].0, Status::IoErr as u8, "not a whole sector");
    assert_eq!(answers[2].0, Status::IoErr as u8, "offset overflows");
    assert!(!rig.server.requests.signals.is_broken());
    // A data buffer outside guest memory breaks the device, answering nothing.
    set_desc(&rig.mem, 0, HEADERS, 16, NEXT, 1);
    rig.mem.write_obj(IN, GuestAddress(HEADERS)).unwrap();
    set_desc(&rig.mem, 1, 0x7fff_ffff_0000, 512, NEXT | WRITE, 2);
    set_desc(&rig.mem, 2, STATUSES, 1, WRITE, 0);
    rig.mem
        .write_obj(
            0u16,
            GuestAddress(AVAIL_RING + 4 + 2 * u64::from(rig.published % 16)),
        )
        .unwrap();
    set_avail_idx(&rig.mem, rig.published + 1);
    rig.server.serve(&rig.image);
    assert!(rig.server.requests.signals.is_broken());
    assert_eq!(used_idx(&rig.mem), rig.published);
    std::fs::remove_file(&path).unwrap();
}

/// With EVENT_IDX, the device asks the driver to notify it only once nothing is in flight:
/// while the ring has I/O, each completion wakes the worker, which looks at the queue then
/// (the driver publishes without exiting to the VMM); once the last request is answered and the
/// queue is empty, the driver is asked to notify at the next request.
#[test]
fn the_driver_is_asked_to_notify_only_when_nothing_is_in_flight() {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::BorrowedFd;
    let path = scratch("notify");
    std::fs::write(&path, vec![0x22u8; 1 << 20]).unwrap();
    let Some(mut rig) = Rig::new(&path, Some(DiskFormat::Raw), false, CacheMode::None) else {
        return;
    };
    lock(&rig.server.requests.queue).set_event_idx(true);
    let reads: Vec<Req> = (0..4)
        .map(|i| Req(IN, 8 * i, vec![(0x20000 + 0x1000 * i, 4096)]))
        .collect();
    rig.publish(&reads);
    loop {
        rig.server.serve(&rig.image);
        if !rig.server.ring.busy() {
            break;
        }
        assert_eq!(rig.avail_event(), 0, "not asked while I/O is in flight");
        // SAFETY: the ring's eventfd, open while the rig lives.
        let completions = unsafe { BorrowedFd::borrow_raw(rig.server.ring.completions()) };
        let mut ready = [PollFd::new(completions, PollFlags::POLLIN)];
        poll(&mut ready, PollTimeout::NONE).unwrap();
        rig.server.ring.acknowledge();
    }
    assert_eq!(used_idx(&rig.mem), 4, "every read answered");
    assert_eq!(rig.avail_event(), 4, "asked to notify at the next request");
    for i in 0..4 {
        assert_eq!(rig.read(0x20000 + 0x1000 * i, 4096), vec![0x22u8; 4096]);
    }
    std::fs::remove_file(&path).unwrap();
}
