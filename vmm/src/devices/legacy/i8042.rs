//! The i8042 keyboard controller, reduced to what guests use on a server: its status port
//! and the CPU reset line (command 0xFE), which ends the VM with a reset.

use std::sync::Arc;

use crate::devices::bus::BusDevice;
use crate::run_state::{RunState, VmExit};

/// Data port.
pub const DATA_PORT: u16 = 0x60;
/// Command/status port.
pub const COMMAND_PORT: u16 = 0x64;
/// Command that pulses the CPU reset line.
pub const CMD_RESET_CPU: u8 = 0xfe;

/// The controller; claims ports 0x60..=0x64 (0x61 is KVM's speaker port inside that range and
/// never reaches us).
pub struct I8042 {
    run_state: Arc<RunState>,
}

impl I8042 {
    /// A controller that resets the VM through `run_state`.
    pub fn new(run_state: Arc<RunState>) -> Self {
        I8042 { run_state }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status: output buffer empty, input buffer empty; data: nothing pending.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == u64::from(COMMAND_PORT - DATA_PORT) && data.first() == Some(&CMD_RESET_CPU) {
            self.run_state.request_exit(VmExit::GuestReset {
                cause: "i8042 reset line".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_state::Phase;

    #[test]
    fn command_fe_resets_and_other_writes_do_not() {
        let state = Arc::new(RunState::default());
        let mut dev = I8042::new(state.clone());
        dev.write(0, &[CMD_RESET_CPU]);
        dev.write(4, &[0xaa]);
        assert_eq!(state.phase(), Phase::Running);
        dev.write(4, &[CMD_RESET_CPU]);
        assert!(matches!(
            state.phase(),
            Phase::Exiting(VmExit::GuestReset { .. })
        ));
    }
}
