//! Consistency check: recomputes every cluster's reference count from the metadata (header,
//! L1/L2 tables, refcount table and blocks, data and compressed clusters) and compares it
//! with the stored refcounts. Repair rewrites mismatched refcounts and clears the dirty bit.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;

use super::bitmap_store::load_directory;
use super::header::{self, Header};
use super::image::read_header;
use super::io::ImageFile;
use super::l2::{ClusterMapping, OFFSET_MASK};
use super::refcount::{block_entry, set_entry};
use super::Qcow2OpenError;
use crate::block::BlockError;

/// What a check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Metadata errors: references to clusters that are free, out of the file, unaligned.
    pub corruptions: Vec<String>,
    /// Clusters whose stored refcount exceeds their references.
    pub leaked_clusters: u64,
    /// Clusters referenced by the metadata.
    pub referenced_clusters: u64,
    /// Refcounts rewritten by a repair.
    pub repaired: u64,
}

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The image could not be opened or parsed
    #[error(transparent)]
    Open(#[from] Qcow2OpenError),
    /// Reading or writing failed
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The image uses a feature the checker does not walk
    #[error("{0}: checking images with {1} is not supported")]
    Unsupported(std::path::PathBuf, &'static str),
}

/// Checks the qcow2 image at `path`; with `repair`, fixes refcounts that disagree with the
/// references (where their refcount block exists) and clears the dirty bit.
pub fn check(path: &Path, repair: bool) -> Result<CheckReport, CheckError> {
    let file = OpenOptions::new()
        .read(true)
        .write(repair)
        .open(path)
        .map_err(|source| {
            Qcow2OpenError::Metadata(BlockError::Io {
                path: path.to_path_buf(),
                source,
            })
        })?;
    let file = ImageFile::new(file, path);
    let header = read_header(&file)?;
    if header.nb_snapshots != 0 {
        return Err(CheckError::Unsupported(
            path.to_path_buf(),
            "internal snapshots",
        ));
    }
    let mut walk = Walk {
        file: &file,
        cs: header.cluster_size(),
        clusters: file.len()?.div_ceil(header.cluster_size()),
        expected: BTreeMap::new(),
        report: CheckReport::default(),
    };
    let reftable = walk.references(&header)?;
    walk.compare(&header, &reftable, repair)?;
    if repair
        && walk.report.corruptions.is_empty()
        && header.incompatible & header::INCOMPAT_DIRTY != 0
    {
        let flags = header.incompatible & !header::INCOMPAT_DIRTY;
        file.write_all(&flags.to_be_bytes(), header::INCOMPAT_FIELD)?;
        file.sync()?;
    }
    Ok(walk.report)
}

struct Walk<'a> {
    file: &'a ImageFile,
    cs: u64,
    clusters: u64,
    expected: BTreeMap<u64, u64>,
    report: CheckReport,
}

