//! System description tables: the 36-byte header, length and checksum checks, and the root
//! table (XSDT: 64-bit pointers, RSDT: 32-bit) that lists the others.

use super::rsdp::checksum_ok;
use crate::phys::{self, LeBytes};

const HEADER_LENGTH: usize = 36;
const MAX_TABLE_LENGTH: usize = 1 << 20;

/// A checksum-verified table, in place.
pub struct Sdt {
    /// The 4-byte signature ("FACP", "APIC"...).
    pub signature: [u8; 4],
    bytes: &'static [u8],
}

impl Sdt {
    /// The table at `address`, if its header, length and checksum are sane.
    pub fn load(address: u64) -> Option<Sdt> {
        let header = phys::bytes(address, HEADER_LENGTH)?;
        let length = header.u32_at(4)? as usize;
        if !(HEADER_LENGTH..=MAX_TABLE_LENGTH).contains(&length) {
            return None;
        }
        let bytes = phys::bytes(address, length)?;
        if !checksum_ok(bytes) {
            return None;
        }
        Some(Sdt {
            signature: header[..4].try_into().ok()?,
            bytes,
        })
    }

    /// The whole table, header included (field offsets in the spec count from its start).
    pub fn bytes(&self) -> &'static [u8] {
        self.bytes
    }

    /// The table after its header.
    pub fn body(&self) -> &'static [u8] {
        &self.bytes[HEADER_LENGTH..]
    }
}

/// The XSDT or, on ACPI 1.0 firmware, the RSDT.
pub enum RootTable {
    /// 64-bit entries.
    Xsdt(Sdt),
    /// 32-bit entries.
    Rsdt(Sdt),
}

impl RootTable {
    /// The first valid table with this signature.
    pub fn find(&self, signature: [u8; 4]) -> Option<Sdt> {
        let (body, entry_size) = match self {
            RootTable::Xsdt(table) => (table.body(), 8),
            RootTable::Rsdt(table) => (table.body(), 4),
        };
        body.chunks_exact(entry_size)
            .map(|entry| match entry_size {
                8 => entry.u64_at(0).unwrap_or(0),
                _ => u64::from(entry.u32_at(0).unwrap_or(0)),
            })
            .filter_map(Sdt::load)
            .find(|table| table.signature == signature)
    }
}
