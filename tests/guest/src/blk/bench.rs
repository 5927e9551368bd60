//! `blk bench`: random or sequential reads or writes of one block size at a fixed queue depth
//! for a number of seconds, timed with the 100 Hz tick; reports IOPS and MB/s.

use core::fmt;

use super::pattern::SECTOR;
use super::pipeline::{self, Order, Staging};
use super::{Disk, Op, Status, Transfer};
use crate::dma::DmaRegion;
use crate::io::Io;
use crate::ticks::{self, HZ};

/// Seed of the random offsets (runs are reproducible).
const OFFSET_SEED: u64 = 0x2545_f491_4f6c_dd1d;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Not one of the four modes.
    #[error("unknown mode (randread, randwrite, seqread, seqwrite)")]
    Mode,
    /// The block size is not a multiple of 512 within the device's segment limit.
    #[error("block size {block} must be a multiple of 512 up to {max}")]
    BlockSize {
        /// Requested size.
        block: u64,
        /// The device's limit.
        max: u32,
    },
    /// The queue depth is 0 or more than the queue holds.
    #[error("queue depth {depth} must be 1..={max}")]
    Depth {
        /// Requested depth.
        depth: u64,
        /// Most requests in flight.
        max: usize,
    },
    /// Depth times block size exceeds the staging buffer.
    #[error("queue depth x block size exceeds the {0}-byte staging buffer")]
    Staging(usize),
    /// The disk is smaller than one block.
    #[error("the disk is smaller than one block")]
    DiskTooSmall,
    /// The device failed a request.
    #[error("{op} at sector {sector}: status {} ({})", status.0, status.name())]
    Device {
        /// Operation name.
        op: &'static str,
        /// First sector.
        sector: u64,
        /// Status byte.
        status: Status,
    },
}

/// What was measured.
pub struct Report {
    mode: &'static str,
    block: u64,
    depth: usize,
    ios: u64,
    ticks: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let ticks = self.ticks.max(1);
        let iops = self.ios * HZ / ticks;
        let centi_mb_per_s = self.ios * self.block * HZ * 100 / ticks / 1_000_000;
        write!(
            f,
            "bench mode={} bs={} qd={} ios={} secs={}.{:02} iops={} mbps={}.{:02}",
            self.mode,
            self.block,
            self.depth,
            self.ios,
            ticks / HZ,
            ticks % HZ * 100 / HZ,
            iops,
            centi_mb_per_s / 100,
            centi_mb_per_s % 100
        )
    }
}

/// Runs `mode` with `block`-byte requests, `depth` in flight, for `seconds`.
pub fn run(
    disk: &mut Disk,
    io: &mut Io,
    buffer: &mut DmaRegion,
    mode: &str,
    block: u64,
    depth: u64,
    seconds: u64,
) -> Result<Report, BenchError> {
    let (mode, op, random) = match mode {
        "randread" => ("randread", Op::Read, true),
        "randwrite" => ("randwrite", Op::Write, true),
        "seqread" => ("seqread", Op::Read, false),
        "seqwrite" => ("seqwrite", Op::Write, false),
        _ => return Err(BenchError::Mode),
    };
    let max = disk.size_max();
    if block == 0 || !block.is_multiple_of(SECTOR as u64) || block > u64::from(max) {
        return Err(BenchError::BlockSize { block, max });
    }
    if depth == 0 || depth > disk.depth() as u64 {
        return Err(BenchError::Depth {
            depth,
            max: disk.depth(),
        });
    }
    let (block_sectors, depth) = (block / SECTOR as u64, depth as usize);
    if depth * block as usize > buffer.len() {
        return Err(BenchError::Staging(buffer.len()));
    }
    let blocks = disk.capacity / block_sectors;
    if blocks == 0 {
        return Err(BenchError::DiskTooSmall);
    }
    let mut offsets = Offsets {
        random,
        state: OFFSET_SEED,
        next: 0,
        blocks,
    };
    let start = ticks::now();
    let deadline = start + seconds * HZ;
    let staging = Staging {
        buffer: Some(buffer),
        depth,
        chunk: block as usize,
        // As fio does: a slow request holds up no other slot.
        order: Order::Completion,
    };
    let next = |_: &mut [u8]| {
        (ticks::now() < deadline).then(|| Transfer {
            op,
            sector: offsets.next_block() * block_sectors,
            sectors: block_sectors as u32,
        })
    };
    let ios = pipeline::run(disk, io, staging, next, |transfer, status, _| {
        if status == Status::OK {
            return Ok(());
        }
        Err(BenchError::Device {
            op: transfer.op.name(),
            sector: transfer.sector,
            status,
        })
    })?;
    Ok(Report {
        mode,
        block,
        depth,
        ios,
        ticks: ticks::now() - start,
    })
}

/// Block numbers: xorshift64 modulo the block count, or 0, 1, 2... wrapping.
struct Offsets {
    random: bool,
    state: u64,
    next: u64,
    blocks: u64,
}

impl Offsets {
    fn next_block(&mut self) -> u64 {
        if self.random {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            return self.state % self.blocks;
        }
        let block = self.next;
        self.next = (self.next + 1) % self.blocks;
        block
    }
}
