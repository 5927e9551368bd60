//! A disk being copied out (by `convert` and the VMDK writers): its reader and the ranges that
//! may hold data, so that copies skip what is unallocated in every layer of a qcow2 chain and
//! chunks that read as zeros. Owns `CopySource` and `chain_data_ranges`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::block::{BlockDevice, BlockError};
use crate::chain::Progress;
use crate::open::{open_disk_as, probe_format, ImageFormat, OpenError};
use crate::qcow2::{ExtentKind, Qcow2Image, Qcow2Options};

/// Why reading a copy source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading the source failed
    #[error(transparent)]
    Read(#[from] BlockError),
    /// The progress callback cancelled the copy
    #[error("cancelled")]
    Cancelled,
}

/// Why a disk chain could not be opened as a copy source.
#[derive(Debug, thiserror::Error)]
pub enum SourceOpenError {
    /// An image of the chain could not be opened
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A layer's allocation could not be read
    #[error(transparent)]
    Map(#[from] BlockError),
}

/// A disk to copy: its reader and the sorted, disjoint byte ranges that may hold data (the
/// rest reads as zeros).
pub struct CopySource {
    disk: Box<dyn BlockDevice>,
    data: Vec<Range<u64>>,
}

impl CopySource {
    /// A source whose data may lie anywhere in `data` (sorted, disjoint ranges).
    pub fn new(disk: Box<dyn BlockDevice>, data: Vec<Range<u64>>) -> Self {
        Self { disk, data }
    }

    /// Opens a raw image or a qcow2 chain (format by magic: trusted images only) read-only.
    pub fn open_chain(path: &Path) -> Result<Self, SourceOpenError> {
        let format = probe_format(path)?;
        let disk = open_disk_as(path, format, true)?;
        let data = chain_data_ranges(path, format, disk.capacity())?;
        Ok(Self::new(disk, data))
    }

    /// The disk's size in bytes.
    pub fn capacity(&self) -> u64 {
        self.disk.capacity()
    }

    /// Bytes the data ranges cover (an upper bound of what the disk holds).
    pub fn data_bytes(&self) -> u64 {
        self.data.iter().map(|r| r.end - r.start).sum()
    }

    /// Calls `visit(offset, bytes)` for each `chunk`-aligned piece of the data ranges that
    /// holds a nonzero byte, in ascending order (the last piece may be short: the disk's end).
    /// `progress(done, capacity)` is told how far the copy has got and may cancel it.
    pub fn for_each_data_chunk<E: From<SourceError>>(
        &mut self,
        chunk: u64,
        progress: Progress,
        mut visit: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let capacity = self.capacity();
        let mut buf = vec![0u8; chunk as usize];
        let mut next = 0u64;
        for range in self.data.clone() {
            let mut at = (range.start / chunk * chunk).max(next);
            while at < range.end.min(capacity) {
                if !progress(at, capacity) {
                    return Err(SourceError::Cancelled.into());
                }
                let len = chunk.min(capacity - at) as usize;
                self.disk
                    .read_at(&mut buf[..len], at)
                    .map_err(SourceError::from)?;
                if buf[..len].iter().any(|&b| b != 0) {
                    visit(at, &buf[..len])?;
                }
                at += chunk;
            }
            next = next.max(at);
        }
        if !progress(capacity, capacity) {
            return Err(SourceError::Cancelled.into());
        }
        Ok(())
    }
}

/// The ranges of a raw image or qcow2 chain that may hold data: the union of every qcow2
/// layer's data clusters; a raw layer may hold data anywhere.
pub fn chain_data_ranges(
    top: &Path,
    format: ImageFormat,
    capacity: u64,
) -> Result<Vec<Range<u64>>, SourceOpenError> {
    let mut ranges = Vec::new();
    let mut layer: Option<(PathBuf, ImageFormat)> = Some((top.to_path_buf(), format));
    while let Some((path, format)) = layer.take() {
        if format == ImageFormat::Raw {
            ranges.push(0..capacity);
            break;
        }
        let options = Qcow2Options {
            read_only: true,
            ..Qcow2Options::default()
        };
        let mut image = Qcow2Image::open(&path, &options).map_err(OpenError::from)?;
        let extents = image.layer_extents()?;
        ranges.extend(
            extents
                .iter()
                .filter(|e| e.kind == ExtentKind::Data)
                .map(|e| e.offset..(e.offset + e.len).min(capacity)),
        );
        if let Some(below) = image.backing_path() {
            let below = below.to_path_buf();
            let format = match image.header().backing_format() {
                Some("raw") => ImageFormat::Raw,
                _ => probe_format(&below)?,
            };
            layer = Some((below, format));
        }
    }
    Ok(merge(ranges))
}

/// Sorts `ranges` and joins overlapping or touching ones, dropping empty ones.
fn merge(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge() {
        assert_eq!(
            merge(vec![5..9, 0..2, 2..3, 8..12, 20..20]),
            vec![0..3, 5..12]
        );
    }
}
