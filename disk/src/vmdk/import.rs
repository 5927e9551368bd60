//! Converting a disk that arrives on a `Read` (an HTTP upload) into a new qcow2 as it streams,
//! with bounded memory: streamOptimized VMDKs record by record (the grains carry their own
//! disk addresses, so grain tables are skipped); monolithicSparse VMDKs when their grain
//! directory and tables precede the grains (they are read first, then the grains in file
//! order); and, where the caller allows it, flat extents (the disk's bytes as they are, read
//! a grain at a time). Anything else is refused with a reason. A failed import removes the
//! new image.

use std::io::{self, Read};
use std::path::Path;

use flate2::{Decompress, FlushDecompress, Status};

use super::descriptor;
use super::header::{
    le32, MarkerKind, SparseHeader, StreamRecord, FLAG_ZERO_GRAIN, GRAIN_RECORD_HEADER, MAGIC,
    SECTOR,
};
use crate::block::{BlockDevice, BlockError};
use crate::chain::Progress;
use crate::qcow2::{create, CreateError, CreateOptions, Qcow2Image, Qcow2Options};

/// The most metadata (bytes before the first grain) a monolithicSparse stream may carry:
/// enough for the fully preallocated grain tables of a 1 TiB disk.
pub const MAX_STREAM_METADATA: u64 = 64 << 20;
/// How much of a flat extent is read and written at once (one 64 KiB qcow2 cluster).
const FLAT_CHUNK: usize = 64 << 10;

