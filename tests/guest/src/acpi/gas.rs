//! ACPI Generic Address Structures: a register in system I/O or memory space, and how to read
//! and write it through the I/O queue.

use crate::io::{Io, Width};
use crate::phys::LeBytes;

const SPACE_MEMORY: u8 = 0;
const SPACE_IO: u8 = 1;

/// Where a register lives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AddressSpace {
    /// System memory (MMIO).
    Memory,
    /// System I/O ports.
    Io,
}

/// A register: address space, address and access width.
#[derive(Clone, Copy, Debug)]
pub struct Gas {
    /// Memory or I/O.
    pub space: AddressSpace,
    /// Address or port.
    pub address: u64,
    /// Access width.
    pub width: Width,
}

/// Why a register access could not be made.
#[derive(Debug, thiserror::Error)]
pub enum GasError {
    /// An I/O port number above 0xffff.
    #[error("I/O port {0:#x} out of range")]
    PortOutOfRange(u64),
}

impl Gas {
    /// A legacy FADT I/O block (a 32-bit port field) as a register of `width`; None if zero.
    pub fn io_port(port: u32, width: Width) -> Option<Gas> {
        (port != 0).then_some(Gas {
            space: AddressSpace::Io,
            address: u64::from(port),
            width,
        })
    }

    /// The GAS at `offset` of `table`; None if absent, zero, or in an unsupported space.
    /// `default_width` is used when the GAS gives neither access size nor bit width.
    pub fn parse(table: &[u8], offset: usize, default_width: Width) -> Option<Gas> {
        let space = match table.u8_at(offset)? {
            SPACE_MEMORY => AddressSpace::Memory,
            SPACE_IO => AddressSpace::Io,
            _ => return None,
        };
        let bit_width = table.u8_at(offset + 1)?;
        let access_size = table.u8_at(offset + 3)?;
        let address = table.u64_at(offset + 4)?;
        if address == 0 {
            return None;
        }
        let width = match (access_size, bit_width) {
            (1, _) | (0, 8) => Width::Byte,
            (2, _) | (0, 16) => Width::Word,
            (3, _) | (0, 32) => Width::Dword,
            (4, _) | (0, 64) => Width::Qword,
            _ => default_width,
        };
        Some(Gas {
            space,
            address,
            width,
        })
    }

    /// The register `offset` bytes further on, with another width (PM1a_EN after PM1a_STS).
    pub fn offset_by(&self, offset: u64, width: Width) -> Gas {
        Gas {
            space: self.space,
            address: self.address + offset,
            width,
        }
    }

    /// Queues a write.
    pub fn write(&self, io: &mut Io, value: u64) -> Result<(), GasError> {
        match self.space {
            AddressSpace::Memory => io.mmio_write(self.address, self.width, value),
            AddressSpace::Io => io.out(self.port()?, self.width, value as u32),
        }
        Ok(())
    }

    /// Reads the register (flushes the queue first).
    pub fn read(&self, io: &mut Io) -> Result<u64, GasError> {
        Ok(match self.space {
            AddressSpace::Memory => io.mmio_read(self.address, self.width),
            AddressSpace::Io => u64::from(io.input(self.port()?, self.width)),
        })
    }

    fn port(&self) -> Result<u16, GasError> {
        u16::try_from(self.address).map_err(|_| GasError::PortOutOfRange(self.address))
    }
}
