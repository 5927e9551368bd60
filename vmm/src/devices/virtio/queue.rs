//! Checked virtqueue access. virtio-queue's `pop_descriptor_chain` silently yields nothing on a
//! bad avail index or head, and its chain iterator silently stops at a loop; here each of those
//! is a `QueueError`, which the device answers by marking itself broken (DEVICE_NEEDS_RESET).

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::vstate::host_writes;

/// One descriptor of a chain, validated to lie inside guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Guest address of the buffer.
    pub addr: GuestAddress,
    /// Its length.
    pub len: u32,
    /// Whether the device may write it (else it may only read it).
    pub writable: bool,
}

/// A descriptor chain taken from the avail ring.
#[derive(Debug, PartialEq, Eq)]
pub struct Chain {
    /// Index of the head descriptor (what goes back in the used ring).
    pub head: u16,
    /// The descriptors in order.
    pub descriptors: Vec<Descriptor>,
}

/// The driver broke the virtqueue rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    /// The avail ring could not be read.
    #[error("cannot read the avail ring")]
    AvailRing,
    /// The avail index moved by more than the queue holds.
    #[error("avail index jumped from {next} to {avail}, more than the queue size {size}")]
    AvailIndexJump {
        /// Next entry the device expected.
        next: u16,
        /// Index the driver published.
        avail: u16,
        /// Queue size.
        size: u16,
    },
    /// An avail entry named no valid descriptor (or could not be read).
    #[error("avail ring names descriptor {0}, outside the table")]
    BadHead(u16),
    /// A chain loops, or is longer than the queue, or jumps outside the table.
    #[error(
        "descriptor chain from head {0} loops, runs past the table or is longer than the queue"
    )]
    ChainLoop(u16),
    /// A descriptor points outside guest memory.
    #[error("descriptor at {addr:#x} of {len} bytes lies outside guest memory")]
    OutsideMemory {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// The used ring could not be written.
    #[error("cannot write the used ring")]
    UsedRing,
}

