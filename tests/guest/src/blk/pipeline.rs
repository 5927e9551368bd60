//! Streams transfers through a disk's slots: up to `depth` requests in flight, each slot using
//! its own `chunk`-byte piece of a staging buffer. Completions are handled in submission order
//! (so checksums see the bytes in disk order) or, where order does not matter (benchmarks), as
//! they come, so that a slow request holds up no slot but its own. Every request found done is
//! handled before the slots are refilled, with one kick per refill: exits stay few.

use super::{Disk, Status, Transfer, MAX_DEPTH};
use crate::dma::DmaRegion;
use crate::io::Io;

/// How transfers are staged.
pub struct Staging<'a> {
    /// Buffer split into per-slot chunks (None for requests without data).
    pub buffer: Option<&'a mut DmaRegion>,
    /// Requests in flight at most.
    pub depth: usize,
    /// Bytes of buffer per slot.
    pub chunk: usize,
    /// In which order completions are handed to `done`.
    pub order: Order,
}

/// In which order completions are handled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// In submission order.
    Submission,
    /// As they come.
    Completion,
}

/// Runs the transfers `next` produces (it fills the slot's chunk for writes; `None` ends the
/// stream) and hands each completion to `done` with its status and chunk. The first error
/// `done` returns stops submission; requests already in flight are waited for, then it is
/// returned. Returns the number of completed transfers.
pub fn run<E>(
    disk: &mut Disk,
    io: &mut Io,
    staging: Staging,
    mut next: impl FnMut(&mut [u8]) -> Option<Transfer>,
    mut done: impl FnMut(&Transfer, Status, &[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let depth = staging.depth.clamp(1, disk.depth());
    let chunk = staging.chunk;
    let mut buffer = staging.buffer;
    let capacity = buffer.as_ref().map_or(0, |b| b.len());
    assert!(depth * chunk <= capacity, "staging buffer too small");
    let base = buffer.as_ref().map_or(0, |b| b.addr());
    let mut pending: [Option<Transfer>; MAX_DEPTH] = [None; MAX_DEPTH];
    let mut slots = Slots::new(depth);
    let mut finished = 0u64;
    let mut result = Ok(());
    loop {
        while result.is_ok() {
            let Some(slot) = slots.free() else { break };
            let piece = match buffer.as_mut() {
                Some(buffer) => &mut buffer.bytes_mut()[slot * chunk..(slot + 1) * chunk],
                None => &mut [],
            };
            let Some(transfer) = next(piece) else { break };
            assert!(transfer.data_bytes() <= chunk, "transfer beyond its chunk");
            disk.submit(slot, &transfer, base + (slot * chunk) as u64);
            pending[slot] = Some(transfer);
            slots.submitted(slot);
        }
        disk.kick();
        if slots.in_flight == 0 {
            return result.map(|()| finished);
        }
        // Wait for one completion, then take every other one already there before refilling:
        // the freed slots go to the device together.
        let mut completion = Some(slots.wait(disk, io, staging.order));
        while let Some((slot, status)) = completion {
            slots.completed(slot);
            finished += 1;
            if let (Ok(()), Some(transfer)) = (&result, pending[slot].take()) {
                let piece = match buffer.as_ref() {
                    Some(buffer) => &buffer.bytes()[slot * chunk..(slot + 1) * chunk],
                    None => &[],
                };
                result = done(&transfer, status, piece);
            }
            completion = slots.poll(disk, staging.order);
        }
    }
}

/// Which slots are free, and the slots in flight in submission order.
struct Slots {
    depth: usize,
    /// Free slots: `free[..free_count]`.
    free: [usize; MAX_DEPTH],
    free_count: usize,
    /// Slots in flight, oldest first: a ring from `oldest`.
    flight: [usize; MAX_DEPTH],
    oldest: usize,
    in_flight: usize,
}

impl Slots {
    fn new(depth: usize) -> Slots {
        Slots {
            depth,
            free: core::array::from_fn(|i| i),
            free_count: depth,
            flight: [0; MAX_DEPTH],
            oldest: 0,
            in_flight: 0,
        }
    }

    /// A free slot, if any (it stays free until `submitted`).
    fn free(&self) -> Option<usize> {
        self.free_count.checked_sub(1).map(|last| self.free[last])
    }

    fn submitted(&mut self, slot: usize) {
        self.free_count -= 1;
        self.flight[(self.oldest + self.in_flight) % self.depth] = slot;
        self.in_flight += 1;
    }

    /// Frees `slot`, which completed (the oldest in flight when completions come in order).
    fn completed(&mut self, slot: usize) {
        let at = (0..self.in_flight)
            .map(|i| (self.oldest + i) % self.depth)
            .find(|&at| self.flight[at] == slot)
            .expect("completed slot in flight");
        // Close the gap: move the older slots up by one.
        let mut at = at;
        while at != self.oldest {
            let before = (at + self.depth - 1) % self.depth;
            self.flight[at] = self.flight[before];
            at = before;
        }
        self.oldest = (self.oldest + 1) % self.depth;
        self.in_flight -= 1;
        self.free[self.free_count] = slot;
        self.free_count += 1;
    }

    /// The next completion in `order`, waiting for it.
    fn wait(&self, disk: &mut Disk, io: &mut Io, order: Order) -> (usize, Status) {
        match order {
            Order::Submission => {
                let slot = self.flight[self.oldest];
                (slot, disk.wait_for_slot(io, slot))
            }
            Order::Completion => disk.wait_for_any(io),
        }
    }

    /// The next completion in `order` if it is already there.
    fn poll(&self, disk: &mut Disk, order: Order) -> Option<(usize, Status)> {
        if self.in_flight == 0 {
            return None;
        }
        match order {
            Order::Submission => {
                let slot = self.flight[self.oldest];
                disk.slot_status(slot).map(|status| (slot, status))
            }
            Order::Completion => disk.any_done(),
        }
    }
}
