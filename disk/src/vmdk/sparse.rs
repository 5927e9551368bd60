//! Reading one hosted sparse extent file (monolithicSparse or streamOptimized): the header
//! (or, when it says "directory at end", the footer before the end-of-stream marker), the
//! grain directory, grain tables loaded on demand, plain and deflate-compressed grains. Every
//! offset read from the file is checked against the file's length before use, so memory and
//! I/O stay bounded by the file itself.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flate2::Decompress;

use super::descriptor::MAX_DESCRIPTOR_BYTES;
use super::disk::VmdkOpenError;
use super::header::{
    le32, le64, MarkerKind, SparseHeader, StreamRecord, FLAG_ZERO_GRAIN, GD_AT_END,
    GRAIN_RECORD_HEADER, SECTOR,
};
use super::import::inflate;
use crate::block::BlockError;

/// An open sparse extent.
pub(super) struct SparseExtent {
    file: File,
    path: PathBuf,
    header: SparseHeader,
    file_len: u64,
    gd: Vec<u32>,
    /// The last grain table read: its index and entries.
    gt: Option<(u64, Vec<u32>)>,
    /// The last compressed grain inflated: its index and bytes.
    grain: Option<(u64, Vec<u8>)>,
    inflater: Decompress,
}

impl SparseExtent {
    /// Opens the sparse extent `file` found at `path`.
    pub(super) fn open(file: File, path: &Path) -> Result<Self, VmdkOpenError> {
        let malformed = |reason: String| VmdkOpenError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let io = |source| VmdkOpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file_len = file.metadata().map_err(io)?.len();
        let mut sector = [0u8; SECTOR as usize];
        read_exact_at(&file, &mut sector, 0, file_len).map_err(malformed)?;
        let mut header = SparseHeader::parse(&sector).map_err(malformed)?;
        if header.gd_offset == GD_AT_END {
            header = read_footer(&file, file_len).map_err(malformed)?;
        }
        if header.compressed() && !header.has_markers() {
            return Err(VmdkOpenError::Unsupported {
                path: path.to_path_buf(),
                reason: "compressed grains without stream markers".into(),
            });
        }
        let gd_bytes = header.gd_entries() * 4;
        if gd_bytes > file_len {
            return Err(malformed(format!(
                "a grain directory of {gd_bytes} bytes cannot fit in the file"
            )));
        }
        let mut raw = vec![0u8; gd_bytes as usize];
        read_exact_at(
            &file,
            &mut raw,
            header.gd_offset.saturating_mul(SECTOR),
            file_len,
        )
        .map_err(|e| malformed(format!("grain directory: {e}")))?;
        let gd = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
        Ok(Self {
            file,
            path: path.to_path_buf(),
            header,
            file_len,
            gd,
            gt: None,
            grain: None,
            inflater: Decompress::new(true),
        })
    }

    /// The header in force (the footer's when the directory is at the end).
    pub(super) fn header(&self) -> &SparseHeader {
        &self.header
    }

    /// The embedded descriptor's text, if the extent has one.
    pub(super) fn embedded_descriptor(&self) -> Result<Option<String>, VmdkOpenError> {
        let h = &self.header;
        if h.descriptor_offset == 0 || h.descriptor_size == 0 {
            return Ok(None);
        }
        let len = (h.descriptor_size.min(MAX_DESCRIPTOR_BYTES / SECTOR)) * SECTOR;
        let mut text = vec![0u8; len as usize];
        read_exact_at(
            &self.file,
            &mut text,
            h.descriptor_offset.saturating_mul(SECTOR),
            self.file_len,
        )
        .map_err(|reason| VmdkOpenError::Malformed {
            path: self.path.clone(),
            reason: format!("descriptor: {reason}"),
        })?;
        text.truncate(text.iter().position(|&b| b == 0).unwrap_or(text.len()));
        Ok(Some(String::from_utf8_lossy(&text).into_owned()))
    }

