//! Writing a streamOptimized VMDK (the OVF disk format) to any `Write`, front to back with no
//! seeking, so an export can be sent over HTTP as it is generated: header (grain directory
//! "at end"), descriptor, deflate-compressed grains in disk order (all-zero and unallocated
//! grains skipped), a marked grain table after each table's grains, then the marked grain
//! directory, the footer (the header with the real directory offset) and end-of-stream.

use std::io::Write;

use flate2::{Compress, Compression, FlushCompress, Status};

use super::descriptor;
use super::header::{
    encode_grain_record, encode_marker, MarkerKind, SparseHeader, COMPRESS_DEFLATE,
    FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NEWLINE_TEST, GD_AT_END, GRAIN_RECORD_HEADER, SECTOR,
};
use super::WriteVmdkError;
use crate::chain::Progress;
use crate::source::CopySource;

/// Sectors per grain in what we write (64 KiB, as VMware and qemu write).
pub const GRAIN_SECTORS: u64 = 128;
/// Grain table entries per table in what we write.
pub const GTES_PER_GT: u32 = 512;
/// Sectors reserved for the embedded descriptor.
pub const DESCRIPTOR_SECTORS: u64 = 20;
/// zlib level used for grains (zlib's default, as qemu-img uses).
const COMPRESSION_LEVEL: u32 = 6;

/// Writes `source` as a streamOptimized VMDK whose descriptor names `file_name`; returns the
/// bytes written. `progress(done, capacity)` may cancel.
pub fn write_stream_optimized<W: Write>(
    source: &mut CopySource,
    file_name: &str,
    out: W,
    progress: Progress,
) -> Result<u64, WriteVmdkError> {
    let header = stream_header(source.capacity())?;
    let mut writer = StreamWriter::new(out, header);
    writer.start(file_name)?;
    source.for_each_data_chunk(GRAIN_SECTORS * SECTOR, progress, |offset, data| {
        writer.grain(offset / SECTOR, data)
    })?;
    writer.finish()
}

/// The header of a streamOptimized file of `capacity` bytes (directory at the end).
fn stream_header(capacity: u64) -> Result<SparseHeader, WriteVmdkError> {
    Ok(SparseHeader {
        version: 3,
        flags: FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
        gd_offset: GD_AT_END,
        overhead: GRAIN_SECTORS,
        compress_algorithm: COMPRESS_DEFLATE,
        ..super::written_header(capacity)?
    })
}

/// The state of a stream being written.
struct StreamWriter<W: Write> {
    out: W,
    header: SparseHeader,
    /// Sectors written so far.
    sector: u64,
    /// Grain directory: sector of each grain table (0 for tables with no grains).
    gd: Vec<u32>,
    /// The grain table being filled and its index.
    gt: Vec<u32>,
    gt_index: u64,
    compressor: Compress,
    record: Vec<u8>,
    grain: Vec<u8>,
}

impl<W: Write> StreamWriter<W> {
    fn new(out: W, header: SparseHeader) -> Self {
        let grain_bytes = header.grain_bytes() as usize;
        Self {
            out,
            gd: vec![0; header.gd_entries() as usize],
            gt: vec![0; header.gtes_per_gt as usize],
            gt_index: 0,
            header,
            sector: 0,
            compressor: Compress::new(Compression::new(COMPRESSION_LEVEL), true),
            record: Vec::with_capacity(grain_bytes + grain_bytes / 8 + 1024),
            grain: vec![0; grain_bytes],
        }
    }

    /// Header, descriptor and the padding up to the first grain.
    fn start(&mut self, file_name: &str) -> Result<(), WriteVmdkError> {
        let text = descriptor::build_sparse("streamOptimized", self.header.capacity, file_name);
        let mut front = vec![0u8; (self.header.overhead * SECTOR) as usize];
        front[..SECTOR as usize].copy_from_slice(&self.header.encode());
        let at = (self.header.descriptor_offset * SECTOR) as usize;
        let room = (self.header.descriptor_size * SECTOR) as usize;
        if text.len() > room {
            return Err(WriteVmdkError::TooLarge("the descriptor".into()));
        }
        front[at..at + text.len()].copy_from_slice(text.as_bytes());
        self.emit(&front)
    }

