//! The shell's `blk` commands over the disks found at boot (README.md lists their output):
//! list, write/verify a seeded pattern, checksum a range, flush, discard, zero, bench.

use core::fmt::Write as _;

use super::bench::{self, BenchError};
use super::pattern::{self, Fnv1a, SECTOR};
use super::pipeline::{self, Order, Staging};
use super::{Disk, Op, Status, Transfer};
use crate::console;
use crate::dma::{self, DmaError, DmaRegion};
use crate::io::Io;
use crate::virtio::parse_number;

/// Most disks the shell addresses.
pub const MAX_DISKS: usize = 8;
/// Size of the staging buffer all data commands share.
pub const STAGING_BYTES: usize = 16 << 20;
/// Requests in flight for write/verify/sum.
const STREAM_DEPTH: usize = 32;
/// Sectors per request for write/verify/sum (64 KiB).
const STREAM_CHUNK_SECTORS: u32 = 128;

const USAGE: &str = "blk list | write D S N SEED | verify D S N SEED | sum D S N | flush D | \
discard D S N | zero D S N | bench D randread|randwrite|seqread|seqwrite BS QD SECS";

/// The disks, in device order (blk0, blk1, ...), and the staging buffer their commands share.
pub struct Disks {
    disks: [Option<Disk>; MAX_DISKS],
    count: usize,
    staging: Option<DmaRegion>,
}

