//! The boot-marker port: our test guest writes 1 here when it has booted; the VMM timestamps
//! it (reported by `status` on the control socket and in the exit record).

use std::sync::Arc;

use crate::devices::bus::BusDevice;
use crate::run_state::RunState;

/// The marker's I/O port.
pub const BOOT_MARKER_PORT: u16 = 0x440;
/// The value meaning "booted".
pub const BOOTED: u8 = 1;

/// Records the first "booted" write.
pub struct BootMarker {
    run_state: Arc<RunState>,
}

impl BootMarker {
    /// A marker recording into `run_state`.
    pub fn new(run_state: Arc<RunState>) -> Self {
        BootMarker { run_state }
    }
}

impl BusDevice for BootMarker {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if data.first() == Some(&BOOTED) {
            self.run_state.mark_booted();
        }
    }
}
