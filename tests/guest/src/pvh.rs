//! The PVH `hvm_start_info` the loader hands us in %ebx: command line, memory map, RSDP.
//! Everything is copied out at boot, so the loader's pages may be reused afterwards.

use crate::phys::{self, LeBytes};

const START_INFO_MAGIC: u32 = 0x336e_c578;
const START_INFO_SIZE: usize = 56;
const MEMMAP_ENTRY_SIZE: usize = 24;
const MEMMAP_TYPE_RAM: u32 = 1;
const MAX_RAM_RANGES: usize = 32;
const CMDLINE_CAPACITY: usize = 1024;

/// Why the start info could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StartInfoError {
    /// The start info pointer is outside the identity map.
    #[error("hvm_start_info at {0:#x} is not addressable")]
    Unmapped(u64),
    /// The magic number is wrong: not a PVH boot.
    #[error("hvm_start_info magic is {0:#x}, expected 0x336ec578")]
    BadMagic(u32),
}

/// A RAM range of the memory map.
#[derive(Clone, Copy, Default)]
pub struct RamRange {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// What the loader told us, copied.
pub struct BootInfo {
    cmdline: [u8; CMDLINE_CAPACITY],
    cmdline_len: usize,
    ram: [RamRange; MAX_RAM_RANGES],
    ram_count: usize,
    /// Bytes of RAM in the memory map (all ranges, even those we could not list).
    pub ram_bytes: u64,
    /// The loader's RSDP address (0 if it gave none).
    pub rsdp: u64,
}

impl BootInfo {
    /// Reads the start info at physical `addr`.
    pub fn read(addr: u64) -> Result<BootInfo, StartInfoError> {
        let info = phys::bytes(addr, START_INFO_SIZE).ok_or(StartInfoError::Unmapped(addr))?;
        let field32 = |offset| info.u32_at(offset).unwrap_or(0);
        let field64 = |offset| info.u64_at(offset).unwrap_or(0);
        if field32(0) != START_INFO_MAGIC {
            return Err(StartInfoError::BadMagic(field32(0)));
        }
        let mut boot = BootInfo {
            cmdline: [0; CMDLINE_CAPACITY],
            cmdline_len: 0,
            ram: [RamRange::default(); MAX_RAM_RANGES],
            ram_count: 0,
            ram_bytes: 0,
            rsdp: field64(32),
        };
        boot.copy_cmdline(field64(24));
        if field32(4) >= 1 {
            boot.copy_memmap(field64(40), field32(48));
        }
        Ok(boot)
    }

    /// The kernel command line (empty if absent or not UTF-8).
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// The RAM ranges of the memory map.
    pub fn ram_ranges(&self) -> &[RamRange] {
        &self.ram[..self.ram_count]
    }

    /// RAM size rounded to the nearest MiB.
    pub fn ram_mib(&self) -> u64 {
        (self.ram_bytes + (1 << 19)) >> 20
    }

    fn copy_cmdline(&mut self, addr: u64) {
        if addr == 0 {
            return;
        }
        for (i, slot) in self.cmdline.iter_mut().enumerate() {
            match phys::bytes(addr + i as u64, 1).and_then(|b| b.u8_at(0)) {
                Some(0) | None => break,
                Some(byte) => {
                    *slot = byte;
                    self.cmdline_len = i + 1;
                }
            }
        }
    }

    fn copy_memmap(&mut self, addr: u64, entries: u32) {
        let Some(map) = phys::bytes(addr, entries as usize * MEMMAP_ENTRY_SIZE) else {
            return;
        };
        for entry in map.chunks_exact(MEMMAP_ENTRY_SIZE) {
            let (Some(start), Some(len), Some(kind)) =
                (entry.u64_at(0), entry.u64_at(8), entry.u32_at(16))
            else {
                continue;
            };
            if kind != MEMMAP_TYPE_RAM {
                continue;
            }
            self.ram_bytes += len;
            if self.ram_count < MAX_RAM_RANGES {
                self.ram[self.ram_count] = RamRange { start, len };
                self.ram_count += 1;
            }
        }
    }
}