/// Why a `blk` command failed (printed as `error: <message>`).
#[derive(Debug, thiserror::Error)]
pub enum BlkCommandError {
    /// Bad arguments.
    #[error("usage: {USAGE}")]
    Usage,
    /// No such disk.
    #[error("no disk blk{0}")]
    NoDisk(usize),
    /// The range does not fit the disk.
    #[error("blk{disk}: sectors {start}+{count} beyond capacity {capacity}")]
    BeyondCapacity {
        /// Disk index.
        disk: usize,
        /// First sector.
        start: u64,
        /// Sector count.
        count: u64,
        /// Capacity in sectors.
        capacity: u64,
    },
    /// The device did not offer the operation.
    #[error("blk{disk}: the device does not support {op}")]
    Unsupported {
        /// Disk index.
        disk: usize,
        /// Operation name.
        op: &'static str,
    },
    /// The device answered with an error status.
    #[error("blk{disk}: {op} at sector {sector}: status {} ({})", status.0, status.name())]
    Device {
        /// Disk index.
        disk: usize,
        /// Operation name.
        op: &'static str,
        /// First sector of the failed request.
        sector: u64,
        /// The device's status byte.
        status: Status,
    },
    /// No memory for the staging buffer.
    #[error("staging buffer: {0}")]
    Staging(#[from] DmaError),
    /// The benchmark could not run.
    #[error("bench: {0}")]
    Bench(#[from] BenchError),
}

impl Disks {
    /// No disks yet.
    pub const fn new() -> Disks {
        Disks {
            disks: [const { None }; MAX_DISKS],
            count: 0,
            staging: None,
        }
    }

    /// Adds the next disk; false when full.
    pub fn add(&mut self, disk: Disk) -> bool {
        let Some(slot) = self.disks.get_mut(self.count) else {
            return false;
        };
        *slot = Some(disk);
        self.count += 1;
        true
    }

    /// Number of disks.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Takes in configuration changes while the shell is idle: a disk the host grew is
    /// announced as `blk<D>: capacity changed to <sectors>`. Returns whether any changed.
    pub fn service(&mut self, io: &mut Io) -> bool {
        let mut changed = false;
        for (index, disk) in self.disks[..self.count].iter_mut().flatten().enumerate() {
            if let Some(capacity) = disk.refresh_capacity(io) {
                crate::say!(io, "blk{index}: capacity changed to {capacity}");
                changed = true;
            }
        }
        changed
    }

    /// Flushes the write cache of every disk that has one (VIRTIO_BLK_F_FLUSH; without it
    /// the device writes through). Returns how many were flushed.
    pub fn flush_all(&mut self, io: &mut Io) -> Result<usize, BlkCommandError> {
        let mut flushed = 0;
        for (index, disk) in self.disks.iter_mut().enumerate() {
            match disk {
                Some(disk) if disk.max_sectors(Op::Flush) > 0 => {
                    ranged(disk, index, io, Op::Flush, 0, 1)?;
                    flushed += 1;
                }
                _ => {}
            }
        }
        Ok(flushed)
    }

    /// Runs `blk <args>` and prints its result line(s).
    pub fn command(&mut self, io: &mut Io, args: &str) {
        if let Err(error) = self.execute(io, args) {
            console::line(io, format_args!("error: {error}"));
        }
    }

    fn execute(&mut self, io: &mut Io, args: &str) -> Result<(), BlkCommandError> {
        let mut words = args.split_ascii_whitespace();
        let command = words.next().ok_or(BlkCommandError::Usage)?;
        if command == "list" {
            self.list(io);
            return Ok(());
        }
        let mut number = || {
            words
                .next()
                .and_then(parse_number)
                .ok_or(BlkCommandError::Usage)
        };
        let index = number()? as usize;
        match command {
            "write" | "verify" => {
                let (start, count, seed) = (number()?, number()?, number()?);
                let staging = staging(&mut self.staging)?;
                let disk = disk_in_range(&mut self.disks, index, start, count)?;
                if command == "write" {
                    write_pattern(disk, index, io, staging, start, count, seed)?;
                    console::line(io, format_args!("write ok"));
                } else {
                    match verify_pattern(disk, index, io, staging, start, count, seed)? {
                        None => console::line(io, format_args!("verify ok")),
                        Some(bad) => {
                            console::line(io, format_args!("verify mismatch sector={bad}"))
                        }
                    }
                }
            }
            "sum" => {
                let (start, count) = (number()?, number()?);
                let staging = staging(&mut self.staging)?;
                let disk = disk_in_range(&mut self.disks, index, start, count)?;
                let sum = checksum(disk, index, io, staging, start, count)?;
                console::line(io, format_args!("sum={sum:016x}"));
            }
            "flush" => {
                let disk = disk(&mut self.disks, index)?;
                ranged(disk, index, io, Op::Flush, 0, 1)?;
                console::line(io, format_args!("flush ok"));
            }
            "discard" | "zero" => {
                let (start, count) = (number()?, number()?);
                let disk = disk_in_range(&mut self.disks, index, start, count)?;
                let op = if command == "discard" {
                    Op::Discard
                } else {
                    Op::WriteZeroes
                };
                ranged(disk, index, io, op, start, count)?;
                console::line(io, format_args!("{command} ok"));
            }
            "bench" => {
                let mode = words.next().ok_or(BlkCommandError::Usage)?;
                let mut number = || {
                    words
                        .next()
                        .and_then(parse_number)
                        .ok_or(BlkCommandError::Usage)
                };
                let (block, depth, seconds) = (number()?, number()?, number()?);
                let staging = staging(&mut self.staging)?;
                let disk = disk(&mut self.disks, index)?;
                let report = bench::run(disk, io, staging, mode, block, depth, seconds)?;
                console::line(io, format_args!("{report}"));
            }
            _ => return Err(BlkCommandError::Usage),
        }
        Ok(())
    }

    fn list(&mut self, io: &mut Io) {
        if self.count == 0 {
            console::line(io, format_args!("blk: no disks"));
        }
        for (index, disk) in self.disks[..self.count].iter_mut().flatten().enumerate() {
            let serial = disk.serial(io);
            let mut out = console::out(io);
            let _ = write!(
                out,
                "blk{index} capacity={} ro={} serial=",
                disk.capacity,
                u8::from(disk.read_only)
            );
            let _ = match serial {
                Ok(serial) => serial.chars().try_for_each(|c| out.write_char(c)),
                Err(status) => write!(out, "(GET_ID status {})", status.0),
            };
            let _ = out.write_char('\n');
        }
    }
}

fn disk(disks: &mut [Option<Disk>], index: usize) -> Result<&mut Disk, BlkCommandError> {
    disks
        .get_mut(index)
        .and_then(Option::as_mut)
        .ok_or(BlkCommandError::NoDisk(index))
}

/// The disk, if `start..start + count` lies within it.
fn disk_in_range(
    disks: &mut [Option<Disk>],
    index: usize,
    start: u64,
    count: u64,
) -> Result<&mut Disk, BlkCommandError> {
    let found = disk(disks, index)?;
    let capacity = found.capacity;
    if start.checked_add(count).is_none_or(|end| end > capacity) {
        return Err(BlkCommandError::BeyondCapacity {
            disk: index,
            start,
            count,
            capacity,
        });
    }
    Ok(found)
}

/// The shared staging buffer, allocated on first use.
fn staging(slot: &mut Option<DmaRegion>) -> Result<&mut DmaRegion, DmaError> {
    if slot.is_none() {
        *slot = Some(dma::alloc(STAGING_BYTES, 1 << 21)?);
    }
    Ok(slot.as_mut().expect("just allocated"))
}

/// Transfers of at most `per_request` sectors covering `start..start + count`.
fn chunks(op: Op, start: u64, count: u64, per_request: u32) -> impl FnMut() -> Option<Transfer> {
    let end = start + count;
    let mut sector = start;
    move || {
        if sector >= end {
            return None;
        }
        let sectors = (end - sector).min(u64::from(per_request)) as u32;
        let transfer = Transfer {
            op,
            sector,
            sectors,
        };
        sector += u64::from(sectors);
        Some(transfer)
    }
}

fn stream_staging<'a>(disk: &Disk, buffer: &'a mut DmaRegion) -> (Staging<'a>, u32) {
    let sectors = STREAM_CHUNK_SECTORS.min(disk.size_max() / SECTOR as u32);
    let staging = Staging {
        buffer: Some(buffer),
        depth: STREAM_DEPTH,
        order: Order::Submission,
        chunk: sectors as usize * SECTOR,
    };
    (staging, sectors)
}

/// Maps a non-OK status to the command error.
fn check(disk: usize, transfer: &Transfer, status: Status) -> Result<(), BlkCommandError> {
    if status == Status::OK {
        return Ok(());
    }
    Err(BlkCommandError::Device {
        disk,
        op: transfer.op.name(),
        sector: transfer.sector,
        status,
    })
}

fn write_pattern(
    disk: &mut Disk,
    index: usize,
    io: &mut Io,
    buffer: &mut DmaRegion,
    start: u64,
    count: u64,
    seed: u64,
) -> Result<(), BlkCommandError> {
    let (staging, per_request) = stream_staging(disk, buffer);
    let mut next = chunks(Op::Write, start, count, per_request);
    let fill = |piece: &mut [u8]| {
        let transfer = next()?;
        for (i, sector) in piece
            .chunks_exact_mut(SECTOR)
            .take(transfer.sectors as usize)
            .enumerate()
        {
            pattern::fill_sector(seed, transfer.sector + i as u64, sector);
        }
        Some(transfer)
    };
    pipeline::run(disk, io, staging, fill, |t, status, _| {
        check(index, t, status)
    })?;
    Ok(())
}

/// Reads the range back; `Some(sector)` is the first sector not holding the pattern.
fn verify_pattern(
    disk: &mut Disk,
    index: usize,
    io: &mut Io,
    buffer: &mut DmaRegion,
    start: u64,
    count: u64,
    seed: u64,
) -> Result<Option<u64>, BlkCommandError> {
    let (staging, per_request) = stream_staging(disk, buffer);
    let mut next = chunks(Op::Read, start, count, per_request);
    let mut first_bad = None;
    pipeline::run(
        disk,
        io,
        staging,
        |_| next(),
        |transfer, status, data| {
            check(index, transfer, status)?;
            if first_bad.is_none() {
                first_bad = data
                    .chunks_exact(SECTOR)
                    .take(transfer.sectors as usize)
                    .zip(transfer.sector..)
                    .find(|(bytes, sector)| !pattern::sector_matches(seed, *sector, bytes))
                    .map(|(_, sector)| sector);
            }
            Ok::<(), BlkCommandError>(())
        },
    )?;
    Ok(first_bad)
}

/// FNV-1a 64 of the bytes of the range.
fn checksum(
    disk: &mut Disk,
    index: usize,
    io: &mut Io,
    buffer: &mut DmaRegion,
    start: u64,
    count: u64,
) -> Result<u64, BlkCommandError> {
    let (staging, per_request) = stream_staging(disk, buffer);
    let mut next = chunks(Op::Read, start, count, per_request);
    let mut hash = Fnv1a::new();
    pipeline::run(
        disk,
        io,
        staging,
        |_| next(),
        |transfer, status, data| {
            check(index, transfer, status)?;
            hash.update(&data[..transfer.sectors as usize * SECTOR]);
            Ok::<(), BlkCommandError>(())
        },
    )?;
    Ok(hash.value())
}

/// Flush, discard or write-zeroes of a range, split into requests the device accepts.
fn ranged(
    disk: &mut Disk,
    index: usize,
    io: &mut Io,
    op: Op,
    start: u64,
    count: u64,
) -> Result<(), BlkCommandError> {
    let per_request = disk.max_sectors(op);
    if per_request == 0 {
        return Err(BlkCommandError::Unsupported {
            disk: index,
            op: op.name(),
        });
    }
    let mut next = chunks(op, start, count, per_request);
    let staging = Staging {
        buffer: None,
        depth: STREAM_DEPTH,
        order: Order::Submission,
        chunk: 0,
    };
    pipeline::run(
        disk,
        io,
        staging,
        |_| next(),
        |t, status, _| check(index, t, status),
    )?;
    Ok(())
}
