//! Merging layers of a backing chain: `commit` (copy a layer down into its backing file) and
//! `rebase` (make a layer independent of the layers below it). Both are crash-safe by
//! construction: until the final step the chain reads exactly as before at every moment.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::block::{BlockDevice, BlockError};
use crate::open::{open_disk, probe_format, ImageFormat, OpenError};
use crate::qcow2::{BackingSpec, ExtentKind, LayerExtent, Qcow2Image, Qcow2Options};

/// Bytes moved per step of a merge (one progress report and cancellation point each).
const CHUNK: u64 = 1 << 20;

/// Called with (bytes done, bytes total); returning false cancels the operation.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64) -> bool;

/// Why a merge failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// An image could not be opened
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Reading or writing failed
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The layer has no backing file to merge with
    #[error("{0} has no backing file")]
    NoBacking(PathBuf),
    /// The backing file is smaller than the data to commit into it
    #[error("backing file {0} is smaller than the layer above it")]
    BackingTooSmall(PathBuf),
    /// Cancelled by the caller; the chain reads as before
    #[error("cancelled")]
    Cancelled,
}

/// Opens a qcow2 layer with default caches.
fn open_layer(path: &Path, read_only: bool) -> Result<Qcow2Image, MergeError> {
    let options = Qcow2Options {
        read_only,
        ..Qcow2Options::default()
    };
    Ok(Qcow2Image::open(path, &options).map_err(OpenError::from)?)
}

/// The backing files below `image` (its backing file, that one's, ...), nearest first; empty
/// for a raw image or a qcow2 without backing file. A backing file recorded as raw ends the
/// chain whatever its first bytes look like.
pub fn backing_files(image: &Path) -> Result<Vec<PathBuf>, OpenError> {
    let mut files = Vec::new();
    let mut next = image.to_path_buf();
    let mut format = probe_format(&next)?;
    while format == ImageFormat::Qcow2 {
        let options = Qcow2Options {
            read_only: true,
            ..Qcow2Options::default()
        };
        let layer = Qcow2Image::open(&next, &options)?;
        let Some(below) = layer.backing_path() else {
            break;
        };
        next = below.to_path_buf();
        files.push(next.clone());
        format = match layer.header().backing_format() {
            Some("raw") => ImageFormat::Raw,
            _ => probe_format(&next)?,
        };
    }
    Ok(files)
}

/// Copies every cluster `top` holds into its backing file, then (if `empty_top`) empties
/// `top` (otherwise `top` is only read). Returns the number of bytes copied.
pub fn commit(top: &Path, empty_top: bool, progress: Progress) -> Result<u64, MergeError> {
    let mut layer = open_layer(top, !empty_top)?;
    let base_path = layer
        .backing_path()
        .ok_or_else(|| MergeError::NoBacking(top.to_path_buf()))?
        .to_path_buf();
    let extents: Vec<LayerExtent> = layer
        .layer_extents()?
        .into_iter()
        .filter(|e| e.kind != ExtentKind::Unallocated)
        .collect();
    let mut base = open_disk(&base_path, false)?;
    if extents.iter().any(|e| e.offset + e.len > base.capacity()) {
        return Err(MergeError::BackingTooSmall(base_path));
    }
    let total: u64 = extents.iter().map(|e| e.len).sum();
    let mut done = 0;
    let mut buf = vec![0u8; CHUNK as usize];
    for extent in extents {
        let mut at = extent.offset;
        while at < extent.offset + extent.len {
            let n = (extent.offset + extent.len - at).min(CHUNK);
            if extent.kind == ExtentKind::Zero {
                base.write_zeroes(at, n)?;
            } else {
                layer.read_at(&mut buf[..n as usize], at)?;
                base.write_at(&buf[..n as usize], at)?;
            }
            at += n;
            done += n;
            if !progress(done, total) {
                base.flush()?;
                return Err(MergeError::Cancelled);
            }
        }
    }
    base.flush()?;
    drop(base);
    if empty_top {
        layer.make_empty()?;
    }
    layer.close()?;
    Ok(done)
}

