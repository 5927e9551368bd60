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

/// One port of the controller: the data port reads as empty and ignores writes; the
/// command/status port reads as idle and resets the VM on command 0xFE. (Port 0x61, between
/// them, is the timer's port B: `pit::PortB`.)
pub struct I8042 {
    /// Set on the command port: where the reset line ends the VM.
    reset_line: Option<Arc<RunState>>,
}

impl I8042 {
    /// The data port.
    pub fn data_port() -> Self {
        I8042 { reset_line: None }
    }

    /// The command/status port, resetting the VM through `run_state`.
    pub fn command_port(run_state: Arc<RunState>) -> Self {
        I8042 {
            reset_line: Some(run_state),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status: output buffer empty, input buffer empty; data: nothing pending.
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let (Some(run_state), Some(&CMD_RESET_CPU)) = (&self.reset_line, data.first()) {
            run_state.request_exit(VmExit::GuestReset {
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
    fn command_fe_on_the_command_port_resets_and_nothing_else_does() {
        let state = Arc::new(RunState::default());
        I8042::data_port().write(0, &[CMD_RESET_CPU]);
        let mut command = I8042::command_port(state.clone());
        command.write(0, &[0xaa]);
        assert_eq!(state.phase(), Phase::Running);
        command.write(0, &[CMD_RESET_CPU]);
        assert!(matches!(
            state.phase(),
            Phase::Exiting(VmExit::GuestReset { .. })
        ));
    }
}
