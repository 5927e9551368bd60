//! Drives the virtqueue devices with queues built from arbitrary bytes: the cargo-fuzz target
//! (vmm/fuzz) and the randomized test below share it. Whatever the bytes, a device may answer
//! with error statuses or mark itself broken, but must neither panic nor hang.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::block::serve_queue;
use super::DeviceSignals;

const MEMORY_SIZE: usize = 1 << 20;
const QUEUE_SIZE: u16 = 16;
const DESC_TABLE: u64 = 0x1000;
const AVAIL_RING: u64 = 0x2000;
const USED_RING: u64 = 0x3000;

/// An in-memory disk for fuzzing: 64 KiB of bytes.
struct MemoryDisk(Vec<u8>);

impl vireo_disk::block::BlockDevice for MemoryDisk {
    fn capacity(&self) -> u64 {
        self.0.len() as u64
    }
    fn is_read_only(&self) -> bool {
        false
    }
    fn read_at(
        &mut self,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<(), vireo_disk::block::BlockError> {
        vireo_disk::block::check_range(offset, buf.len() as u64, self.capacity())?;
        buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), vireo_disk::block::BlockError> {
        vireo_disk::block::check_range(offset, buf.len() as u64, self.capacity())?;
        self.0[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), vireo_disk::block::BlockError> {
        Ok(())
    }
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), vireo_disk::block::BlockError> {
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), vireo_disk::block::BlockError> {
        vireo_disk::block::check_range(offset, len, self.capacity())?;
        self.0[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}

/// Lays `data` over the descriptor table, the avail ring and the buffers of a 16-entry queue,
/// then lets a virtio-blk device serve it. Returns whether the device marked itself broken.
pub fn serve_block_queue_from_bytes(data: &[u8]) -> bool {
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEMORY_SIZE)]) else {
        return false;
    };
    // Descriptor table (16 × 16 bytes), avail ring (4 + 2 × 16 bytes), then buffers.
    let (table, rest) = data.split_at(data.len().min(256));
    let (avail, buffers) = rest.split_at(rest.len().min(36));
    let _ = mem.write_slice(table, GuestAddress(DESC_TABLE));
    let _ = mem.write_slice(avail, GuestAddress(AVAIL_RING));
    let _ = mem.write_slice(buffers, GuestAddress(0x10000));
    let mut queue = match virtio_queue::Queue::new(QUEUE_SIZE) {
        Ok(q) => q,
        Err(_) => return false,
    };
    use virtio_queue::QueueT;
    queue.set_size(QUEUE_SIZE);
    queue.set_desc_table_address(Some(DESC_TABLE as u32), Some(0));
    queue.set_avail_ring_address(Some(AVAIL_RING as u32), Some(0));
    queue.set_used_ring_address(Some(USED_RING as u32), Some(0));
    queue.set_ready(true);
    let Ok(irq) = EventFd::new(EFD_NONBLOCK) else {
        return false;
    };
    let signals = DeviceSignals::new(irq);
    let disk: Box<dyn vireo_disk::block::BlockDevice> = Box::new(MemoryDisk(vec![0; 64 * 1024]));
    serve_queue(
        &mut queue,
        &mem,
        &std::sync::Mutex::new(disk),
        &signals,
        &[0; 20],
    );
    signals.is_broken()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a fixed-seed generator, so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// Random queues, biased towards plausible ones (small next indexes, in-memory addresses).
    #[test]
    fn random_queues_never_panic_the_block_device() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut broken = 0;
        for _ in 0..3000 {
            let mut data = vec![0u8; 256 + 36 + 512];
            for byte in data.iter_mut() {
                *byte = rng.next() as u8;
            }
            for desc in 0..16 {
                let at = desc * 16;
                if rng.next().is_multiple_of(2) {
                    let addr = 0x10000 + (rng.next() % 0x1000);
                    data[at..at + 8].copy_from_slice(&addr.to_le_bytes());
                    let len = (rng.next() % 1024) as u32;
                    data[at + 8..at + 12].copy_from_slice(&len.to_le_bytes());
                    data[at + 12] &= 0x3; // NEXT / WRITE only
                    data[at + 14] = (rng.next() % 18) as u8;
                    data[at + 15] = 0;
                }
            }
            // avail idx small most of the time
            if !rng.next().is_multiple_of(4) {
                data[256 + 2] = (rng.next() % 4) as u8;
                data[256 + 3] = 0;
            }
            broken += usize::from(serve_block_queue_from_bytes(&data));
        }
        assert!(
            broken > 0,
            "some random queues are hostile enough to break the device"
        );
    }
}
