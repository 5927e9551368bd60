//! The port I/O bus: maps port ranges to devices; accesses to unclaimed ports read as 0xff,
//! are otherwise ignored, and are counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A device reached through port I/O. `offset` is relative to the device's first port; `data`
/// holds one access, or several consecutive byte accesses for string I/O (`rep insb/outsb`).
pub trait PioDevice: Send {
    /// Guest reads `data.len()` bytes.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// Guest writes `data`.
    fn write(&mut self, offset: u16, data: &[u8]);
}

struct PioRange {
    base: u16,
    len: u16,
    device: Arc<Mutex<dyn PioDevice>>,
}

/// Errors inserting a device on the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// Two devices claimed overlapping ports.
    #[error("port range {base:#x}+{len} overlaps a device already on the bus")]
    Overlap {
        /// First port of the rejected range.
        base: u16,
        /// Its length.
        len: u16,
    },
}

/// The port I/O bus shared by all vCPUs.
#[derive(Default)]
pub struct PioBus {
    ranges: Vec<PioRange>,
    unclaimed: AtomicU64,
}

impl PioBus {
    /// Claims `len` ports from `base` for `device`.
    pub fn insert(
        &mut self,
        base: u16,
        len: u16,
        device: Arc<Mutex<dyn PioDevice>>,
    ) -> Result<(), BusError> {
        let end = u32::from(base) + u32::from(len);
        let overlaps = self.ranges.iter().any(|r| {
            let r_end = u32::from(r.base) + u32::from(r.len);
            u32::from(base) < r_end && u32::from(r.base) < end
        });
        if overlaps || len == 0 {
            return Err(BusError::Overlap { base, len });
        }
        self.ranges.push(PioRange { base, len, device });
        Ok(())
    }

    fn find(&self, port: u16) -> Option<(&PioRange, u16)> {
        self.ranges
            .iter()
            .find(|r| port >= r.base && u32::from(port) < u32::from(r.base) + u32::from(r.len))
            .map(|r| (r, port - r.base))
    }

    /// Dispatches a guest read of `port`.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        match self.find(port) {
            Some((range, offset)) => lock(&range.device).read(offset, data),
            None => {
                data.fill(0xff);
                self.unclaimed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Dispatches a guest write to `port`.
    pub fn write(&self, port: u16, data: &[u8]) {
        match self.find(port) {
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
    struct Register(Vec<(u16, Vec<u8>)>);

    impl PioDevice for Register {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u16, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_owner_and_strays_are_counted() {
        let device = Arc::new(Mutex::new(Register::default()));
        let mut bus = PioBus::default();
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
