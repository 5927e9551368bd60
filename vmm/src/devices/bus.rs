//! Buses from guest addresses to devices: one for port I/O, one for MMIO. Accesses to
//! unclaimed addresses read as all ones, are otherwise ignored, and are counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A device on a bus. `offset` is relative to the device's first address; for port I/O `data`
/// holds one access, or several consecutive byte accesses for string I/O (`rep insb/outsb`).
pub trait BusDevice: Send {
    /// Guest reads `data.len()` bytes.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest writes `data`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

struct BusRange {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// Errors inserting a device on the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// Two devices claimed overlapping ports.
    #[error("address range {base:#x}+{len:#x} overlaps a device already on the bus")]
    Overlap {
        /// First address of the rejected range.
        base: u64,
        /// Its length.
        len: u64,
    },
}

/// The two buses vCPUs dispatch exits to.
pub struct Buses {
    /// Port I/O devices.
    pub pio: Bus,
    /// MMIO devices (virtio transports).
    pub mmio: Bus,
}

/// A bus shared by all vCPUs (port I/O or MMIO).
#[derive(Default)]
pub struct Bus {
    ranges: Vec<BusRange>,
    unclaimed: AtomicU64,
}

impl Bus {
    /// Claims `len` addresses from `base` for `device`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        let end = base.saturating_add(len);
        let overlaps = self
            .ranges
            .iter()
            .any(|r| base < r.base.saturating_add(r.len) && r.base < end);
        if overlaps || len == 0 {
            return Err(BusError::Overlap { base, len });
        }
        self.ranges.push(BusRange { base, len, device });
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(&BusRange, u64)> {
        self.ranges
            .iter()
            .find(|r| addr >= r.base && addr - r.base < r.len)
            .map(|r| (r, addr - r.base))
    }

    /// Dispatches a guest read of `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((range, offset)) => lock(&range.device).read(offset, data),
            None => {
                data.fill(0xff);
                self.unclaimed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Dispatches a guest write to `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) {
        match self.find(addr) {
            Some((range, offset)) => lock(&range.device).write(offset, data),
            None => {
                self.unclaimed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// How many accesses hit no device so far.
    pub fn unclaimed_accesses(&self) -> u64 {
        self.unclaimed.load(Ordering::Relaxed)
    }
}

/// Locks a device, recovering it if a previous holder panicked (devices stay usable).
pub fn lock<T: ?Sized>(device: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Register(Vec<(u64, Vec<u8>)>);

    impl BusDevice for Register {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_owner_and_strays_are_counted() {
        let device = Arc::new(Mutex::new(Register::default()));
        let mut bus = Bus::default();
        bus.insert(0x3f8, 8, device.clone()).unwrap();
        assert_eq!(
            bus.insert(0x3ff, 2, device.clone()),
            Err(BusError::Overlap {
                base: 0x3ff,
                len: 2
            })
        );
        bus.write(0x3f9, &[7]);
        let mut data = [0u8; 2];
        bus.read(0x3fa, &mut data);
        assert_eq!(data, [2, 2]);
        bus.read(0x400, &mut data);
        assert_eq!(data, [0xff, 0xff]);
        bus.write(0x80, &[1]);
        assert_eq!(bus.unclaimed_accesses(), 2);
        assert_eq!(device.lock().unwrap().0, vec![(1, vec![7])]);
    }
}
