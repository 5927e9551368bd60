//! Buffer pools for devices that move bytes or frames (console, network), one descriptor per
//! buffer (descriptor i is buffer i): `RxPool` keeps every buffer posted for the device to
//! fill and re-posts each one once handled; `TxSlots` sends from a set of buffers, reclaiming
//! those the device has finished with.

use super::mmio::Transport;
use super::queue::{Virtqueue, DESC_WRITE};
use crate::dma::{self, DmaError, DmaRegion};
use crate::io::Io;

/// Most buffers in a pool (the busy set of `TxSlots` is a u64).
pub const MAX_BUFFERS: u16 = 64;

/// Receive buffers, all posted to the device.
pub struct RxPool {
    queue: Virtqueue,
    buffers: DmaRegion,
    size: usize,
}

impl RxPool {
    /// Posts `count` buffers of `size` bytes on `queue`.
    pub fn new(mut queue: Virtqueue, count: u16, size: usize) -> Result<RxPool, DmaError> {
        let count = count.min(queue.size()).min(MAX_BUFFERS);
        let buffers = dma::alloc(usize::from(count) * size, 4096)?;
        for index in 0..count {
            let addr = buffers.addr() + (usize::from(index) * size) as u64;
            queue.set_descriptor(index, addr, size as u32, DESC_WRITE, 0);
            queue.publish(index);
        }
        queue.kick();
        Ok(RxPool {
            queue,
            buffers,
            size,
        })
    }

    /// Hands every filled buffer to `handle` (its bytes), re-posts it, and tells the device.
    /// Returns how many buffers were handled.
    pub fn receive(&mut self, mut handle: impl FnMut(&[u8])) -> usize {
        let mut handled = 0;
        while let Some(used) = self.queue.pop_used() {
            let start = usize::from(used.id) * self.size;
            let len = (used.len as usize).min(self.size);
            if let Some(bytes) = self.buffers.bytes().get(start..start + len) {
                handle(bytes);
            }
            self.queue.publish(used.id);
            handled += 1;
        }
        self.queue.kick();
        handled
    }

    /// Asks for an interrupt when the next buffer is filled; false if one already is.
    pub fn request_interrupt(&mut self) -> bool {
        self.queue.request_interrupt()
    }
}

/// Transmit buffers.
pub struct TxSlots {
    queue: Virtqueue,
    buffers: DmaRegion,
    count: u16,
    size: usize,
    busy: u64,
    next: u16,
}

impl TxSlots {
    /// `count` buffers of `size` bytes for `queue`.
    pub fn new(queue: Virtqueue, count: u16, size: usize) -> Result<TxSlots, DmaError> {
        let count = count.min(queue.size()).min(MAX_BUFFERS);
        let buffers = dma::alloc(usize::from(count) * size, 4096)?;
        Ok(TxSlots {
            queue,
            buffers,
            count,
            size,
            busy: 0,
            next: 0,
        })
    }

    /// Bytes one buffer holds.
    pub fn buffer_size(&self) -> usize {
        self.size
    }

    /// Sends one buffer that `fill` writes (it returns the length used), waiting for a free
    /// buffer if all are in flight.
    pub fn send(
        &mut self,
        io: &mut Io,
        transport: &mut Transport,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) {
        let index = self.next;
        while self.busy & 1 << index != 0 {
            self.reclaim();
            if self.busy & 1 << index != 0 {
                transport.wait_for_used(io, &mut self.queue);
            }
        }
        let start = usize::from(index) * self.size;
        let len = fill(&mut self.buffers.bytes_mut()[start..start + self.size]).min(self.size);
        let addr = self.buffers.addr() + start as u64;
        self.queue.set_descriptor(index, addr, len as u32, 0, 0);
        self.queue.publish(index);
        self.queue.kick();
        self.busy |= 1 << index;
        self.next = (index + 1) % self.count;
    }

    /// Returns once the device has finished with every buffer sent.
    pub fn wait_until_sent(&mut self, io: &mut Io, transport: &mut Transport) {
        self.reclaim();
        while self.busy != 0 {
            transport.wait_for_used(io, &mut self.queue);
            self.reclaim();
        }
    }

    fn reclaim(&mut self) {
        while let Some(used) = self.queue.pop_used() {
            self.busy &= !(1 << used.id);
        }
    }
}