    /// Appends the grain starting at disk sector `lba` (`data` at most one grain).
    fn grain(&mut self, lba: u64, data: &[u8]) -> Result<(), WriteVmdkError> {
        let index = lba / self.header.sectors_per_gt();
        if index != self.gt_index {
            self.flush_gt()?;
            self.gt_index = index;
        }
        let entry = ((lba % self.header.sectors_per_gt()) / self.header.grain_size) as usize;
        self.gt[entry] = self.sector_u32()?;
        self.compress(lba, data)?;
        let record = std::mem::take(&mut self.record);
        let result = self.emit(&record);
        self.record = record;
        result
    }

    /// Fills `self.record` with the padded grain record for `data` (zero-filled to a grain).
    fn compress(&mut self, lba: u64, data: &[u8]) -> Result<(), WriteVmdkError> {
        let input: &[u8] = if data.len() == self.grain.len() {
            data
        } else {
            self.grain[..data.len()].copy_from_slice(data);
            self.grain[data.len()..].fill(0);
            &self.grain
        };
        self.record.clear();
        self.record.extend_from_slice(&[0; GRAIN_RECORD_HEADER]);
        self.compressor.reset();
        let status = self
            .compressor
            .compress_vec(input, &mut self.record, FlushCompress::Finish)
            .map_err(|e| WriteVmdkError::Compress(e.to_string()))?;
        if status != Status::StreamEnd {
            return Err(WriteVmdkError::Compress(
                "compressed grain overflowed its buffer".into(),
            ));
        }
        let size = (self.record.len() - GRAIN_RECORD_HEADER) as u32;
        self.record[..GRAIN_RECORD_HEADER].copy_from_slice(&encode_grain_record(lba, size));
        let padded = self.record.len().next_multiple_of(SECTOR as usize);
        self.record.resize(padded, 0);
        Ok(())
    }

    /// Writes the current grain table (if it has grains) behind its marker.
    fn flush_gt(&mut self) -> Result<(), WriteVmdkError> {
        if self.gt.iter().all(|&e| e == 0) {
            return Ok(());
        }
        let sectors = self.header.gt_sectors();
        self.emit(&encode_marker(MarkerKind::GrainTable, sectors))?;
        self.gd[self.gt_index as usize] = self.sector_u32()?;
        let table = table_bytes(&self.gt, sectors);
        self.gt.fill(0);
        self.emit(&table)
    }

    /// The last grain table, the directory, the footer and the end-of-stream marker.
    fn finish(mut self) -> Result<u64, WriteVmdkError> {
        self.flush_gt()?;
        let gd_sectors = (self.gd.len() as u64 * 4).div_ceil(SECTOR);
        self.emit(&encode_marker(MarkerKind::GrainDirectory, gd_sectors))?;
        let gd_offset = self.sector;
        let directory = table_bytes(&self.gd, gd_sectors);
        self.emit(&directory)?;
        self.emit(&encode_marker(MarkerKind::Footer, 1))?;
        let footer = SparseHeader {
            gd_offset,
            ..self.header.clone()
        };
        self.emit(&footer.encode())?;
        self.emit(&encode_marker(MarkerKind::EndOfStream, 0))?;
        self.out.flush().map_err(WriteVmdkError::Write)?;
        Ok(self.sector * SECTOR)
    }

    /// The current position as a u32 sector number (grain tables hold 32-bit offsets).
    fn sector_u32(&self) -> Result<u32, WriteVmdkError> {
        u32::try_from(self.sector)
            .map_err(|_| WriteVmdkError::TooLarge("the VMDK file (over 2 TiB)".into()))
    }

    /// Writes whole sectors.
    fn emit(&mut self, bytes: &[u8]) -> Result<(), WriteVmdkError> {
        debug_assert_eq!(bytes.len() as u64 % SECTOR, 0);
        self.out.write_all(bytes).map_err(WriteVmdkError::Write)?;
        self.sector += bytes.len() as u64 / SECTOR;
        Ok(())
    }
}

/// `entries` as little-endian u32s, zero-padded to `sectors`.
pub(super) fn table_bytes(entries: &[u32], sectors: u64) -> Vec<u8> {
    let mut out = vec![0u8; (sectors * SECTOR) as usize];
    for (slot, entry) in out.chunks_exact_mut(4).zip(entries) {
        slot.copy_from_slice(&entry.to_le_bytes());
    }
    out
}
