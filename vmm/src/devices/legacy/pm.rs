//! ACPI fixed-hardware power management registers (PM1a event and control blocks):
//! the power button (status/enable, raising the SCI) and sleep control, where S5 powers off.

use std::sync::Arc;

use crate::arch::acpi::SLP_TYP_S5;
use crate::devices::bus::BusDevice;
use crate::devices::irq::InterruptLine;
use crate::run_state::{RunState, VmExit};

/// PM1a event block: status (2 bytes) then enable (2 bytes).
pub const PM1A_EVT_PORT: u16 = 0x600;
/// PM1a control block.
pub const PM1A_CNT_PORT: u16 = 0x604;
/// Length of the event block.
pub const PM1_EVT_LEN: u8 = 4;
/// Length of the control block.
pub const PM1_CNT_LEN: u8 = 2;
/// Ports the device claims from `PM1A_EVT_PORT`.
pub const PM_PORT_COUNT: u16 = 6;

const PWRBTN: u16 = 1 << 8;
const WAK_STS: u16 = 1 << 15;
const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0x7 << SLP_TYP_SHIFT;
const SLP_EN: u16 = 1 << 13;

const STS_OFFSET: u64 = 0;
const EN_OFFSET: u64 = 2;
const CNT_OFFSET: u64 = 4;

/// Saved PM1a registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PmState {
    /// PM1a_STS.
    pub status: u16,
    /// PM1a_EN.
    pub enable: u16,
    /// PM1a_CNT.
    pub control: u16,
}

/// The PM1a registers of one VM.
pub struct PowerManagement {
    status: u16,
    enable: u16,
    control: u16,
    sci: Arc<dyn InterruptLine>,
    run_state: Arc<RunState>,
}

impl PowerManagement {
    /// Registers raising `sci` and ending the VM through `run_state`.
    pub fn new(sci: Arc<dyn InterruptLine>, run_state: Arc<RunState>) -> Self {
        PowerManagement {
            status: 0,
            enable: 0,
            control: SCI_EN,
            sci,
            run_state,
        }
    }

    /// The registers' values.
    pub fn state(&self) -> PmState {
        PmState {
            status: self.status,
            enable: self.enable,
            control: self.control,
        }
    }

    /// Loads saved register values and re-drives the SCI accordingly.
    pub fn restore(&mut self, state: &PmState) {
        self.status = state.status;
        self.enable = state.enable;
        self.control = state.control;
        self.update_sci();
    }

    /// Presses the power button: sets PWRBTN_STS and raises the SCI if the guest enabled it.
    pub fn press_power_button(&mut self) {
        self.status |= PWRBTN;
        self.update_sci();
    }

    /// Whether the guest has enabled the power-button event (an ACPI-aware OS is listening).
    pub fn power_button_enabled(&self) -> bool {
        self.enable & PWRBTN != 0
    }

    fn update_sci(&self) {
        self.sci.set_level(self.status & self.enable & PWRBTN != 0);
    }

    fn register(&mut self, offset: u64) -> (u16, u64) {
        match offset & !1 {
            STS_OFFSET => (self.status, STS_OFFSET),
            EN_OFFSET => (self.enable, EN_OFFSET),
            _ => (self.control, CNT_OFFSET),
        }
    }

    fn write_register(&mut self, base: u64, value: u16, mask: u16) {
        match base {
            // Status bits are write-one-to-clear.
            STS_OFFSET => self.status &= !(value & mask),
            EN_OFFSET => self.enable = (self.enable & !mask) | (value & mask),
            _ => {
                let written = (self.control & !mask) | (value & mask);
                if written & SLP_EN != 0 {
                    self.enter_sleep_state((written & SLP_TYP_MASK) >> SLP_TYP_SHIFT);
                }
                // SLP_EN is write-only; SCI_EN stays set (no legacy mode to return to).
                self.control = (written & !SLP_EN) | SCI_EN;
            }
        }
        self.update_sci();
    }

    fn enter_sleep_state(&mut self, slp_typ: u16) {
        if slp_typ == u16::from(SLP_TYP_S5) {
            self.run_state.request_exit(VmExit::GuestPowerOff);
        } else {
            // Only S5 is advertised in the DSDT; other states wake at once.
            self.status |= WAK_STS;
        }
    }
}

impl BusDevice for PowerManagement {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            let (value, _) = self.register(at);
            *byte = value.to_le_bytes()[(at & 1) as usize];
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Gather the bytes written to each 16-bit register, then apply each register once.
        let mut pending: Vec<(u64, u16, u16)> = Vec::new();
        for (i, byte) in data.iter().enumerate() {
            let at = offset + i as u64;
            let (_, base) = self.register(at);
            let shift = 8 * (at & 1);
            match pending.iter_mut().find(|(b, _, _)| *b == base) {
                Some((_, value, mask)) => {
                    *value |= u16::from(*byte) << shift;
                    *mask |= 0xff << shift;
                }
                None => pending.push((base, u16::from(*byte) << shift, 0xff << shift)),
            }
        }
        for (base, value, mask) in pending {
            self.write_register(base, value, mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::irq::testing::RecordingLine;
    use crate::run_state::Phase;

    fn device() -> (PowerManagement, Arc<RecordingLine>, Arc<RunState>) {
        let line = Arc::new(RecordingLine::default());
        let state = Arc::new(RunState::default());
        (
            PowerManagement::new(line.clone(), state.clone()),
            line,
            state,
        )
    }

    #[test]
    fn power_button_raises_sci_only_when_enabled_and_clears() {
        let (mut pm, line, _) = device();
        pm.press_power_button();
        assert!(!line.level(), "not enabled yet");
        pm.write(EN_OFFSET, &PWRBTN.to_le_bytes());
        assert!(line.level(), "enabling a pending event raises the SCI");
        let mut sts = [0u8; 2];
        pm.read(STS_OFFSET, &mut sts);
        assert_eq!(u16::from_le_bytes(sts) & PWRBTN, PWRBTN);
        pm.write(STS_OFFSET, &PWRBTN.to_le_bytes());
        assert!(!line.level(), "write-one-to-clear lowers the SCI");
        pm.read(STS_OFFSET, &mut sts);
        assert_eq!(u16::from_le_bytes(sts), 0);
    }

    #[test]
    fn s5_powers_off_and_other_sleep_types_do_not() {
        let (mut pm, _, state) = device();
        let mut cnt = [0u8; 2];
        pm.read(CNT_OFFSET, &mut cnt);
        assert_eq!(u16::from_le_bytes(cnt) & SCI_EN, SCI_EN);
        pm.write(CNT_OFFSET, &((3 << SLP_TYP_SHIFT) | SLP_EN).to_le_bytes());
        assert_eq!(state.phase(), Phase::Running);
        // Byte-wise write of the high byte alone, as some guests do.
        pm.write(
            CNT_OFFSET + 1,
            &[(((u16::from(SLP_TYP_S5) << SLP_TYP_SHIFT) | SLP_EN) >> 8) as u8],
        );
        assert_eq!(state.phase(), Phase::Exiting(VmExit::GuestPowerOff));
    }
}