/// Makes `image` read the same with `new_backing` (or none) as its backing file: copies into
/// it whatever the old chain provided that the new one does not, then rewrites its header.
/// Returns the number of bytes copied.
pub fn rebase(
    image: &Path,
    new_backing: Option<&BackingSpec>,
    progress: Progress,
) -> Result<u64, MergeError> {
    let mut layer = open_layer(image, false)?;
    let new_path = new_backing.map(|b| crate::qcow2::resolve_backing(image, &b.name));
    let mut new_view: Option<Box<dyn BlockDevice>> = match &new_path {
        Some(p) => Some(open_disk(p, true)?),
        None => None,
    };
    let holes: Vec<LayerExtent> = layer
        .layer_extents()?
        .into_iter()
        .filter(|e| e.kind == ExtentKind::Unallocated)
        .collect();
    let between = layers_between(&layer, new_path.as_deref())?;
    let must_compare = between.is_none();
    let candidates = match between {
        Some(between) => intersect(&holes, &between),
        None => holes,
    };
    let total: u64 = candidates.iter().map(|e| e.len).sum();
    let cs = layer.cluster_size();
    let mut done = 0;
    let mut old = vec![0u8; CHUNK as usize];
    let mut new = vec![0u8; CHUNK as usize];
    for range in candidates {
        let mut at = range.offset;
        while at < range.offset + range.len {
            let n = (range.offset + range.len - at).min(CHUNK) as usize;
            layer.read_at(&mut old[..n], at)?;
            if must_compare {
                read_view(&mut new_view, &mut new[..n], at)?;
                copy_differing(&mut layer, &old[..n], &new[..n], at, cs)?;
            } else {
                layer.write_at(&old[..n], at)?;
            }
            at += n as u64;
            done += n as u64;
            if !progress(done, total) {
                layer.flush()?;
                return Err(MergeError::Cancelled);
            }
        }
    }
    layer.set_backing(new_backing)?;
    layer.close()?;
    Ok(done)
}

/// Reads a view that may be absent (zeros) or shorter than the request (zeros past its end).
fn read_view(
    view: &mut Option<Box<dyn BlockDevice>>,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), BlockError> {
    buf.fill(0);
    if let Some(view) = view {
        let n = view.capacity().saturating_sub(offset).min(buf.len() as u64) as usize;
        if n > 0 {
            view.read_at(&mut buf[..n], offset)?;
        }
    }
    Ok(())
}

/// Writes the clusters of `old` that differ from `new` into `layer` at `offset`.
fn copy_differing(
    layer: &mut Qcow2Image,
    old: &[u8],
    new: &[u8],
    offset: u64,
    cluster_size: u64,
) -> Result<(), BlockError> {
    let step = cluster_size as usize - (offset % cluster_size) as usize;
    let mut start = 0;
    while start < old.len() {
        let end = (start
            + if start == 0 {
                step
            } else {
                cluster_size as usize
            })
        .min(old.len());
        if old[start..end] != new[start..end] {
            layer.write_at(&old[start..end], offset + start as u64)?;
        }
        start = end;
    }
    Ok(())
}

/// When `new_backing` lies below `image` in its chain, the ranges allocated in the layers
/// between them (the only ones whose content can change); `None` otherwise.
fn layers_between(
    image: &Qcow2Image,
    new_backing: Option<&Path>,
) -> Result<Option<Vec<LayerExtent>>, MergeError> {
    let target = new_backing.and_then(|p| std::fs::canonicalize(p).ok());
    let mut ranges = Vec::new();
    let mut seen = HashSet::new();
    let mut next = image.backing_path().map(Path::to_path_buf);
    while let Some(path) = next {
        let canonical = std::fs::canonicalize(&path).ok();
        if canonical.is_some() && canonical == target {
            return Ok(Some(ranges));
        }
        if !seen.insert(canonical) || probe_format(&path)? != ImageFormat::Qcow2 {
            return Ok(None);
        }
        let options = Qcow2Options {
            read_only: true,
            ..Qcow2Options::default()
        };
        let mut layer = Qcow2Image::open(&path, &options).map_err(OpenError::from)?;
        ranges.extend(
            layer
                .layer_extents()?
                .into_iter()
                .filter(|e| e.kind != ExtentKind::Unallocated),
        );
        next = layer.backing_path().map(Path::to_path_buf);
    }
    Ok(target.is_none().then_some(ranges))
}

/// The parts of `holes` covered by any of `ranges` (both as guest byte ranges).
fn intersect(holes: &[LayerExtent], ranges: &[LayerExtent]) -> Vec<LayerExtent> {
    let mut covered: Vec<(u64, u64)> = ranges
        .iter()
        .map(|r| (r.offset, r.offset + r.len))
        .collect();
    covered.sort_unstable();
    let mut out = Vec::new();
    for hole in holes {
        let hole_end = hole.offset + hole.len;
        for &(start, end) in &covered {
            let (s, e) = (start.max(hole.offset), end.min(hole_end));
            if s < e {
                match out.last_mut() {
                    Some(LayerExtent { offset, len, .. }) if *offset + *len >= s => {
                        *len = (*len).max(e - *offset)
                    }
                    _ => out.push(LayerExtent {
                        offset: s,
                        len: e - s,
                        kind: ExtentKind::Unallocated,
                    }),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(offset: u64, len: u64) -> LayerExtent {
        LayerExtent {
            offset,
            len,
            kind: ExtentKind::Unallocated,
        }
    }

    #[test]
    fn intersect_merges_overlapping_ranges() {
        let holes = [ext(0, 100), ext(200, 100)];
        let ranges = [ext(50, 30), ext(60, 60), ext(250, 10), ext(400, 5)];
        assert_eq!(intersect(&holes, &ranges), vec![ext(50, 50), ext(250, 10)]);
    }
}
