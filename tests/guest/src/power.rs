//! ACPI power control: S5 power-off (PM1a_CNT, or the sleep control register on
//! hardware-reduced platforms), reset (FADT reset register, else the i8042), and the power
//! button (PWRBTN_EN in PM1a_EN, SCI through the IOAPIC, PWRBTN_STS on the SCI).

use core::sync::atomic::Ordering;

use crate::acpi::fadt::Fadt;
use crate::acpi::gas::{Gas, GasError};
use crate::acpi::madt::Madt;
use crate::acpi::Acpi;
use crate::apic::{IrqRoute, Lapic, Polarity, RouteError, Trigger};
use crate::arch::{self, abi::SCI_VECTOR};
use crate::io::{Io, Width};
use crate::ticks;

const SLP_EN: u64 = 1 << 13;
const SLP_TYP_SHIFT: u64 = 10;
const SLEEP_CONTROL_SLP_EN: u64 = 1 << 5;
const SLEEP_CONTROL_SLP_TYP_SHIFT: u64 = 2;
const SCI_EN: u64 = 1;
const PWRBTN: u64 = 1 << 8;
const I8042_COMMAND: u16 = 0x64;
const I8042_PULSE_RESET: u32 = 0xfe;
/// Timer ticks to wait for the platform to act on a power-off or reset write.
const SETTLE_TICKS: u64 = 50;

/// Why the guest could not power itself off.
#[derive(Debug, thiserror::Error)]
pub enum PowerOffError {
    /// The DSDT has no `_S5_` package.
    #[error("no \\_S5_ sleep type in the DSDT")]
    NoS5,
    /// Neither PM1a_CNT nor a sleep control register.
    #[error("the FADT has no PM1a control block or sleep control register")]
    NoSleepRegister,
    /// The register could not be written.
    #[error(transparent)]
    Register(#[from] GasError),
    /// The write was made but the machine kept running.
    #[error("the S5 write was ignored")]
    Ignored,
}

/// Why the guest could not reset itself.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// Reset register and i8042 pulse were both ignored.
    #[error("the reset register and the i8042 reset were ignored")]
    Ignored,
}

/// Why the power button could not be armed.
#[derive(Debug, thiserror::Error)]
pub enum PowerButtonError {
    /// No PM1a event block (hardware-reduced platforms signal the button through AML).
    #[error("the FADT has no PM1a event block")]
    NoEventBlock,
    /// No MADT to route the SCI with.
    #[error("no MADT to route the SCI")]
    NoMadt,
    /// The SCI could not be routed.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A PM1 register could not be accessed.
    #[error(transparent)]
    Register(#[from] GasError),
}

/// The platform's power registers, from the FADT and DSDT.
pub struct PowerControl {
    fadt: Option<Fadt>,
    s5_sleep_type: Option<u8>,
}

impl PowerControl {
    /// Takes the FADT and `_S5_` found at boot.
    pub fn new(acpi: &mut Acpi) -> PowerControl {
        PowerControl {
            fadt: acpi.fadt.take(),
            s5_sleep_type: acpi.s5_sleep_type,
        }
    }

    /// Enters S5. Returns only if that failed.
    pub fn power_off(&self, io: &mut Io) -> PowerOffError {
        match self.try_power_off(io) {
            Ok(()) => PowerOffError::Ignored,
            Err(error) => error,
        }
    }

    fn try_power_off(&self, io: &mut Io) -> Result<(), PowerOffError> {
        let sleep_type = u64::from(self.s5_sleep_type.ok_or(PowerOffError::NoS5)?);
        let fadt = self.fadt.as_ref().ok_or(PowerOffError::NoSleepRegister)?;
        match (fadt.hw_reduced, fadt.pm1a_control, fadt.sleep_control) {
            (false, Some(pm1a_control), _) => {
                pm1a_control.write(io, sleep_type << SLP_TYP_SHIFT | SLP_EN)?;
            }
            (_, _, Some(sleep_control)) => {
                sleep_control.write(
                    io,
                    sleep_type << SLEEP_CONTROL_SLP_TYP_SHIFT | SLEEP_CONTROL_SLP_EN,
                )?;
            }
            _ => return Err(PowerOffError::NoSleepRegister),
        }
        io.flush();
        ticks::sleep(SETTLE_TICKS);
        Ok(())
    }