/// Takes the next available chain, if any, checking the avail index and every descriptor.
pub fn pop_chain(queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<Option<Chain>, QueueError> {
    take_chain(queue, mem, true)
}

/// Like [`pop_chain`], but when no chain is available the driver's notifications stay as they
/// are: for a device that looks at the queue again without being told (one with I/O in flight,
/// whose completion wakes it), so that the driver need not exit to notify it.
pub fn pop_chain_unarmed(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
) -> Result<Option<Chain>, QueueError> {
    take_chain(queue, mem, false)
}

/// The next chain; with `arm`, a drained queue asks the driver to notify again.
fn take_chain(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    arm: bool,
) -> Result<Option<Chain>, QueueError> {
    record_used_ring(queue);
    let mut avail = queue
        .avail_idx(mem, Ordering::Acquire)
        .map_err(|_| QueueError::AvailRing)?;
    let next = Wrapping(queue.next_avail());
    if avail == next {
        // Drained: publish avail_event (EVENT_IDX) so the driver notifies again, then re-check.
        if !arm
            || !queue
                .enable_notification(mem)
                .map_err(|_| QueueError::AvailRing)?
        {
            return Ok(None);
        }
        avail = queue
            .avail_idx(mem, Ordering::Acquire)
            .map_err(|_| QueueError::AvailRing)?;
    }
    if (avail - next).0 > queue.size() {
        return Err(QueueError::AvailIndexJump {
            next: next.0,
            avail: avail.0,
            size: queue.size(),
        });
    }
    let Some(chain) = queue.pop_descriptor_chain(mem) else {
        return Err(QueueError::AvailRing);
    };
    let head = chain.head_index();
    if head >= queue.size() {
        return Err(QueueError::BadHead(head));
    }
    let mut descriptors = Vec::new();
    let mut terminated = false;
    for desc in chain {
        let (addr, len) = (desc.addr(), desc.len());
        if len > 0 && !mem.check_range(addr, len as usize) {
            return Err(QueueError::OutsideMemory { addr: addr.0, len });
        }
        descriptors.push(Descriptor {
            addr,
            len,
            writable: desc.is_write_only(),
        });
        terminated = !desc.has_next();
    }
    // The iterator stops silently on a loop (its time-to-live runs out) or a next index past the
    // table; a proper chain ends with a descriptor without NEXT.
    if !terminated {
        return Err(QueueError::ChainLoop(head));
    }
    for desc in descriptors.iter().filter(|d| d.writable) {
        host_writes::record(desc.addr.0, desc.len.into());
    }
    Ok(Some(Chain { head, descriptors }))
}

/// Records the used ring (with its avail_event field) as written by the device.
fn record_used_ring(queue: &Queue) {
    let bytes = 6 + 8 * u64::from(queue.size()) + 2;
    host_writes::record(queue.used_ring(), bytes);
}

/// Returns a chain to the driver with `len` bytes written.
pub fn add_used(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
) -> Result<(), QueueError> {
    record_used_ring(queue);
    queue
        .add_used(mem, head, len)
        .map_err(|_| QueueError::UsedRing)
}

/// Whether the driver wants an interrupt for the buffers used so far.
pub fn needs_notification(queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
    // If the event index cannot be read, interrupt: an extra interrupt is harmless.
    queue.needs_notification(mem).unwrap_or(true)
}

#[cfg(test)]
pub mod testing {
    //! Hand-built split virtqueues in a small guest memory, for device tests.
    use super::*;
    use vm_memory::Bytes;

    /// Guest address of the descriptor table.
    pub const DESC_TABLE: u64 = 0x1000;
    /// Guest address of the avail ring.
    pub const AVAIL_RING: u64 = 0x2000;
    /// Guest address of the used ring.
    pub const USED_RING: u64 = 0x3000;
    /// Where tests put buffers.
    pub const BUFFERS: u64 = 0x10000;
    /// VIRTQ_DESC_F_NEXT.
    pub const NEXT: u16 = 1;
    /// VIRTQ_DESC_F_WRITE.
    pub const WRITE: u16 = 2;

    /// 1 MiB of guest memory.
    pub fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    /// Where one test queue's descriptor table and rings live.
    #[derive(Clone, Copy)]
    pub struct Rings {
        /// Descriptor table.
        pub desc: u64,
        /// Avail ring.
        pub avail: u64,
        /// Used ring.
        pub used: u64,
    }

    /// The rings of the first test queue.
    pub const FIRST: Rings = Rings {
        desc: DESC_TABLE,
        avail: AVAIL_RING,
        used: USED_RING,
    };
    /// The rings of a second test queue (TX of a two-queue device).
    pub const SECOND: Rings = Rings {
        desc: 0x4000,
        avail: 0x5000,
        used: 0x6000,
    };

    /// A ready queue of `size` entries at the first queue's rings.
    pub fn queue(size: u16) -> Queue {
        queue_at(size, FIRST)
    }

    /// A ready queue of `size` entries at `rings`.
    pub fn queue_at(size: u16, rings: Rings) -> Queue {
        let mut q = Queue::new(size).unwrap();
        q.set_size(size);
        q.set_desc_table_address(Some(rings.desc as u32), Some(0));
        q.set_avail_ring_address(Some(rings.avail as u32), Some(0));
        q.set_used_ring_address(Some(rings.used as u32), Some(0));
        q.set_ready(true);
        q
    }

    /// Writes descriptor `index` of the first queue.
    pub fn set_desc(mem: &GuestMemoryMmap, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        set_desc_in(mem, FIRST, index, addr, len, flags, next);
    }

    /// Writes descriptor `index` of the queue at `rings`.
    pub fn set_desc_in(
        mem: &GuestMemoryMmap,
        rings: Rings,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = rings.desc + u64::from(index) * 16;
        mem.write_obj(addr, GuestAddress(at)).unwrap();
        mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Publishes `heads` in the first queue's avail ring and sets its index to `heads.len()`.
    pub fn publish(mem: &GuestMemoryMmap, heads: &[u16]) {
        publish_in(mem, FIRST, heads);
    }

    /// Publishes `heads` in the avail ring at `rings`.
    pub fn publish_in(mem: &GuestMemoryMmap, rings: Rings, heads: &[u16]) {
        for (slot, head) in heads.iter().enumerate() {
            mem.write_obj(*head, GuestAddress(rings.avail + 4 + 2 * slot as u64))
                .unwrap();
        }
        mem.write_obj(heads.len() as u16, GuestAddress(rings.avail + 2))
            .unwrap();
    }

    /// Sets the avail index directly (to build hostile queues).
    pub fn set_avail_idx(mem: &GuestMemoryMmap, idx: u16) {
        mem.write_obj(idx, GuestAddress(AVAIL_RING + 2)).unwrap();
    }

    /// The used index the device published in the first queue.
    pub fn used_idx(mem: &GuestMemoryMmap) -> u16 {
        used_idx_in(mem, FIRST)
    }

    /// The used index the device published in the queue at `rings`.
    pub fn used_idx_in(mem: &GuestMemoryMmap, rings: Rings) -> u16 {
        mem.read_obj(GuestAddress(rings.used + 2)).unwrap()
    }

    /// Used ring entry `slot`: (id, len).
    pub fn used_entry(mem: &GuestMemoryMmap, slot: u16) -> (u32, u32) {
        let at = USED_RING + 4 + 8 * u64::from(slot);
        (
            mem.read_obj(GuestAddress(at)).unwrap(),
            mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn a_well_formed_chain_is_returned_in_order() {
        let mem = memory();
        let mut q = queue(8);
        set_desc(&mem, 0, BUFFERS, 16, NEXT, 1);
        set_desc(&mem, 1, BUFFERS + 0x1000, 512, NEXT | WRITE, 2);
        set_desc(&mem, 2, BUFFERS + 0x2000, 1, WRITE, 0);
        publish(&mem, &[0]);
        let chain = pop_chain(&mut q, &mem).unwrap().unwrap();
        assert_eq!(chain.head, 0);
        assert_eq!(chain.descriptors.len(), 3);
        assert!(!chain.descriptors[0].writable && chain.descriptors[2].writable);
        assert_eq!(pop_chain(&mut q, &mem), Ok(None));
    }

    #[test]
    fn a_descriptor_loop_is_detected() {
        let mem = memory();
        let mut q = queue(4);
        set_desc(&mem, 0, BUFFERS, 16, NEXT, 1);
        set_desc(&mem, 1, BUFFERS, 16, NEXT, 0);
        publish(&mem, &[0]);
        assert_eq!(pop_chain(&mut q, &mem), Err(QueueError::ChainLoop(0)));
    }

    #[test]
    fn a_next_index_past_the_table_is_detected() {
        let mem = memory();
        let mut q = queue(4);
        set_desc(&mem, 0, BUFFERS, 16, NEXT, 200);
        publish(&mem, &[0]);
        assert_eq!(pop_chain(&mut q, &mem), Err(QueueError::ChainLoop(0)));
    }

    #[test]
    fn a_buffer_outside_guest_memory_is_detected() {
        let mem = memory();
        let mut q = queue(4);
        set_desc(&mem, 0, 0xffff_0000_0000, 4096, 0, 0);
        publish(&mem, &[0]);
        assert!(matches!(
            pop_chain(&mut q, &mem),
            Err(QueueError::OutsideMemory { .. })
        ));
        // A buffer straddling the end of memory is outside too.
        let mut q = queue(4);
        set_desc(&mem, 0, (1 << 20) - 8, 16, 0, 0);
        publish(&mem, &[0]);
        assert!(matches!(
            pop_chain(&mut q, &mem),
            Err(QueueError::OutsideMemory { .. })
        ));
    }

    #[test]
    fn an_avail_index_jump_is_detected() {
        let mem = memory();
        let mut q = queue(4);
        set_avail_idx(&mem, 5);
        assert_eq!(
            pop_chain(&mut q, &mem),
            Err(QueueError::AvailIndexJump {
                next: 0,
                avail: 5,
                size: 4
            })
        );
    }

    #[test]
    fn a_head_outside_the_table_is_detected() {
        let mem = memory();
        let mut q = queue(4);
        publish(&mem, &[9]);
        assert_eq!(pop_chain(&mut q, &mem), Err(QueueError::BadHead(9)));
    }

    #[test]
    fn used_entries_reach_the_used_ring() {
        let mem = memory();
        let mut q = queue(4);
        set_desc(&mem, 2, BUFFERS, 16, 0, 0);
        publish(&mem, &[2]);
        let chain = pop_chain(&mut q, &mem).unwrap().unwrap();
        add_used(&mut q, &mem, chain.head, 7).unwrap();
        assert_eq!(used_idx(&mem), 1);
        assert_eq!(used_entry(&mem, 0), (2, 7));
    }
}
