//! Guest memory written by the VMM itself rather than by a vCPU — buffers and used rings of
//! virtio devices, instructions completed for kvm-pvm — which KVM's dirty log does not see.
//! While a live save runs, each such range is recorded before it is written, so that the save
//! copies it again once the VM is paused. One VM per process: the record is process-wide.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::devices::bus::lock;

static RECORDING: AtomicBool = AtomicBool::new(false);
static RANGES: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// Notes that `len` bytes at guest address `addr` are about to be written by the VMM.
pub fn record(addr: u64, len: u64) {
    if len > 0 && RECORDING.load(Ordering::SeqCst) {
        lock(&RANGES).push((addr, len));
    }
}

/// Starts recording, with nothing recorded yet.
pub fn start() {
    lock(&RANGES).clear();
    RECORDING.store(true, Ordering::SeqCst);
}

/// Stops recording and returns every range recorded since [`start`] as (address, length).
pub fn stop() -> Vec<(u64, u64)> {
    RECORDING.store(false, Ordering::SeqCst);
    std::mem::take(&mut *lock(&RANGES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_while_recording_are_kept() {
        // Other tests of this process may record too: look for these ranges only.
        record(0x1000, 8);
        start();
        record(0x2000, 16);
        record(0x3000, 0);
        let ranges = stop();
        assert!(ranges.contains(&(0x2000, 16)), "{ranges:?}");
        assert!(!ranges.contains(&(0x1000, 8)) && !ranges.contains(&(0x3000, 0)));
        record(0x4000, 8);
        start();
        assert!(!stop().contains(&(0x4000, 8)));
    }
}
