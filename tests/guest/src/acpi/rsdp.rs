//! The Root System Description Pointer: at the loader's address, or found by scanning the
//! BIOS area 0xE0000..0x100000 on 16-byte boundaries for "RSD PTR ".

use super::sdt::{RootTable, Sdt};
use crate::phys::{self, LeBytes};

const SIGNATURE: &[u8; 8] = b"RSD PTR ";
const V1_LENGTH: usize = 20;
const V2_LENGTH: usize = 36;
const SCAN_START: u64 = 0xe_0000;
const SCAN_END: u64 = 0x10_0000;

/// A checksum-verified RSDP.
pub struct Rsdp {
    /// Where it is.
    pub address: u64,
    rsdt: u32,
    xsdt: u64,
}

/// The RSDP at `hint`, or the first one in the BIOS area.
pub fn find(hint: u64) -> Option<Rsdp> {
    if hint != 0 {
        return parse(hint);
    }
    (SCAN_START..SCAN_END).step_by(16).find_map(parse)
}

fn parse(address: u64) -> Option<Rsdp> {
    let v1 = phys::bytes(address, V1_LENGTH)?;
    if &v1[..8] != SIGNATURE || !checksum_ok(v1) {
        return None;
    }
    let rsdt = v1.u32_at(16)?;
    let revision = v1.u8_at(15)?;
    let xsdt = if revision >= 2 {
        let v2 = phys::bytes(address, V2_LENGTH)?;
        let length = v2.u32_at(20)? as usize;
        let extended = phys::bytes(address, length.clamp(V2_LENGTH, 4096))?;
        if checksum_ok(extended) {
            v2.u64_at(24)?
        } else {
            0
        }
    } else {
        0
    };
    Some(Rsdp {
        address,
        rsdt,
        xsdt,
    })
}

impl Rsdp {
    /// The XSDT if valid, else the RSDT.
    pub fn root_table(&self) -> Option<RootTable> {
        let xsdt = Sdt::load(self.xsdt).filter(|t| t.signature == *b"XSDT");
        if let Some(table) = xsdt {
            return Some(RootTable::Xsdt(table));
        }
        Sdt::load(u64::from(self.rsdt))
            .filter(|t| t.signature == *b"RSDT")
            .map(RootTable::Rsdt)
    }
}

/// Whether the bytes sum to zero (mod 256).
pub fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)) == 0
}
