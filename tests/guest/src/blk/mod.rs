//! virtio-blk driver: one request queue, requests built in per-slot DMA areas (header, inline
//! buffer, status) with fixed descriptors (slot s owns descriptors 3s..3s+2), many requests in
//! flight, completions tracked per slot. `pipeline` streams transfers through the slots;
//! `commands` and `bench` are the shell's `blk` commands.

pub mod bench;
pub mod commands;
pub mod pattern;
pub mod pipeline;

use core::ptr::{read_volatile, write_volatile};

use crate::apic::IrqRoute;
use crate::dma::{self, DmaRegion};
use crate::io::Io;
use crate::virtio::mmio::{StartError, Transport};
use crate::virtio::queue::{Virtqueue, DESC_NEXT, DESC_WRITE};
use pattern::SECTOR;

const F_SIZE_MAX: u32 = 1;
const F_SEG_MAX: u32 = 2;
const F_RO: u32 = 5;
const F_BLK_SIZE: u32 = 6;
const F_FLUSH: u32 = 9;
const F_DISCARD: u32 = 13;
const F_WRITE_ZEROES: u32 = 14;

mod config {
    pub const CAPACITY: u64 = 0;
    pub const SIZE_MAX: u64 = 8;
    pub const MAX_DISCARD_SECTORS: u64 = 36;
    pub const MAX_WRITE_ZEROES_SECTORS: u64 = 48;
}

const QUEUE_SIZE: u16 = 256;
/// Most requests in flight.
pub const MAX_DEPTH: usize = 64;
const SLOT_BYTES: u64 = 64;
const HEADER_BYTES: u32 = 16;
const INLINE_OFFSET: u64 = 16;
const STATUS_OFFSET: u64 = 48;
const ID_BYTES: u32 = 20;
const SEGMENT_BYTES: u32 = 16;
/// A data segment's limit when the device does not state one.
const DEFAULT_SIZE_MAX: u32 = 1 << 20;
const NO_STATUS: u8 = 0xff;

/// What a request does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    /// Read sectors into the data buffer.
    Read,
    /// Write the data buffer to sectors.
    Write,
    /// Make every completed write durable.
    Flush,
    /// Deallocate sectors.
    Discard,
    /// Make sectors read as zero.
    WriteZeroes,
    /// Read the device's serial number.
    GetId,
}

impl Op {
    fn request_type(self) -> u32 {
        match self {
            Op::Read => 0,
            Op::Write => 1,
            Op::Flush => 4,
            Op::GetId => 8,
            Op::Discard => 11,
            Op::WriteZeroes => 13,
        }
    }

    /// Lower-case name, as commands print it.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Discard => "discard",
            Op::WriteZeroes => "write-zeroes",
            Op::GetId => "get-id",
        }
    }
}

/// One request: `op` on `sectors` sectors from `sector` (data requests use the caller's
/// buffer at `data`; discard and write-zeroes build their segment inline).
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    /// What to do.
    pub op: Op,
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub sectors: u32,
}

impl Transfer {
    /// Bytes of the caller's data buffer the request uses.
    pub fn data_bytes(&self) -> usize {
        match self.op {
            Op::Read | Op::Write => self.sectors as usize * SECTOR,
            _ => 0,
        }
    }
}

/// The status byte the device returned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Status(pub u8);

impl Status {
    /// VIRTIO_BLK_S_OK.
    pub const OK: Status = Status(0);

    /// The status's name in the virtio spec.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "OK",
            1 => "IOERR",
            2 => "UNSUPP",
            _ => "unknown",
        }
    }
}

/// A started virtio-blk device.
pub struct Disk {
    transport: Transport,
    queue: Virtqueue,
    slots: DmaRegion,
    depth: usize,
    status: [u8; MAX_DEPTH],
    /// Capacity in 512-byte sectors.
    pub capacity: u64,
    /// Whether the device is read-only (VIRTIO_BLK_F_RO).
    pub read_only: bool,
    features: u64,
    size_max: u32,
    max_discard: u32,
    max_write_zeroes: u32,
}