    /// Resets through the FADT reset register, then the i8042. Returns only if both failed.
    pub fn reset(&self, io: &mut Io) -> ResetError {
        if let Some((register, value)) = self.fadt.as_ref().and_then(|fadt| fadt.reset) {
            // A register we cannot address is skipped: the i8042 comes next anyway.
            let _ = register.write(io, u64::from(value));
        }
        io.out(I8042_COMMAND, Width::Byte, I8042_PULSE_RESET);
        io.flush();
        ticks::sleep(SETTLE_TICKS);
        ResetError::Ignored
    }

    /// Switches to ACPI mode if needed, enables the power-button event and routes the SCI
    /// (level, active high unless the MADT overrides it) to this CPU.
    pub fn arm_power_button(
        &self,
        io: &mut Io,
        madt: Option<&Madt>,
        lapic_id: u32,
    ) -> Result<(), PowerButtonError> {
        let fadt = self.fadt.as_ref().ok_or(PowerButtonError::NoEventBlock)?;
        let (status, enable) = pm1a_status_enable(fadt).ok_or(PowerButtonError::NoEventBlock)?;
        let madt = madt.ok_or(PowerButtonError::NoMadt)?;
        let sci_irq = u8::try_from(fadt.sci_interrupt).unwrap_or(u8::MAX);
        let route = IrqRoute::for_isa_irq(madt, sci_irq, Trigger::Level, Polarity::High)?;
        enable_acpi_mode(io, fadt)?;
        status.write(io, PWRBTN)?;
        enable.write(io, PWRBTN)?;
        if route.is_level() {
            arch::defer_eoi(SCI_VECTOR);
        }
        route.program(io, SCI_VECTOR, lapic_id);
        io.flush();
        Ok(())
    }

    /// Sleeps until an SCI reports the power button (clearing its status). Non-button SCIs
    /// are acknowledged and ignored.
    pub fn wait_for_power_button(
        &self,
        io: &mut Io,
        lapic: &Lapic,
    ) -> Result<(), PowerButtonError> {
        let fadt = self.fadt.as_ref().ok_or(PowerButtonError::NoEventBlock)?;
        let (status, _) = pm1a_status_enable(fadt).ok_or(PowerButtonError::NoEventBlock)?;
        let scis = arch::irq_count(SCI_VECTOR);
        let mut handled = 0;
        loop {
            let seen = scis.load(Ordering::SeqCst);
            if seen == handled {
                arch::wait_until_changed(scis, seen);
                continue;
            }
            handled = seen;
            let pressed = status.read(io)? & PWRBTN != 0;
            if pressed {
                status.write(io, PWRBTN)?;
            }
            lapic.eoi(io);
            io.flush();
            if pressed {
                return Ok(());
            }
        }
    }
}

/// PM1a_STS and PM1a_EN (the second half of the PM1a event block).
fn pm1a_status_enable(fadt: &Fadt) -> Option<(Gas, Gas)> {
    let status = fadt.pm1a_event?.offset_by(0, Width::Word);
    let half = u64::from(fadt.pm1_event_length / 2).max(2);
    Some((status, status.offset_by(half, Width::Word)))
}

/// Writes ACPI_ENABLE to SMI_CMD when the platform is not yet in ACPI mode (SCI_EN clear).
fn enable_acpi_mode(io: &mut Io, fadt: &Fadt) -> Result<(), GasError> {
    let (Some(control), Ok(port)) = (fadt.pm1a_control, u16::try_from(fadt.smi_command)) else {
        return Ok(());
    };
    if port == 0 || fadt.acpi_enable == 0 || control.read(io)? & SCI_EN != 0 {
        return Ok(());
    }
    io.out(port, Width::Byte, u32::from(fadt.acpi_enable));
    Ok(())
}