    /// Fills `buf` from byte `offset` of the extent (the caller keeps it within capacity).
    pub(super) fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        let grain_bytes = self.header.grain_bytes();
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let (grain, within) = (at / grain_bytes, at % grain_bytes);
            let n = ((grain_bytes - within) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            match self.grain_sector(grain)? {
                None => out.fill(0),
                Some(sector) if self.header.compressed() => {
                    let data = self.inflated(grain, sector)?;
                    out.copy_from_slice(&data[within as usize..within as usize + n]);
                }
                Some(sector) => {
                    read_exact_at(&self.file, out, sector * SECTOR + within, self.file_len)
                        .map_err(|e| self.corrupt(format!("grain {grain}: {e}")))?;
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Byte ranges of the extent whose grains are stored (everything else reads as zeros).
    pub(super) fn allocated(&mut self) -> Result<Vec<Range<u64>>, BlockError> {
        let grains = self.header.capacity.div_ceil(self.header.grain_size);
        let per_gt = u64::from(self.header.gtes_per_gt);
        let grain_bytes = self.header.grain_bytes();
        let mut ranges: Vec<Range<u64>> = Vec::new();
        for (index, &gt) in self.gd.clone().iter().enumerate() {
            if gt == 0 {
                continue;
            }
            let first = index as u64 * per_gt;
            for grain in first..(first + per_gt).min(grains) {
                if self.grain_sector(grain)?.is_none() {
                    continue;
                }
                let start = grain * grain_bytes;
                match ranges.last_mut() {
                    Some(last) if last.end == start => last.end += grain_bytes,
                    _ => ranges.push(start..start + grain_bytes),
                }
            }
        }
        Ok(ranges)
    }

    /// The file sector of grain `grain`, or `None` when it reads as zeros.
    fn grain_sector(&mut self, grain: u64) -> Result<Option<u64>, BlockError> {
        let per_gt = u64::from(self.header.gtes_per_gt);
        let index = grain / per_gt;
        let Some(&gt_sector) = self.gd.get(index as usize) else {
            return Err(self.corrupt(format!("grain {grain} lies beyond the grain directory")));
        };
        if gt_sector == 0 {
            return Ok(None);
        }
        if self.gt.as_ref().is_none_or(|(i, _)| *i != index) {
            let mut raw = vec![0u8; per_gt as usize * 4];
            read_exact_at(
                &self.file,
                &mut raw,
                u64::from(gt_sector) * SECTOR,
                self.file_len,
            )
            .map_err(|e| self.corrupt(format!("grain table {index}: {e}")))?;
            self.gt = Some((index, raw.chunks_exact(4).map(|c| le32(c, 0)).collect()));
        }
        let entry = self.gt.as_ref().unwrap().1[(grain % per_gt) as usize];
        let zero = entry == 0 || (entry == 1 && self.header.flags & FLAG_ZERO_GRAIN != 0);
        Ok((!zero).then_some(u64::from(entry)))
    }

    /// The bytes of compressed grain `grain` stored at file sector `sector`.
    fn inflated(&mut self, grain: u64, sector: u64) -> Result<&[u8], BlockError> {
        if self.grain.as_ref().is_none_or(|(g, _)| *g != grain) {
            let grain_bytes = self.header.grain_bytes() as usize;
            let mut record = [0u8; GRAIN_RECORD_HEADER];
            let at = sector * SECTOR;
            read_exact_at(&self.file, &mut record, at, self.file_len)
                .map_err(|e| self.corrupt(format!("grain {grain}: {e}")))?;
            let (lba, size) = (le64(&record, 0), le32(&record, 8) as usize);
            if lba != grain * self.header.grain_size {
                return Err(
                    self.corrupt(format!("grain {grain}'s record says it holds sector {lba}"))
                );
            }
            if size > grain_bytes * 2 + 4096 {
                return Err(self.corrupt(format!("grain {grain} claims {size} compressed bytes")));
            }
            let mut data = vec![0u8; size];
            read_exact_at(
                &self.file,
                &mut data,
                at + GRAIN_RECORD_HEADER as u64,
                self.file_len,
            )
            .map_err(|e| self.corrupt(format!("grain {grain}: {e}")))?;
            let mut bytes = self
                .grain
                .take()
                .map_or_else(|| vec![0u8; grain_bytes], |(_, b)| b);
            inflate(&mut self.inflater, &data, &mut bytes)
                .map_err(|e| self.corrupt(format!("grain {grain}: {e}")))?;
            self.grain = Some((grain, bytes));
        }
        Ok(&self.grain.as_ref().unwrap().1)
    }

    fn corrupt(&self, reason: String) -> BlockError {
        BlockError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }
}

/// The footer of a file whose header says "directory at end": footer marker, header copy,
/// end-of-stream marker in its last three sectors.
fn read_footer(file: &File, file_len: u64) -> Result<SparseHeader, String> {
    let mut tail = [0u8; 3 * SECTOR as usize];
    let start = file_len
        .checked_sub(tail.len() as u64)
        .ok_or("the grain directory is at the end but the file has no footer")?;
    read_exact_at(file, &mut tail, start, file_len)?;
    let (marker, rest) = tail.split_at(SECTOR as usize);
    let (footer, eos) = rest.split_at(SECTOR as usize);
    let footer_marker = StreamRecord::parse(marker)?;
    let eos_marker = StreamRecord::parse(eos)?;
    if !matches!(
        footer_marker,
        StreamRecord::Marker {
            kind: MarkerKind::Footer,
            ..
        }
    ) || !matches!(
        eos_marker,
        StreamRecord::Marker {
            kind: MarkerKind::EndOfStream,
            ..
        }
    ) {
        return Err("the file does not end with a footer and an end-of-stream marker".into());
    }
    let header = SparseHeader::parse(footer).map_err(|e| format!("footer: {e}"))?;
    if header.gd_offset == GD_AT_END {
        return Err("the footer does not say where the grain directory is".into());
    }
    Ok(header)
}

/// Reads exactly `buf.len()` bytes at `offset`, refusing ranges beyond `file_len`.
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64, file_len: u64) -> Result<(), String> {
    match offset.checked_add(buf.len() as u64) {
        Some(end) if end <= file_len => {}
        _ => {
            return Err(format!(
                "{} bytes at {offset} lie beyond the end of the file ({file_len} bytes)",
                buf.len()
            ))
        }
    }
    file.read_exact_at(buf, offset).map_err(|e| e.to_string())
}