impl Disk {
    /// Starts the block device behind `transport` and routes its interrupt to `apic_id`.
    pub fn start(
        io: &mut Io,
        mut transport: Transport,
        route: &IrqRoute,
        apic_id: u32,
    ) -> Result<Disk, StartError> {
        let wanted = [
            F_SIZE_MAX,
            F_SEG_MAX,
            F_RO,
            F_BLK_SIZE,
            F_FLUSH,
            F_DISCARD,
            F_WRITE_ZEROES,
        ]
        .iter()
        .fold(0u64, |acc, bit| acc | 1 << bit);
        let features = transport.negotiate(io, wanted)?;
        let queue = transport.setup_queue(io, 0, QUEUE_SIZE)?;
        let slots = dma::alloc(MAX_DEPTH * SLOT_BYTES as usize, 4096)?;
        let has = |bit: u32| features & 1 << bit != 0;
        let size_max = if has(F_SIZE_MAX) {
            transport.config_u32(io, config::SIZE_MAX)
        } else {
            DEFAULT_SIZE_MAX
        };
        let max_discard = if has(F_DISCARD) {
            transport.config_u32(io, config::MAX_DISCARD_SECTORS)
        } else {
            0
        };
        let max_write_zeroes = if has(F_WRITE_ZEROES) {
            transport.config_u32(io, config::MAX_WRITE_ZEROES_SECTORS)
        } else {
            0
        };
        let capacity = transport.config_u64(io, config::CAPACITY);
        transport.activate(io, route, apic_id);
        let depth = MAX_DEPTH.min(usize::from(queue.size()) / 3);
        Ok(Disk {
            transport,
            queue,
            slots,
            depth,
            status: [NO_STATUS; MAX_DEPTH],
            capacity,
            read_only: has(F_RO),
            features,
            size_max: size_max.max(SECTOR as u32),
            max_discard,
            max_write_zeroes,
        })
    }

    /// Re-reads the capacity after a configuration change (the host grew the disk); returns
    /// the new capacity in sectors when it moved.
    pub fn refresh_capacity(&mut self, io: &mut Io) -> Option<u64> {
        if !self.transport.config_changed(io) {
            return None;
        }
        let capacity = self.transport.config_u64(io, config::CAPACITY);
        (capacity != self.capacity).then(|| {
            self.capacity = capacity;
            capacity
        })
    }

    /// Most requests this disk can have in flight.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Largest data buffer of one request, bytes.
    pub fn size_max(&self) -> u32 {
        self.size_max
    }

    /// Most sectors one `op` request may cover (0: the device does not support `op`).
    pub fn max_sectors(&self, op: Op) -> u32 {
        match op {
            Op::Discard => self.max_discard,
            Op::WriteZeroes => self.max_write_zeroes,
            Op::Flush if self.features & 1 << F_FLUSH == 0 => 0,
            _ => self.size_max / SECTOR as u32,
        }
    }

