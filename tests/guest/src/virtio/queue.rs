//! A split virtqueue (virtio 1.x §2.7) in DMA memory, driven from ring 3 at native speed:
//! descriptors are written in place, avail entries published in batches, the used ring polled.
//! With EVENT_IDX, `kick` notifies only when the device asked for it (avail_event), and
//! `request_interrupt` sets used_event so the device interrupts only when we are about to sleep.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use crate::dma::{self, DmaError, DmaRegion};

/// Descriptor flag: the chain continues at `next`.
pub const DESC_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const DESC_WRITE: u16 = 2;

const DESCRIPTOR_SIZE: u64 = 16;
const RING_HEADER: u64 = 4;
const USED_ELEMENT_SIZE: u64 = 8;
const PAGE: u64 = 4096;

/// A used-ring entry: the head of a finished chain and the bytes the device wrote.
#[derive(Clone, Copy, Debug)]
pub struct Used {
    /// Head descriptor index of the chain.
    pub id: u16,
    /// Bytes written into the chain's device-writable buffers.
    pub len: u32,
}

/// One split virtqueue.
pub struct Virtqueue {
    size: u16,
    memory: DmaRegion,
    avail_offset: u64,
    used_offset: u64,
    notify_register: u64,
    index: u16,
    /// Next free avail slot (our copy of avail.idx).
    avail_idx: u16,
    /// avail.idx at the last kick decision.
    kicked_idx: u16,
    /// Next used entry to consume.
    used_seen: u16,
}

impl Virtqueue {
    /// A zeroed queue of `size` entries (a power of two) for queue `index`, notified by
    /// writing `index` to `notify_register` (QueueNotify, mapped into ring 3).
    pub fn new(size: u16, index: u16, notify_register: u64) -> Result<Virtqueue, DmaError> {
        let entries = u64::from(size);
        let avail_offset = DESCRIPTOR_SIZE * entries;
        let avail_len = RING_HEADER + 2 * entries + 2;
        let used_offset = (avail_offset + avail_len).next_multiple_of(PAGE);
        let used_len = RING_HEADER + USED_ELEMENT_SIZE * entries + 2;
        let memory = dma::alloc((used_offset + used_len) as usize, PAGE)?;
        Ok(Virtqueue {
            size,
            memory,
            avail_offset,
            used_offset,
            notify_register,
            index,
            avail_idx: 0,
            kicked_idx: 0,
            used_seen: 0,
        })
    }

    /// Number of descriptors.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Physical addresses of the descriptor table, the avail ring and the used ring.
    pub fn addresses(&self) -> (u64, u64, u64) {
        let base = self.memory.addr();
        (base, base + self.avail_offset, base + self.used_offset)
    }

    /// Writes descriptor `index`.
    pub fn set_descriptor(&mut self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        assert!(index < self.size, "descriptor {index} outside the table");
        let at = self.memory.addr() + DESCRIPTOR_SIZE * u64::from(index);
        // SAFETY: inside our DMA region; the device does not own a descriptor we rewrite.
        unsafe {
            write_volatile(at as *mut u64, addr);
            write_volatile((at + 8) as *mut u32, len);
            write_volatile((at + 12) as *mut u16, flags);
            write_volatile((at + 14) as *mut u16, next);
        }
    }

    /// Puts the chain starting at `head` in the avail ring (the device sees it after `kick`).
    pub fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        self.write_u16(self.avail_offset + RING_HEADER + 2 * slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Makes published chains visible and notifies the device if it asked to be (EVENT_IDX).
    /// Returns whether a notification was sent.
    pub fn kick(&mut self) -> bool {
        if self.avail_idx == self.kicked_idx {
            return false;
        }
        fence(Ordering::Release);
        self.write_u16(self.avail_offset + 2, self.avail_idx);
        // The device may be reading avail_event right now: order our index before its read.
        fence(Ordering::SeqCst);
        let avail_event = self
            .read_u16(self.used_offset + RING_HEADER + USED_ELEMENT_SIZE * u64::from(self.size));
        let notify = needs_event(avail_event, self.avail_idx, self.kicked_idx);
        self.kicked_idx = self.avail_idx;
        if notify {
            // SAFETY: the QueueNotify register of our device, user-mapped (uncached) MMIO.
            unsafe { write_volatile(self.notify_register as *mut u32, u32::from(self.index)) };
        }
        notify
    }

    /// Whether the device has returned a chain we have not consumed.
    pub fn has_used(&self) -> bool {
        self.read_u16(self.used_offset + 2) != self.used_seen
    }

    /// The next chain the device returned, if any.
    pub fn pop_used(&mut self) -> Option<Used> {
        if !self.has_used() {
            return None;
        }
        fence(Ordering::Acquire);
        let slot = u64::from(self.used_seen % self.size);
        let at = self.used_offset + RING_HEADER + USED_ELEMENT_SIZE * slot;
        // SAFETY: inside our DMA region; the device published this entry before the index.
        let (id, len) = unsafe {
            let base = self.memory.addr() + at;
            (
                read_volatile(base as *const u32),
                read_volatile((base + 4) as *const u32),
            )
        };
        self.used_seen = self.used_seen.wrapping_add(1);
        Some(Used { id: id as u16, len })
    }

    /// Asks for an interrupt at the next used entry (used_event); returns false if one is
    /// already there (then no interrupt may come for it: do not sleep).
    pub fn request_interrupt(&mut self) -> bool {
        self.write_u16(
            self.avail_offset + RING_HEADER + 2 * u64::from(self.size),
            self.used_seen,
        );
        fence(Ordering::SeqCst);
        !self.has_used()
    }

    fn read_u16(&self, offset: u64) -> u16 {
        // SAFETY: callers pass offsets inside our DMA region.
        unsafe { read_volatile((self.memory.addr() + offset) as *const u16) }
    }

    fn write_u16(&mut self, offset: u64, value: u16) {
        // SAFETY: callers pass offsets inside our DMA region.
        unsafe { write_volatile((self.memory.addr() + offset) as *mut u16, value) }
    }
}

/// virtio's `vring_need_event`: whether moving an index from `old` to `new` passes `event`.
fn needs_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}
