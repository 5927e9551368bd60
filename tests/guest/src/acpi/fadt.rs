//! The Fixed ACPI Description Table: where the DSDT is, the SCI, the PM1 event/control
//! registers, the reset register and (hardware-reduced ACPI) the sleep control register.

use super::gas::Gas;
use super::sdt::Sdt;
use crate::io::Width;
use crate::phys::LeBytes;

const FLAG_RESET_REG_SUP: u32 = 1 << 10;
const FLAG_HW_REDUCED_ACPI: u32 = 1 << 20;

/// The FADT fields the guest uses.
#[derive(Debug)]
pub struct Fadt {
    /// DSDT address (X_DSDT when present).
    pub dsdt: u64,
    /// The SCI's interrupt (an ISA IRQ, subject to MADT overrides).
    pub sci_interrupt: u16,
    /// Port that switches the platform to ACPI mode (0: always in ACPI mode).
    pub smi_command: u32,
    /// Value for `smi_command` that enables ACPI mode.
    pub acpi_enable: u8,
    /// PM1a status register; PM1a_EN follows at half the block length.
    pub pm1a_event: Option<Gas>,
    /// Length of the PM1 event block (status + enable).
    pub pm1_event_length: u8,
    /// PM1a control register (SLP_TYP, SLP_EN, SCI_EN).
    pub pm1a_control: Option<Gas>,
    /// Hardware-reduced ACPI: no PM1 blocks, sleep control register instead.
    pub hw_reduced: bool,
    /// Sleep control register (hardware-reduced ACPI).
    pub sleep_control: Option<Gas>,
    /// Reset register and the value to write, when RESET_REG_SUP.
    pub reset: Option<(Gas, u8)>,
}

impl Fadt {
    /// Reads the fields of a (checksum-verified) FADT; missing fields read as absent.
    pub fn parse(table: &Sdt) -> Fadt {
        let t = table.bytes();
        let flags = t.u32_at(112).unwrap_or(0);
        let x_gas = |offset| Gas::parse(t, offset, Width::Word);
        let dsdt = t
            .u64_at(140)
            .filter(|&x| x != 0)
            .unwrap_or(u64::from(t.u32_at(40).unwrap_or(0)));
        let reset = if flags & FLAG_RESET_REG_SUP != 0 {
            Gas::parse(t, 116, Width::Byte).zip(t.u8_at(128))
        } else {
            None
        };
        Fadt {
            dsdt,
            sci_interrupt: t.u16_at(46).unwrap_or(0),
            smi_command: t.u32_at(48).unwrap_or(0),
            acpi_enable: t.u8_at(52).unwrap_or(0),
            pm1a_event: x_gas(148).or_else(|| Gas::io_port(t.u32_at(56)?, Width::Word)),
            pm1_event_length: t.u8_at(88).unwrap_or(0),
            pm1a_control: x_gas(172).or_else(|| Gas::io_port(t.u32_at(64)?, Width::Word)),
            hw_reduced: flags & FLAG_HW_REDUCED_ACPI != 0,
            sleep_control: Gas::parse(t, 244, Width::Byte),
            reset,
        }
    }
}