    /// Queues `transfer` in `slot` (not yet kicked), with data at physical `data`.
    pub fn submit(&mut self, slot: usize, transfer: &Transfer, data: u64) {
        assert!(slot < self.depth, "slot {slot} beyond the queue depth");
        let area = self.slots.addr() + SLOT_BYTES * slot as u64;
        let sector = match transfer.op {
            Op::Discard | Op::WriteZeroes => 0,
            _ => transfer.sector,
        };
        // SAFETY: the slot's area in our DMA region; the device is not using this slot.
        unsafe {
            write_volatile(area as *mut u32, transfer.op.request_type());
            write_volatile((area + 4) as *mut u32, 0);
            write_volatile((area + 8) as *mut u64, sector);
            write_volatile((area + STATUS_OFFSET) as *mut u8, NO_STATUS);
        }
        let (buffer, len, flags) = match transfer.op {
            Op::Read => (data, transfer.sectors * SECTOR as u32, DESC_WRITE),
            Op::Write => (data, transfer.sectors * SECTOR as u32, 0),
            Op::GetId => (area + INLINE_OFFSET, ID_BYTES, DESC_WRITE),
            Op::Discard | Op::WriteZeroes => {
                let segment = area + INLINE_OFFSET;
                // SAFETY: the slot's inline buffer, as above.
                unsafe {
                    write_volatile(segment as *mut u64, transfer.sector);
                    write_volatile((segment + 8) as *mut u32, transfer.sectors);
                    write_volatile((segment + 12) as *mut u32, 0);
                }
                (segment, SEGMENT_BYTES, 0)
            }
            Op::Flush => (0, 0, 0),
        };
        let head = 3 * slot as u16;
        let status = head + 2;
        if len == 0 {
            self.queue
                .set_descriptor(head, area, HEADER_BYTES, DESC_NEXT, status);
        } else {
            self.queue
                .set_descriptor(head, area, HEADER_BYTES, DESC_NEXT, head + 1);
            self.queue
                .set_descriptor(head + 1, buffer, len, flags | DESC_NEXT, status);
        }
        self.queue
            .set_descriptor(status, area + STATUS_OFFSET, 1, DESC_WRITE, 0);
        self.status[slot] = NO_STATUS;
        self.queue.publish(head);
    }

    /// Shows submitted requests to the device (notifying it if it wants).
    pub fn kick(&mut self) {
        self.queue.kick();
    }

    /// The status of `slot` once its request completed (waiting for completions as needed).
    pub fn wait_for_slot(&mut self, io: &mut Io, slot: usize) -> Status {
        loop {
            if let Some(status) = self.slot_status(slot) {
                return status;
            }
            self.transport.wait_for_used(io, &mut self.queue);
        }
    }

    /// The status of `slot` if its request completed (the slot is then free), without waiting.
    pub fn slot_status(&mut self, slot: usize) -> Option<Status> {
        while let Some(used) = self.queue.pop_used() {
            let done = usize::from(used.id / 3);
            let area = self.slots.addr() + SLOT_BYTES * done as u64;
            // SAFETY: the completed slot's status byte; the device is done with it.
            self.status[done] = unsafe { read_volatile((area + STATUS_OFFSET) as *const u8) };
        }
        (self.status[slot] != NO_STATUS)
            .then(|| Status(core::mem::replace(&mut self.status[slot], NO_STATUS)))
    }

    /// The serial number (GET_ID), up to its first NUL; empty if the device has none.
    pub fn serial(&mut self, io: &mut Io) -> Result<Serial, Status> {
        let transfer = Transfer {
            op: Op::GetId,
            sector: 0,
            sectors: 0,
        };
        self.submit(0, &transfer, 0);
        self.kick();
        let status = self.wait_for_slot(io, 0);
        if status != Status::OK {
            return Err(status);
        }
        let mut serial = Serial::default();
        let inline = self.slots.addr() + INLINE_OFFSET;
        for (i, byte) in serial.bytes.iter_mut().enumerate() {
            // SAFETY: slot 0's inline buffer, written by the completed GET_ID.
            *byte = unsafe { read_volatile((inline + i as u64) as *const u8) };
        }
        Ok(serial)
    }
}

/// A GET_ID answer: up to 20 bytes, NUL-padded.
#[derive(Default)]
pub struct Serial {
    bytes: [u8; ID_BYTES as usize],
}

impl Serial {
    /// The serial as text (up to the first NUL; non-printable bytes as '?').
    pub fn chars(&self) -> impl Iterator<Item = char> + '_ {
        self.bytes.iter().take_while(|&&b| b != 0).map(|&b| {
            if b.is_ascii_graphic() {
                b as char
            } else {
                '?'
            }
        })
    }
}