/// Why a streamed VMDK could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportVmdkError {
    /// Reading the input failed
    #[error("reading the VMDK: {0}")]
    Read(#[source] io::Error),
    /// The input ended early
    #[error("the VMDK stream ended early ({0})")]
    Truncated(&'static str),
    /// The input is not a valid VMDK
    #[error("malformed VMDK: {0}")]
    Malformed(String),
    /// A valid VMDK this importer cannot take as a stream
    #[error("unsupported VMDK: {0}")]
    Unsupported(String),
    /// A flat extent that does not fit the disk
    #[error("flat extent of {bytes} bytes: {why}")]
    Flat {
        /// How many bytes had arrived when it was refused.
        bytes: u64,
        /// What is wrong with it.
        why: String,
    },
    /// The qcow2 image could not be created
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Writing the qcow2 image failed
    #[error(transparent)]
    Write(#[from] BlockError),
    /// The progress callback cancelled the import
    #[error("cancelled")]
    Cancelled,
}

/// What an import produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    /// The disk's size in bytes.
    pub capacity: u64,
    /// Bytes consumed (up to the end-of-stream marker or the last grain; a flat extent whole).
    pub bytes_read: u64,
}

/// Reads a sparse VMDK (streamOptimized or monolithicSparse) from `input` into a new qcow2
/// image at `dest` (which must not exist). `progress(disk_offset, capacity)` follows the
/// grains and may cancel; on any error `dest` is removed.
pub fn import_vmdk_stream<R: Read>(
    input: R,
    dest: &Path,
    progress: Progress,
) -> Result<ImportSummary, ImportVmdkError> {
    import_stream(input, dest, None, progress)
}

/// As [`import_vmdk_stream`], and input that does not start with the sparse VMDK magic is a
/// flat extent: the bytes of a disk of `flat_capacity` bytes (whole sectors, never more than
/// the capacity; a shorter extent leaves the rest of the disk reading zeros).
pub fn import_disk_stream<R: Read>(
    input: R,
    dest: &Path,
    flat_capacity: u64,
    progress: Progress,
) -> Result<ImportSummary, ImportVmdkError> {
    import_stream(input, dest, Some(flat_capacity), progress)
}

fn import_stream<R: Read>(
    input: R,
    dest: &Path,
    flat_capacity: Option<u64>,
    progress: Progress,
) -> Result<ImportSummary, ImportVmdkError> {
    let mut input = Counting {
        inner: input,
        read: 0,
    };
    let mut first = [0u8; SECTOR as usize];
    let got = input.fill_up_to(&mut first)?;
    if first.starts_with(descriptor::SIGNATURE.as_bytes()) {
        return Err(ImportVmdkError::Unsupported(
            "a descriptor file holds no data: send its extent (flat or sparse)".into(),
        ));
    }
    let sparse = first[..got].starts_with(&MAGIC.to_le_bytes());
    let (header, capacity) = match flat_capacity {
        Some(capacity) if !sparse && got > 0 => (None, capacity),
        _ if got < first.len() => return Err(ImportVmdkError::Truncated("header")),
        _ => {
            let header = SparseHeader::parse(&first).map_err(ImportVmdkError::Malformed)?;
            let capacity = header.capacity * SECTOR;
            (Some(header), capacity)
        }
    };
    create(dest, &CreateOptions::new(capacity))?;
    let result = Qcow2Image::open(dest, &Qcow2Options::default())
        .map_err(|e| {
            ImportVmdkError::Write(BlockError::Corrupt {
                path: dest.to_path_buf(),
                reason: e.to_string(),
            })
        })
        .and_then(|mut image| {
            let mut target = Target {
                image: &mut image,
                capacity,
                progress,
            };
            match &header {
                None => import_flat(&mut input, &first[..got], &mut target)?,
                Some(header) if header.compressed() => {
                    import_stream_optimized(&mut input, header, &mut target)?
                }
                Some(header) => import_monolithic(&mut input, header, &mut target)?,
            }
            image.close()?;
            Ok(ImportSummary {
                capacity,
                bytes_read: input.read,
            })
        });
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

/// The image being filled.
struct Target<'a, 'p> {
    image: &'a mut Qcow2Image,
    capacity: u64,
    progress: Progress<'p>,
}

impl Target<'_, '_> {
    /// Stores the grain at disk sector `lba` unless it is all zeros (new images read zeros).
    fn grain(&mut self, lba: u64, data: &[u8]) -> Result<(), ImportVmdkError> {
        let offset = lba * SECTOR;
        let len = (data.len() as u64).min(self.capacity.saturating_sub(offset)) as usize;
        if data[..len].iter().any(|&b| b != 0) {
            self.image.write_at(&data[..len], offset)?;
        }
        if !(self.progress)(offset + len as u64, self.capacity) {
            return Err(ImportVmdkError::Cancelled);
        }
        Ok(())
    }
}

/// Records from the first grain to the end-of-stream marker; grain tables are skipped.
fn import_stream_optimized<R: Read>(
    input: &mut Counting<R>,
    header: &SparseHeader,
    target: &mut Target,
) -> Result<(), ImportVmdkError> {
    if !header.has_markers() {
        return Err(ImportVmdkError::Unsupported(
            "compressed grains without stream markers".into(),
        ));
    }
    check_descriptor(&read_front(input, header, false)?, header)?;
    let grain_bytes = header.grain_bytes() as usize;
    let max_compressed = grain_bytes + grain_bytes / 2 + 4096;
    let mut sector = [0u8; SECTOR as usize];
    let mut record = Vec::new();
    let mut grain = vec![0u8; grain_bytes];
    let mut inflater = Decompress::new(true);
    loop {
        // qemu-img ends a stream whose last grain fills the file with no marker after it:
        // the end of the input at a record boundary ends the stream too.
        match input.fill_up_to(&mut sector)? {
            0 => return Ok(()),
            n if n < sector.len() => {
                return Err(ImportVmdkError::Truncated(
                    "before the end-of-stream marker",
                ))
            }
            _ => {}
        }
        match StreamRecord::parse(&sector).map_err(ImportVmdkError::Malformed)? {
            StreamRecord::Grain { lba, size } => {
                if lba % header.grain_size != 0 || lba >= header.capacity {
                    return Err(ImportVmdkError::Malformed(format!(
                        "grain at sector {lba} is not a grain of the {}-sector disk",
                        header.capacity
                    )));
                }
                if size as usize > max_compressed {
                    return Err(ImportVmdkError::Malformed(format!(
                        "compressed grain of {size} bytes exceeds {max_compressed}"
                    )));
                }
                let total = (GRAIN_RECORD_HEADER + size as usize).next_multiple_of(512);
                record.clear();
                record.extend_from_slice(&sector);
                record.resize(total.max(SECTOR as usize), 0);
                input.fill(&mut record[SECTOR as usize..], "inside a grain")?;
                let data = &record[GRAIN_RECORD_HEADER..GRAIN_RECORD_HEADER + size as usize];
                inflate(&mut inflater, data, &mut grain).map_err(|e| {
                    ImportVmdkError::Malformed(format!("grain at sector {lba}: {e}"))
                })?;
                target.grain(lba, &grain)?;
            }
            StreamRecord::Marker { kind, sectors } => {
                let limit = match kind {
                    MarkerKind::EndOfStream => return Ok(()),
                    MarkerKind::GrainTable => header.gt_sectors(),
                    MarkerKind::GrainDirectory => (header.gd_entries() * 4).div_ceil(SECTOR),
                    MarkerKind::Footer => 1,
                };
                if sectors > limit {
                    return Err(ImportVmdkError::Malformed(format!(
                        "{kind:?} marker announces {sectors} sectors (at most {limit})"
                    )));
                }
                input.skip(sectors * SECTOR, "inside metadata")?;
            }
        }
    }
}

/// Inflates one zlib stream into `grain` (zero-filling what it does not cover).
pub(super) fn inflate(
    inflater: &mut Decompress,
    data: &[u8],
    grain: &mut [u8],
) -> Result<(), String> {
    inflater.reset(true);
    let status = inflater
        .decompress(data, grain, FlushDecompress::Finish)
        .map_err(|e| format!("bad deflate data: {e}"))?;
    if status != Status::StreamEnd {
        return Err("deflate data does not end within one grain".into());
    }
    let produced = inflater.total_out() as usize;
    grain[produced..].fill(0);
    Ok(())
}

/// A flat extent (`first` being its start, already read) copied a chunk at a time: refused
/// once it passes the disk's capacity or when it ends inside a sector.
fn import_flat<R: Read>(
    input: &mut Counting<R>,
    first: &[u8],
    target: &mut Target,
) -> Result<(), ImportVmdkError> {
    let mut chunk = vec![0u8; FLAT_CHUNK];
    chunk[..first.len()].copy_from_slice(first);
    let mut filled = first.len();
    let mut offset = 0u64;
    loop {
        filled += input.fill_up_to(&mut chunk[filled..])?;
        let end = offset + filled as u64;
        if end > target.capacity {
            return Err(ImportVmdkError::Flat {
                bytes: end,
                why: format!("larger than the disk's {} bytes", target.capacity),
            });
        }
        if !filled.is_multiple_of(SECTOR as usize) {
            return Err(ImportVmdkError::Flat {
                bytes: end,
                why: "it ends inside a sector".into(),
            });
        }
        if filled > 0 {
            target.grain(offset / SECTOR, &chunk[..filled])?;
        }
        if filled < chunk.len() {
            return Ok(());
        }
        offset = end;
        filled = 0;
    }
}

/// The grain tables (read up front), then the grains in file order.
fn import_monolithic<R: Read>(
    input: &mut Counting<R>,
    header: &SparseHeader,
    target: &mut Target,
) -> Result<(), ImportVmdkError> {
    if header.has_markers() {
        return Err(ImportVmdkError::Unsupported(
            "markers without compression".into(),
        ));
    }
    let front = read_front(input, header, true)?;
    check_descriptor(&front, header)?;
    let stored = stored_grains(&front, header)?;
    drop(front);
    let mut grain = vec![0u8; header.grain_bytes() as usize];
    let mut position = header.overhead;
    let mut last = None;
    for (sector, index) in stored {
        let sector = u64::from(sector);
        if last != Some(sector) {
            if sector < position {
                return Err(ImportVmdkError::Malformed(format!(
                    "grain at file sector {sector} overlaps the previous grain"
                )));
            }
            input.skip((sector - position) * SECTOR, "before a grain")?;
            input.fill(&mut grain, "inside a grain")?;
            position = sector + header.grain_size;
            last = Some(sector);
        }
        target.grain(u64::from(index) * header.grain_size, &grain)?;
    }
    Ok(())
}

/// The stored grains as (file sector, grain index) pairs sorted by file sector, from the
/// metadata `front` (the file's first `overhead` sectors). At most one pair per 4 bytes of
/// `front`, so memory stays bounded by `MAX_STREAM_METADATA`.
fn stored_grains(front: &[u8], header: &SparseHeader) -> Result<Vec<(u32, u32)>, ImportVmdkError> {
    let grains = header.capacity.div_ceil(header.grain_size);
    if grains > u64::from(u32::MAX) {
        return Err(ImportVmdkError::Unsupported(format!("{grains} grains")));
    }
    let table = |sector: u64, entries: u64, what: &str| {
        let range = sector
            .checked_mul(SECTOR)
            .and_then(|start| Some(start..start.checked_add(entries * 4)?))
            .filter(|r| r.end <= front.len() as u64);
        let Some(range) = range else {
            return Err(ImportVmdkError::Unsupported(format!(
                "the {what} follows the grains: only a seekable copy can be read"
            )));
        };
        Ok(range.step_by(4).map(|at| le32(front, at as usize)))
    };
    let zero_grain = header.flags & FLAG_ZERO_GRAIN != 0;
    let per_gt = u64::from(header.gtes_per_gt);
    let mut stored = Vec::new();
    let directory: Vec<u32> =
        table(header.gd_offset, header.gd_entries(), "grain directory")?.collect();
    for (index, gt) in directory.into_iter().enumerate() {
        if gt == 0 {
            continue;
        }
        let first = index as u64 * per_gt;
        for (grain, entry) in (first..grains).zip(table(u64::from(gt), per_gt, "grain table")?) {
            if entry == 0 || (zero_grain && entry == 1) {
                continue;
            }
            if u64::from(entry) < header.overhead {
                return Err(ImportVmdkError::Malformed(format!(
                    "grain table entry {entry} points into the metadata"
                )));
            }
            stored.push((entry, grain as u32));
        }
    }
    stored.sort_unstable();
    Ok(stored)
}

/// The sectors before the first grain: kept (within `MAX_STREAM_METADATA`) when `keep_all`,
/// otherwise only the embedded descriptor is kept and the rest skipped.
fn read_front<R: Read>(
    input: &mut Counting<R>,
    header: &SparseHeader,
    keep_all: bool,
) -> Result<Vec<u8>, ImportVmdkError> {
    if header.overhead == 0 {
        return Err(ImportVmdkError::Malformed(
            "no room for the header before the grains".into(),
        ));
    }
    let keep = if keep_all {
        header.overhead
    } else {
        let end = header.descriptor_offset + header.descriptor_size;
        end.min(header.overhead)
            .min(1 + descriptor::MAX_DESCRIPTOR_BYTES / SECTOR)
    };
    if keep * SECTOR > MAX_STREAM_METADATA {
        return Err(ImportVmdkError::Unsupported(format!(
            "{} bytes of metadata before the grains (at most {MAX_STREAM_METADATA})",
            keep * SECTOR
        )));
    }
    let mut front = vec![0u8; (keep.max(1) * SECTOR) as usize];
    input.fill(&mut front[SECTOR as usize..], "inside the metadata")?;
    input.skip(
        (header.overhead - keep.max(1)) * SECTOR,
        "inside the metadata",
    )?;
    Ok(front)
}

/// Refuses disks whose embedded descriptor names a parent (delta disks).
fn check_descriptor(front: &[u8], header: &SparseHeader) -> Result<(), ImportVmdkError> {
    let start = (header.descriptor_offset * SECTOR) as usize;
    let end = ((header.descriptor_offset + header.descriptor_size) * SECTOR) as usize;
    if header.descriptor_offset == 0 || end > front.len() {
        return Ok(());
    }
    let text = &front[start..end];
    let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
    descriptor::parse(&String::from_utf8_lossy(text))
        .map(drop)
        .map_err(ImportVmdkError::Unsupported)
}

/// A reader that counts what it has consumed.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Counting<R> {
    /// Fills `buf` or fails as truncated `where_`.
    fn fill(&mut self, buf: &mut [u8], where_: &'static str) -> Result<(), ImportVmdkError> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ImportVmdkError::Truncated(where_),
            _ => ImportVmdkError::Read(e),
        })?;
        self.read += buf.len() as u64;
        Ok(())
    }

    /// Fills as much of `buf` as the input holds; returns how much.
    fn fill_up_to(&mut self, buf: &mut [u8]) -> Result<usize, ImportVmdkError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ImportVmdkError::Read(e)),
            }
        }
        self.read += got as u64;
        Ok(got)
    }

    /// Reads and drops `len` bytes.
    fn skip(&mut self, len: u64, where_: &'static str) -> Result<(), ImportVmdkError> {
        let copied = io::copy(&mut (&mut self.inner).take(len), &mut io::sink())
            .map_err(ImportVmdkError::Read)?;
        self.read += copied;
        if copied < len {
            return Err(ImportVmdkError::Truncated(where_));
        }
        Ok(())
    }
}
