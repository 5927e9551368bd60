//! ACPI discovery from ring 3: RSDP → XSDT (or RSDT) → FADT and MADT, then the DSDT's `_S5_`.
//! Tables are read in place through the identity map and checksum-verified; what the rest of
//! the guest needs is copied into plain structs.

pub mod aml;
pub mod fadt;
pub mod gas;
pub mod madt;
mod rsdp;
mod sdt;

use fadt::Fadt;
use madt::Madt;

/// Why ACPI tables could not be found.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// No valid RSDP at the loader's address or in 0xE0000..0x100000.
    #[error("no valid RSDP (loader gave {0:#x}, BIOS area scanned)")]
    NoRsdp(u64),
    /// The RSDP points at no valid XSDT or RSDT.
    #[error("the RSDP at {0:#x} points at no valid XSDT or RSDT")]
    NoRootTable(u64),
}

/// The tables the guest uses.
pub struct Acpi {
    /// Processors, interrupt controllers and overrides (None without a valid MADT).
    pub madt: Option<Madt>,
    /// Power-management registers (None without a valid FADT).
    pub fadt: Option<Fadt>,
    /// SLP_TYPa of `\_S5_` in the DSDT.
    pub s5_sleep_type: Option<u8>,
}

/// Finds and parses the tables, starting from the loader's RSDP address (0 = scan).
pub fn discover(rsdp_hint: u64) -> Result<Acpi, AcpiError> {
    let rsdp = rsdp::find(rsdp_hint).ok_or(AcpiError::NoRsdp(rsdp_hint))?;
    let root = rsdp
        .root_table()
        .ok_or(AcpiError::NoRootTable(rsdp.address))?;
    let madt = root.find(*b"APIC").map(|table| Madt::parse(&table));
    let fadt = root.find(*b"FACP").map(|table| Fadt::parse(&table));
    let s5_sleep_type = fadt
        .as_ref()
        .and_then(|fadt| sdt::Sdt::load(fadt.dsdt))
        .filter(|dsdt| dsdt.signature == *b"DSDT")
        .and_then(|dsdt| aml::s5_sleep_type(dsdt.body()));
    Ok(Acpi {
        madt,
        fadt,
        s5_sleep_type,
    })
}