impl Walk<'_> {
    /// Counts one reference to every cluster of `[offset, offset + len)`.
    fn reference(&mut self, offset: u64, len: u64, what: &str) -> bool {
        let first = offset / self.cs;
        let last = offset.checked_add(len.max(1) - 1).map(|end| end / self.cs);
        let Some(last) = last.filter(|&last| last < self.clusters) else {
            self.report.corruptions.push(format!(
                "{what} at {offset:#x} lies beyond the end of the file"
            ));
            return false;
        };
        for c in first..=last {
            *self.expected.entry(c).or_insert(0) += 1;
        }
        true
    }

    fn read_table(&mut self, offset: u64, len: u64) -> Result<Vec<u64>, BlockError> {
        let mut raw = vec![0u8; len as usize];
        self.file.read_exact(&mut raw, offset, "table")?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect())
    }

    /// Walks all metadata; returns the refcount table.
    fn references(&mut self, header: &Header) -> Result<Vec<u64>, BlockError> {
        self.reference(0, self.cs, "header");
        let rt_len = header.refcount_table_clusters as u64 * self.cs;
        let reftable = if self.reference(header.refcount_table_offset, rt_len, "refcount table") {
            self.read_table(header.refcount_table_offset, rt_len)?
        } else {
            Vec::new()
        };
        for &entry in &reftable {
            let block = entry & !0x1ff;
            if block != 0 {
                self.reference(block, self.cs, "refcount block");
            }
        }
        self.bitmap_references(header)?;
        let l1_len = header.l1_size as u64 * 8;
        if !self.reference(header.l1_table_offset, l1_len, "L1 table") {
            return Ok(reftable);
        }
        for l1e in self.read_table(header.l1_table_offset, l1_len)? {
            let table = l1e & OFFSET_MASK;
            if table == 0 {
                continue;
            }
            if !table.is_multiple_of(self.cs) || !self.reference(table, self.cs, "L2 table") {
                self.report
                    .corruptions
                    .push(format!("L2 table at {table:#x} is invalid"));
                continue;
            }
            for l2e in self.read_table(table, self.cs)? {
                match ClusterMapping::decode(l2e, header.cluster_bits, header.version) {
                    Err(e) => self.report.corruptions.push(e),
                    Ok(ClusterMapping::Data { host, .. })
                    | Ok(ClusterMapping::Zero { host: Some(host) }) => {
                        self.reference(host, self.cs, "data cluster");
                    }
                    Ok(ClusterMapping::Compressed { host, len }) => {
                        let len = len
                            .min((self.clusters * self.cs).saturating_sub(host))
                            .max(1);
                        self.reference(host, len, "compressed cluster");
                    }
                    Ok(_) => {}
                }
            }
        }
        Ok(reftable)
    }

    /// Counts the bitmap directory, bitmap tables and bitmap data clusters (when the
    /// autoclear bit says the bitmaps extension is valid).
    fn bitmap_references(&mut self, header: &Header) -> Result<(), BlockError> {
        let bitmaps = match load_directory(self.file, header) {
            Ok(Some(bitmaps)) => bitmaps,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.report.corruptions.push(e.to_string());
                return Ok(());
            }
        };
        let (offset, len) = bitmaps.directory;
        self.reference(offset, len, "bitmap directory");
        for entry in &bitmaps.entries {
            let len = entry.table_size as u64 * 8;
            if entry.table_offset == 0 || !self.reference(entry.table_offset, len, "bitmap table") {
                continue;
            }
            for e in self.read_table(entry.table_offset, len)? {
                let host = e & OFFSET_MASK;
                if host != 0 {
                    self.reference(host, self.cs, "bitmap data");
                }
            }
        }
        Ok(())
    }

    /// Compares stored refcounts with the references, optionally rewriting them.
    fn compare(
        &mut self,
        header: &Header,
        reftable: &[u64],
        repair: bool,
    ) -> Result<(), BlockError> {
        let order = header.refcount_order;
        let per_block = (self.cs * 8) >> order;
        self.report.referenced_clusters = self.expected.len() as u64;
        for (index, &entry) in reftable.iter().enumerate() {
            let block_offset = entry & !0x1ff;
            let first = index as u64 * per_block;
            if block_offset == 0 || first >= self.clusters {
                continue;
            }
            let mut block = vec![0u8; self.cs as usize];
            self.file
                .read_exact(&mut block, block_offset, "refcount block")?;
            let mut changed = false;
            for c in first..(first + per_block).min(self.clusters) {
                let stored = block_entry(&block, c - first, order);
                let wanted = self.expected.remove(&c).unwrap_or(0);
                if stored == wanted {
                    continue;
                }
                if repair && (order == 6 || wanted < 1 << (1u64 << order)) {
                    set_entry(&mut block, c - first, order, wanted);
                    changed = true;
                    self.report.repaired += 1;
                } else if stored > wanted {
                    self.report.leaked_clusters += 1;
                } else {
                    self.report.corruptions.push(format!(
                        "cluster {c}: refcount {stored} < {wanted} references"
                    ));
                }
            }
            if changed {
                self.file.write_all(&block, block_offset)?;
            }
        }
        for (c, wanted) in std::mem::take(&mut self.expected) {
            self.report.corruptions.push(format!(
                "cluster {c}: no refcount block for {wanted} references"
            ));
        }
        if repair {
            self.file.sync()?;
        }
        Ok(())
    }
}
