//! virtio over MMIO (virtio 1.x, transport version 2) for ring-3 drivers: finding the devices
//! (`virtio_mmio.device=` words of the command line), the register window (`mmio`), split
//! virtqueues (`queue`) and buffer pools for byte/frame devices (`buffers`).

pub mod buffers;
pub mod mmio;
pub mod queue;

use crate::arch::abi::GSI_VECTOR_BASE;
use crate::cmdline;

/// virtio device type of a network card.
pub const DEVICE_NET: u32 = 1;
/// virtio device type of a block device.
pub const DEVICE_BLOCK: u32 = 2;
/// virtio device type of a console.
pub const DEVICE_CONSOLE: u32 = 3;

/// Feature bit every modern device offers and we require.
pub const F_VERSION_1: u32 = 32;
/// Feature bit: used_event / avail_event notification suppression.
pub const F_EVENT_IDX: u32 = 29;

/// Where a device's register window is (its size is checked, not kept: we use the first
/// 0x200 bytes) and which GSI it interrupts on.
#[derive(Clone, Copy, Debug)]
pub struct DeviceSlot {
    /// Physical address of the register window.
    pub base: u64,
    /// Its interrupt line.
    pub gsi: u32,
}

impl DeviceSlot {
    /// The interrupt vector of the device's GSI, if the GSI has one.
    pub fn vector(&self) -> Option<u8> {
        let vector = u32::from(GSI_VECTOR_BASE) + self.gsi;
        u8::try_from(vector).ok().filter(|&v| v < 0xf0)
    }
}

/// The devices of the command line's `virtio_mmio.device=<size>@<base>:<gsi>[:<id>]` words, in
/// order (malformed words are skipped).
pub fn slots(cmdline: &str) -> impl Iterator<Item = DeviceSlot> + '_ {
    cmdline::values(cmdline, "virtio_mmio.device").filter_map(parse_slot)
}

fn parse_slot(value: &str) -> Option<DeviceSlot> {
    let (size, rest) = value.split_once('@')?;
    parse_size(size).filter(|&size| size > 0)?;
    let mut fields = rest.split(':');
    let base = parse_number(fields.next()?)?;
    let gsi = parse_number(fields.next()?)?;
    Some(DeviceSlot {
        base,
        gsi: u32::try_from(gsi).ok()?,
    })
}

/// A size with an optional K/M/G suffix (as Linux's memparse reads it).
fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 10),
        b'M' | b'm' => (&text[..text.len() - 1], 20),
        b'G' | b'g' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    parse_number(digits)?.checked_mul(1 << shift)
}

/// A decimal or 0x-prefixed hexadecimal number.
pub fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}
