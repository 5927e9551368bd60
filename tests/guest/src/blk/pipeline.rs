//! Streams transfers through a disk's slots: up to `depth` requests in flight, slot s using
//! its own `chunk`-byte piece of a staging buffer, completions handled in submission order
//! (so checksums see the bytes in disk order). Every request found done is handled before the
//! slots are refilled, with one kick per refill: exits stay few.

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
    let (mut submitted, mut finished) = (0usize, 0usize);
    let mut result = Ok(());
    loop {
        while result.is_ok() && submitted - finished < depth {
            let slot = submitted % depth;
            let piece = match buffer.as_mut() {
                Some(buffer) => &mut buffer.bytes_mut()[slot * chunk..(slot + 1) * chunk],
                None => &mut [],
            };
            let Some(transfer) = next(piece) else { break };
            assert!(transfer.data_bytes() <= chunk, "transfer beyond its chunk");
            disk.submit(slot, &transfer, base + (slot * chunk) as u64);
            pending[slot] = Some(transfer);
            submitted += 1;
        }
        disk.kick();
        if submitted == finished {
            return result.map(|()| finished as u64);
        }
        // Wait for the oldest request, then take every later one already done, in order,
        // before refilling: the freed slots go to the device together, with one kick.
        let mut status = Some(disk.wait_for_slot(io, finished % depth));
        while let Some(slot_status) = status {
            let slot = finished % depth;
            finished += 1;
            if let (Ok(()), Some(transfer)) = (&result, pending[slot].take()) {
                let piece = match buffer.as_ref() {
                    Some(buffer) => &buffer.bytes()[slot * chunk..(slot + 1) * chunk],
                    None => &[],
                };
                result = done(&transfer, slot_status, piece);
            }
            status = (finished < submitted)
                .then(|| disk.slot_status(finished % depth))
                .flatten();
        }
    }
}
