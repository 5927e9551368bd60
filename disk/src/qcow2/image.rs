//! A qcow2 image behind the `BlockDevice` trait: guest reads and writes, zero-writes, discard,
//! backing files and crash-safe write-back (refcounts, then L2 tables, then L1; frees after).
//! Layout decisions (allocation) live in refcount.rs; entry decoding in l2.rs.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use flate2::{Decompress, FlushDecompress};

use super::allocation::{AllocationMap, ClusterState, TableState};
use super::bitmap_store::{load_directory, ImageBitmaps};
use super::cache::MetadataCache;
use super::create::BackingSpec;
use super::header::{self, Header, HeaderError};
use super::io::ImageFile;
use super::l2::{ClusterMapping, COPIED, OFFSET_MASK, ZERO};
use super::refcount::Refcounts;
use crate::block::{check_range, BlockDevice, BlockError};
use crate::open::{ImageFormat, OpenError};
use crate::raw::RawDisk;

/// Deepest backing chain accepted.
const MAX_CHAIN_DEPTH: usize = 128;
/// Default metadata cache budget per image.
const DEFAULT_L2_CACHE_BYTES: u64 = 32 << 20;
const DEFAULT_REFCOUNT_CACHE_BYTES: u64 = 4 << 20;
/// Deferred frees that force an early metadata write-back.
const MAX_PENDING_FREES: usize = 4096;

/// How to open a qcow2 image.
#[derive(Debug, Clone, Default)]
pub struct Qcow2Options {
    /// Refuse writes.
    pub read_only: bool,
    /// L2 cache budget in bytes; default covers the whole disk up to 32 MiB.
    pub l2_cache_bytes: Option<u64>,
    /// Refcount cache budget in bytes; default 4 MiB.
    pub refcount_cache_bytes: Option<u64>,
}

/// Why a qcow2 image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2OpenError {
    /// Bad header
    #[error("{path}: {source}")]
    Header {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        source: HeaderError,
    },
    /// Metadata unreadable or inconsistent
    #[error("{0}")]
    Metadata(#[from] BlockError),
    /// Marked corrupt; only read-only opening is allowed
    #[error("{0}: image is marked corrupt; open it read-only or repair it")]
    MarkedCorrupt(PathBuf),
    /// Not closed cleanly with lazy refcounts: refcounts need repair first
    #[error("{0}: image was not closed cleanly (dirty); run `vdisk check --repair`")]
    Dirty(PathBuf),
    /// Writes to images with internal snapshots are not supported
    #[error("{0}: writing to images with internal snapshots is not supported")]
    InternalSnapshots(PathBuf),
    /// Writes to version 2 images are not supported
    #[error("{0}: version 2 images can only be opened read-only")]
    Version2Write(PathBuf),
    /// The backing file could not be opened
    #[error("{path}: backing file {backing}: {source}")]
    Backing {
        /// The image file.
        path: PathBuf,
        /// The resolved backing file path.
        backing: PathBuf,
        /// Why it failed.
        source: Box<OpenError>,
    },
    /// The backing chain refers back to itself or is absurdly deep
    #[error("{0}: backing chain loops or is deeper than {MAX_CHAIN_DEPTH}")]
    BackingLoop(PathBuf),
    /// Backing format this engine cannot read
    #[error("{path}: unsupported backing format {format:?}")]
    BackingFormat {
        /// The image file.
        path: PathBuf,
        /// The format named in the header.
        format: String,
    },
}

/// What a guest range maps to in one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Stored in this layer.
    Data,
    /// Reads as zeros because of this layer.
    Zero,
    /// Not present here: read from the backing file.
    Unallocated,
}

/// A guest byte range with one kind of mapping in one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerExtent {
    /// Start in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// What it maps to.
    pub kind: ExtentKind,
}

/// The name of `format` as stored in the backing-format extension.
pub fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Raw => "raw",
        ImageFormat::Qcow2 => "qcow2",
    }
}

/// An open qcow2 image.
pub struct Qcow2Image {
    pub(super) file: ImageFile,
    pub(super) header: Header,
    pub(super) cluster_bits: u32,
    pub(super) l1: Vec<u64>,
    l1_dirty: bool,
    l2_cache: MetadataCache,
    refcounts: Option<Refcounts>,
    backing: Option<Box<dyn BlockDevice>>,
    backing_path: Option<PathBuf>,
    pub(super) read_only: bool,
    pending_frees: Vec<u64>,
    pub(super) file_len: u64,
    decompressed: Option<(u64, Vec<u8>)>,
    /// Guest clusters whose prepared write (`RoutableDevice::prepare_write`) is in flight.
    pub(super) preparing: HashSet<u64>,
    pub(super) bitmaps: Option<ImageBitmaps>,
}

impl Qcow2Image {
    /// Opens the image at `path` and its backing chain (read-only).
    pub fn open(path: &Path, options: &Qcow2Options) -> Result<Self, Qcow2OpenError> {
        Self::open_in_chain(path, options, &mut HashSet::new())
    }

    /// Opens the image already open as `file` (found at `path`) and its backing chain, which
    /// the installed backing opener finds.
    pub fn open_file(
        file: std::fs::File,
        path: &Path,
        options: &Qcow2Options,
    ) -> Result<Self, Qcow2OpenError> {
        Self::from_file_in_chain(file, path, options, &mut HashSet::new())
    }

    fn open_in_chain(
        path: &Path,
        options: &Qcow2Options,
        seen: &mut HashSet<FileId>,
    ) -> Result<Self, Qcow2OpenError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!options.read_only)
            .open(path)
            .map_err(|e| io_open_err(path, e))?;
        Self::from_file_in_chain(file, path, options, seen)
    }

    /// Opens the image already open as `file` (found at `path`) and its backing chain.
    fn from_file_in_chain(
        file: std::fs::File,
        path: &Path,
        options: &Qcow2Options,
        seen: &mut HashSet<FileId>,
    ) -> Result<Self, Qcow2OpenError> {
        let id = file_id(&file).map_err(|e| io_open_err(path, e))?;
        if !seen.insert(id) || seen.len() > MAX_CHAIN_DEPTH {
            return Err(Qcow2OpenError::BackingLoop(path.to_path_buf()));
        }
        let file = ImageFile::new(file, path);
        let header = read_header(&file)?;
        check_writable(&header, path, options.read_only)?;
        let cluster_bits = header.cluster_bits;
        let cs = header.cluster_size();
        let l1 = read_l1(&file, &header)?;
        let l2_budget = options.l2_cache_bytes.unwrap_or_else(|| {
            (l1.len() as u64 * cs).clamp(16 * cs, DEFAULT_L2_CACHE_BYTES.max(16 * cs))
        });
        let refcounts = if options.read_only {
            None
        } else {
            let budget = options
                .refcount_cache_bytes
                .unwrap_or(DEFAULT_REFCOUNT_CACHE_BYTES);
            Some(Refcounts::load(&file, &header, (budget / cs) as usize)?)
        };
        let (backing, backing_path) = open_backing(path, &header, seen)?;
        let file_len = file.len()?;
        let bitmaps = load_directory(&file, &header)?;
        let mut image = Self {
            file,
            header,
            cluster_bits,
            l1,
            l1_dirty: false,
            l2_cache: MetadataCache::new((l2_budget / cs) as usize),
            refcounts,
            backing,
            backing_path,
            read_only: options.read_only,
            pending_frees: Vec::new(),
            file_len,
            decompressed: None,
            preparing: HashSet::new(),
            bitmaps,
        };
        if !options.read_only {
            image.clear_unknown_autoclear()?;
            image.start_maintaining_bitmaps()?;
        }
        Ok(image)
    }

    /// The parsed header (refcount table location as of the last header write).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The resolved path of the backing file, if any.
    pub fn backing_path(&self) -> Option<&Path> {
        self.backing_path.as_deref()
    }

    /// The image file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// True when reads of unallocated clusters go to a backing file.
    pub(super) fn has_backing(&self) -> bool {
        self.backing.is_some()
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Clears autoclear bits this engine does not maintain, before anything else is written.
    fn clear_unknown_autoclear(&mut self) -> Result<(), BlockError> {
        let known = if self.bitmaps.is_some() {
            header::AUTOCLEAR_BITMAPS
        } else {
            0
        };
        if self.header.autoclear & !known == 0 {
            return Ok(());
        }
        self.header.autoclear &= known;
        self.write_header()
    }

    /// Rewrites the header (with the current refcount table location) and syncs.
    pub(super) fn write_header(&mut self) -> Result<(), BlockError> {
        if let Some(refcounts) = &self.refcounts {
            let (offset, clusters) = refcounts.table_location();
            self.header.refcount_table_offset = offset;
            self.header.refcount_table_clusters = clusters;
        }
        let bytes = self
            .header
            .to_bytes()
            .map_err(|e| self.file.corrupt(e.to_string()))?;
        self.file.write_all(&bytes, 0)?;
        self.file.sync()
    }

    fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Checks that `host` may hold guest data or an L2 table: aligned, not the header, not
    /// inside the L1 or refcount table.
    pub(super) fn check_cluster(&self, host: u64, what: &str) -> Result<(), BlockError> {
        let cs = self.cluster_size();
        let l1_end = self.header.l1_table_offset + self.l1.len() as u64 * 8;
        let rt_start = self.header.refcount_table_offset;
        let rt_end = rt_start + self.header.refcount_table_clusters as u64 * cs;
        let overlaps = |start: u64, end: u64| host < end && host + cs > start;
        if !host.is_multiple_of(cs)
            || host < cs
            || overlaps(self.header.l1_table_offset, l1_end)
            || overlaps(rt_start, rt_end)
        {
            return Err(self
                .file
                .corrupt(format!("{what} at {host:#x} overlaps image metadata")));
        }
        Ok(())
    }

    /// Caches the L2 table at `offset`, writing back an evicted dirty table in safe order.
    fn load_l2(&mut self, offset: u64) -> Result<(), BlockError> {
        if self.l2_cache.peek(offset).is_some() {
            return Ok(());
        }
        self.make_l2_room()?;
        let mut data = vec![0u8; self.cluster_size() as usize].into_boxed_slice();
        self.file.read_exact(&mut data, offset, "L2 table")?;
        self.l2_cache.insert(offset, data, false);
        Ok(())
    }

    fn make_l2_room(&mut self) -> Result<(), BlockError> {
        if !self.l2_cache.is_full() {
            return Ok(());
        }
        if let Some((victim, dirty)) = self.l2_cache.victim() {
            if dirty {
                self.persist_refcounts()?;
                self.file
                    .write_all(self.l2_cache.peek(victim).unwrap(), victim)?;
            }
            self.l2_cache.remove(victim);
        }
        Ok(())
    }

    /// Writes back refcount metadata and syncs, so that L2 tables may reference it.
    pub(super) fn persist_refcounts(&mut self) -> Result<(), BlockError> {
        if let Some(refcounts) = &mut self.refcounts {
            if refcounts.write_back(&self.file)? {
                self.file.sync()?;
            }
        }
        Ok(())
    }

    /// The L2 table offset for guest cluster `cluster`, or `None` if unallocated.
    fn l2_table_for(&self, cluster: u64) -> Result<Option<u64>, BlockError> {
        let index = (cluster / self.l2_entries()) as usize;
        let offset = self.l1.get(index).map_or(0, |e| e & OFFSET_MASK);
        if offset == 0 {
            return Ok(None);
        }
        self.check_cluster(offset, "L2 table")?;
        Ok(Some(offset))
    }

    /// The raw L2 entry for guest cluster `cluster` (0 if its table is unallocated).
    fn l2_entry(&mut self, cluster: u64) -> Result<u64, BlockError> {
        let Some(table) = self.l2_table_for(cluster)? else {
            return Ok(0);
        };
        self.load_l2(table)?;
        let i = ((cluster % self.l2_entries()) * 8) as usize;
        let data = self.l2_cache.get(table).unwrap();
        Ok(u64::from_be_bytes(data[i..i + 8].try_into().unwrap()))
    }

    /// What guest cluster `cluster` maps to in this layer.
    pub fn mapping(&mut self, cluster: u64) -> Result<ClusterMapping, BlockError> {
        let entry = self.l2_entry(cluster)?;
        let mapping = ClusterMapping::decode(entry, self.cluster_bits, self.header.version)
            .map_err(|reason| self.file.corrupt(reason))?;
        match mapping {
            ClusterMapping::Data { host, .. } | ClusterMapping::Zero { host: Some(host) } => {
                self.check_cluster(host, "data cluster")?;
                if host >= self.file_len {
                    return Err(self.file.corrupt(format!(
                        "data cluster at {host:#x} lies beyond the end of the file"
                    )));
                }
            }
            _ => {}
        }
        Ok(mapping)
    }

    /// Reads `buf.len()` bytes at guest `offset` from the backing chain (zeros past its end).
    fn read_backing(&mut self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        let Some(backing) = &mut self.backing else {
            buf.fill(0);
            return Ok(());
        };
        let available = backing
            .capacity()
            .saturating_sub(offset)
            .min(buf.len() as u64) as usize;
        if available > 0 {
            backing.read_at(&mut buf[..available], offset)?;
        }
        buf[available..].fill(0);
        Ok(())
    }

    /// Inflates the compressed cluster at `host` (cached: the last one is kept).
    fn decompress(&mut self, host: u64, len: u64) -> Result<&[u8], BlockError> {
        if self.decompressed.as_ref().is_none_or(|(h, _)| *h != host) {
            let available = self.file_len.saturating_sub(host).min(len);
            let mut compressed = vec![0u8; available as usize];
            self.file
                .read_exact(&mut compressed, host, "compressed cluster")?;
            let mut out = vec![0u8; self.cluster_size() as usize];
            let mut inflater = Decompress::new(false);
            let status = inflater.decompress(&compressed, &mut out, FlushDecompress::Finish);
            if status.is_err() || inflater.total_out() != out.len() as u64 {
                return Err(self
                    .file
                    .corrupt(format!("compressed cluster at {host:#x} does not inflate")));
            }
            self.decompressed = Some((host, out));
        }
        Ok(&self.decompressed.as_ref().unwrap().1)
    }

    /// Reads part of one guest cluster: `buf` at byte `within` of guest cluster `cluster`.
    pub(super) fn read_in_cluster(
        &mut self,
        cluster: u64,
        within: u64,
        buf: &mut [u8],
    ) -> Result<(), BlockError> {
        match self.mapping(cluster)? {
            ClusterMapping::Data { host, .. } => self.file.read_zero_filled(buf, host + within),
            ClusterMapping::Zero { .. } => {
                buf.fill(0);
                Ok(())
            }
            ClusterMapping::Unallocated => {
                self.read_backing(buf, (cluster << self.cluster_bits) + within)
            }
            ClusterMapping::Compressed { host, len } => {
                let data = self.decompress(host, len)?;
                buf.copy_from_slice(&data[within as usize..within as usize + buf.len()]);
                Ok(())
            }
        }
    }

    /// Splits `[offset, offset + len)` into per-cluster pieces: (cluster, within, start, n).
    pub(super) fn pieces(
        &self,
        offset: u64,
        len: u64,
    ) -> impl Iterator<Item = (u64, u64, usize, usize)> {
        let cs = self.cluster_size();
        let bits = self.cluster_bits;
        let mut done = 0u64;
        std::iter::from_fn(move || {
            if done >= len {
                return None;
            }
            let pos = offset + done;
            let within = pos & (cs - 1);
            let n = (cs - within).min(len - done);
            let piece = (pos >> bits, within, done as usize, n as usize);
            done += n;
            Some(piece)
        })
    }

    pub(super) fn check_writable(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        check_range(offset, len, self.header.size)
    }

    /// Drops one reference to host cluster `cluster` (written back by the next write-back).
    pub(super) fn free_cluster(&mut self, cluster: u64) -> Result<(), BlockError> {
        let file = &self.file;
        self.refcounts
            .as_mut()
            .ok_or(BlockError::ReadOnly)?
            .decrement(file, cluster)
    }

    /// Allocates `count` contiguous host clusters.
    pub(super) fn allocate(&mut self, count: u64) -> Result<u64, BlockError> {
        let refcounts = self.refcounts.as_mut().ok_or(BlockError::ReadOnly)?;
        let host = refcounts.allocate(&self.file, count)?;
        self.check_cluster(host, "new cluster")?;
        Ok(host)
    }

    /// The L2 table for guest cluster `cluster`, allocating (or un-sharing) it if needed.
    fn writable_l2_table(&mut self, cluster: u64) -> Result<u64, BlockError> {
        let index = (cluster / self.l2_entries()) as usize;
        let entry = self.l1[index];
        let old = entry & OFFSET_MASK;
        if old != 0 && entry & COPIED != 0 {
            self.check_cluster(old, "L2 table")?;
            return Ok(old);
        }
        let mut data = vec![0u8; self.cluster_size() as usize].into_boxed_slice();
        if old != 0 {
            self.check_cluster(old, "L2 table")?;
            self.load_l2(old)?;
            data.copy_from_slice(self.l2_cache.peek(old).unwrap());
            self.pending_frees.push(old >> self.cluster_bits);
        }
        let table = self.allocate(1)?;
        self.make_l2_room()?;
        self.l2_cache.insert(table, data, true);
        self.l1[index] = table | COPIED;
        self.l1_dirty = true;
        Ok(table)
    }

    /// Sets the L2 entry of guest cluster `cluster` and defers freeing what it replaced.
    pub(super) fn set_l2_entry(
        &mut self,
        cluster: u64,
        entry: u64,
        old: ClusterMapping,
    ) -> Result<(), BlockError> {
        let table = self.writable_l2_table(cluster)?;
        self.load_l2(table)?;
        let i = ((cluster % self.l2_entries()) * 8) as usize;
        self.l2_cache.get_mut(table).unwrap()[i..i + 8].copy_from_slice(&entry.to_be_bytes());
        if let Some((first, count)) = old.host_clusters(self.cluster_bits) {
            self.pending_frees.extend(first..first + count);
            if let ClusterMapping::Compressed { host, .. } = old {
                if self.decompressed.as_ref().is_some_and(|(h, _)| *h == host) {
                    self.decompressed = None;
                }
            }
        }
        if self.pending_frees.len() > MAX_PENDING_FREES {
            self.write_back_metadata()?;
        }
        Ok(())
    }

    /// Writes `data` at byte `within` of guest cluster `cluster`.
    fn write_in_cluster(
        &mut self,
        cluster: u64,
        within: u64,
        data: &[u8],
    ) -> Result<(), BlockError> {
        let mapping = self.mapping(cluster)?;
        if let ClusterMapping::Data { host, copied: true } = mapping {
            self.file.write_all(data, host + within)?;
            self.file_len = self.file_len.max(host + within + data.len() as u64);
            return Ok(());
        }
        let cs = self.cluster_size();
        let mut whole = Vec::new();
        let contents = if data.len() as u64 == cs {
            data
        } else {
            whole.resize(cs as usize, 0);
            self.read_in_cluster(cluster, 0, &mut whole)?;
            whole[within as usize..within as usize + data.len()].copy_from_slice(data);
            &whole
        };
        let host = self.allocate(1)?;
        self.write_fresh(contents, host, 1)?;
        self.file_len = self.file_len.max(host + cs);
        self.set_l2_entry(cluster, host | COPIED, mapping)
    }

    /// Writes `data` into the `count` clusters just allocated at `host`; if that fails (a full
    /// file system) they are released, so that nothing leaks and the write can be retried.
    fn write_fresh(&mut self, data: &[u8], host: u64, count: u64) -> Result<(), BlockError> {
        let written = self.file.write_all(data, host);
        if written.is_err() {
            let first = host >> self.cluster_bits;
            for cluster in first..first + count {
                self.free_cluster(cluster)?;
            }
        }
        written
    }

    /// How many leading whole-cluster pieces need fresh clusters (at most 512).
    fn allocating_run(&mut self, pieces: &[(u64, u64, usize, usize)]) -> Result<usize, BlockError> {
        let cs = self.cluster_size() as usize;
        let mut run = 0;
        for &(cluster, _, _, n) in pieces.iter().take(512) {
            if n != cs
                || matches!(
                    self.mapping(cluster)?,
                    ClusterMapping::Data { copied: true, .. }
                )
            {
                break;
            }
            run += 1;
        }
        Ok(run)
    }

    /// Writes whole clusters starting at guest cluster `first` into one fresh contiguous run.
    fn write_new_clusters(&mut self, first: u64, data: &[u8]) -> Result<(), BlockError> {
        let cs = self.cluster_size();
        let count = data.len() as u64 / cs;
        let host = self.allocate(count)?;
        self.write_fresh(data, host, count)?;
        self.file_len = self.file_len.max(host + count * cs);
        for i in 0..count {
            let old = self.mapping(first + i)?;
            self.set_l2_entry(first + i, (host + i * cs) | COPIED, old)?;
        }
        Ok(())
    }

    /// True when guest cluster `cluster` already reads as zeros without touching the backing.
    fn reads_as_zero(&mut self, cluster: u64) -> Result<bool, BlockError> {
        Ok(match self.mapping(cluster)? {
            ClusterMapping::Zero { .. } => true,
            ClusterMapping::Unallocated => self.backing.is_none(),
            _ => false,
        })
    }

    /// Zeroes `[offset, offset + len)`; whole clusters become zero (or, when `unmap` and no
    /// backing file shows through, unallocated) and their storage is freed.
    fn zero_range(&mut self, offset: u64, len: u64, unmap: bool) -> Result<(), BlockError> {
        self.check_writable(offset, len)?;
        self.mark_bitmaps(offset, len);
        let cs = self.cluster_size();
        let pieces: Vec<_> = self.pieces(offset, len).collect();
        for (cluster, within, _, n) in pieces {
            if self.reads_as_zero(cluster)? && (n as u64) < cs {
                continue;
            }
            if (n as u64) < cs {
                self.write_in_cluster(cluster, within, &vec![0u8; n])?;
                continue;
            }
            let old = self.mapping(cluster)?;
            let entry = if unmap && self.backing.is_none() {
                0
            } else {
                ZERO
            };
            let current = self.l2_entry(cluster)?;
            if current == entry || (entry == 0 && self.l2_table_for(cluster)?.is_none()) {
                continue;
            }
            self.set_l2_entry(cluster, entry, old)?;
        }
        Ok(())
    }

    /// Ordered metadata write-back: refcounts, sync, L2 tables, sync, L1, sync; then the
    /// deferred frees are applied (to be written by the next write-back).
    pub(super) fn write_back_metadata(&mut self) -> Result<(), BlockError> {
        self.persist_refcounts()?;
        let dirty = self.l2_cache.dirty_offsets();
        for &table in &dirty {
            self.file
                .write_all(self.l2_cache.peek(table).unwrap(), table)?;
            self.l2_cache.mark_clean(table);
        }
        if !dirty.is_empty() {
            self.file.sync()?;
        }
        if self.l1_dirty {
            let bytes: Vec<u8> = self.l1.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.file.write_all(&bytes, self.header.l1_table_offset)?;
            self.file.sync()?;
            self.l1_dirty = false;
        }
        let frees = std::mem::take(&mut self.pending_frees);
        for cluster in frees {
            let file = &self.file;
            self.refcounts
                .as_mut()
                .expect("frees only happen on writable images")
                .decrement(file, cluster)?;
        }
        Ok(())
    }

    /// This layer's own allocation as extents: what each guest range maps to here.
    pub fn layer_extents(&mut self) -> Result<Vec<LayerExtent>, BlockError> {
        let cs = self.cluster_size();
        let clusters = self.header.size.div_ceil(cs);
        let per_table = self.l2_entries();
        let mut extents: Vec<LayerExtent> = Vec::new();
        let mut cluster = 0;
        while cluster < clusters {
            let (kind, step) = if self.l2_table_for(cluster)?.is_none() {
                (ExtentKind::Unallocated, per_table - cluster % per_table)
            } else {
                let kind = match self.mapping(cluster)? {
                    ClusterMapping::Unallocated => ExtentKind::Unallocated,
                    ClusterMapping::Zero { .. } => ExtentKind::Zero,
                    ClusterMapping::Data { .. } | ClusterMapping::Compressed { .. } => {
                        ExtentKind::Data
                    }
                };
                (kind, 1)
            };
            let start = cluster * cs;
            let len = (step.min(clusters - cluster) * cs).min(self.header.size - start);
            match extents.last_mut() {
                Some(last) if last.kind == kind && last.offset + last.len == start => {
                    last.len += len
                }
                _ => extents.push(LayerExtent {
                    offset: start,
                    len,
                    kind,
                }),
            }
            cluster += step;
        }
        Ok(extents)
    }

    /// What each guest cluster and each L2 table of this layer is, for space estimates.
    pub fn allocation_map(&mut self) -> Result<AllocationMap, BlockError> {
        let tables = self
            .l1
            .iter()
            .map(|&e| match (e & OFFSET_MASK, e & COPIED) {
                (0, _) => TableState::Absent,
                (_, 0) => TableState::Shared,
                _ => TableState::Owned,
            })
            .collect();
        let mut map = AllocationMap::new(self.cluster_bits, self.header.size, tables);
        let clusters = map.cluster_count();
        let per_table = self.l2_entries();
        for index in 0..self.l1.len() as u64 {
            if map.table(index) == TableState::Absent {
                continue;
            }
            for cluster in index * per_table..((index + 1) * per_table).min(clusters) {
                let state = match self.mapping(cluster)? {
                    ClusterMapping::Unallocated => continue,
                    ClusterMapping::Zero { host: None } => ClusterState::Zero,
                    ClusterMapping::Data { copied: true, .. } => ClusterState::Owned,
                    _ => ClusterState::Shared,
                };
                map.set_state(cluster, state);
            }
        }
        Ok(map)
    }

    /// Points the image at a new backing file (or none), rewriting the header; the caller
    /// is responsible for the guest-visible content staying what it should be.
    pub fn set_backing(&mut self, backing: Option<&BackingSpec>) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        self.flush()?;
        let format = backing.map(|b| format_name(b.format).as_bytes().to_vec());
        self.header
            .set_extension(header::EXT_BACKING_FORMAT, format);
        self.header.backing_file = backing.map(|b| b.name.clone());
        self.write_header()
    }

    /// The payload of the header extension of type `kind`, if the image has one.
    pub fn extension(&self, kind: u32) -> Option<&[u8]> {
        self.header
            .extensions
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| e.data.as_slice())
    }

    /// Replaces (or with `None` removes) the header extension of type `kind` and rewrites
    /// the header (qemu-img keeps extensions it does not know).
    pub fn set_extension(&mut self, kind: u32, data: Option<Vec<u8>>) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        self.flush()?;
        self.header.set_extension(kind, data);
        self.write_header()
    }

    /// Drops every cluster of this layer so that it reads through to its backing file.
    pub fn make_empty(&mut self) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        let per_table = self.l2_entries();
        for index in 0..self.l1.len() {
            let Some(table) = self.l2_table_for(index as u64 * per_table)? else {
                continue;
            };
            for i in 0..per_table {
                let cluster = index as u64 * per_table + i;
                if let Some((first, count)) =
                    self.mapping(cluster)?.host_clusters(self.cluster_bits)
                {
                    self.pending_frees.extend(first..first + count);
                }
            }
            self.l2_cache.remove(table);
            self.pending_frees.push(table >> self.cluster_bits);
            self.l1[index] = 0;
            self.l1_dirty = true;
        }
        self.decompressed = None;
        self.flush()
    }

    /// Flushes and then writes the refcounts freed by that flush, so a clean close leaks nothing.
    pub fn close(mut self) -> Result<(), BlockError> {
        self.flush()?;
        if !self.read_only {
            self.store_bitmaps_at_close()?;
        }
        self.persist_refcounts()?;
        self.read_only = true;
        Ok(())
    }
}

impl BlockDevice for Qcow2Image {
    fn capacity(&self) -> u64 {
        self.header.size
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        check_range(offset, buf.len() as u64, self.header.size)?;
        let pieces: Vec<_> = self.pieces(offset, buf.len() as u64).collect();
        for (cluster, within, start, n) in pieces {
            self.read_in_cluster(cluster, within, &mut buf[start..start + n])?;
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), BlockError> {
        self.check_writable(offset, buf.len() as u64)?;
        self.mark_bitmaps(offset, buf.len() as u64);
        let pieces: Vec<_> = self.pieces(offset, buf.len() as u64).collect();
        let cs = self.cluster_size() as usize;
        let mut i = 0;
        while i < pieces.len() {
            let (cluster, within, start, n) = pieces[i];
            if n == cs {
                let run = self.allocating_run(&pieces[i..])?;
                if run > 1 {
                    self.write_new_clusters(cluster, &buf[start..start + run * cs])?;
                    i += run;
                    continue;
                }
            }
            self.write_in_cluster(cluster, within, &buf[start..start + n])?;
            i += 1;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        if self.read_only {
            return Ok(());
        }
        self.write_back_metadata()?;
        self.file.sync()
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.zero_range(offset, len, true)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.zero_range(offset, len, false)
    }
}

impl Drop for Qcow2Image {
    fn drop(&mut self) {
        if !self.read_only {
            let _ = self.flush();
            let _ = self.store_bitmaps_at_close();
            let _ = self.persist_refcounts();
        }
    }
}

fn io_open_err(path: &Path, source: std::io::Error) -> Qcow2OpenError {
    Qcow2OpenError::Metadata(BlockError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn read_header(file: &ImageFile) -> Result<Header, Qcow2OpenError> {
    let mut buf = vec![0u8; (1 << 21).min(file.len()? as usize)];
    file.read_exact(&mut buf, 0, "header")?;
    let cluster_bits = buf
        .get(20..24)
        .map_or(16, |b| u32::from_be_bytes(b.try_into().unwrap()));
    if (9..=21).contains(&cluster_bits) {
        buf.truncate(buf.len().min(1 << cluster_bits));
    }
    Header::parse(&buf).map_err(|source| Qcow2OpenError::Header {
        path: file.path().to_path_buf(),
        source,
    })
}

fn check_writable(header: &Header, path: &Path, read_only: bool) -> Result<(), Qcow2OpenError> {
    if read_only {
        return Ok(());
    }
    let path = path.to_path_buf();
    if header.incompatible & header::INCOMPAT_CORRUPT != 0 {
        return Err(Qcow2OpenError::MarkedCorrupt(path));
    }
    if header.incompatible & header::INCOMPAT_DIRTY != 0 {
        return Err(Qcow2OpenError::Dirty(path));
    }
    if header.version < 3 {
        return Err(Qcow2OpenError::Version2Write(path));
    }
    if header.nb_snapshots != 0 {
        return Err(Qcow2OpenError::InternalSnapshots(path));
    }
    Ok(())
}

fn read_l1(file: &ImageFile, header: &Header) -> Result<Vec<u64>, BlockError> {
    let mut raw = vec![0u8; header.l1_size as usize * 8];
    file.read_exact(&mut raw, header.l1_table_offset, "L1 table")?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
        .collect())
}

/// Resolves a backing file name relative to the directory of the image naming it.
pub fn resolve_backing(image: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_path_buf();
    }
    image.parent().unwrap_or(Path::new(".")).join(name)
}

type Backing = (Option<Box<dyn BlockDevice>>, Option<PathBuf>);

/// A file's identity (device, inode): a chain loops when one comes back, whatever the names.
pub(crate) type FileId = (u64, u64);

/// The identity of the open `file`.
pub(crate) fn file_id(file: &std::fs::File) -> std::io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

/// The backing file the qcow2 image open as `file` (found at `path`) names, with the format
/// its header declares for it (none: to be probed), if it has one.
pub(crate) fn backing_name(
    file: std::fs::File,
    path: &Path,
) -> Result<Option<(String, Option<ImageFormat>)>, Qcow2OpenError> {
    let header = read_header(&ImageFile::new(file, path))?;
    let format = declared_backing_format(&header, path)?;
    Ok(header.backing_file.clone().map(|name| (name, format)))
}

/// The backing format the header's extension names, if any; an unknown one is refused.
fn declared_backing_format(
    header: &Header,
    path: &Path,
) -> Result<Option<ImageFormat>, Qcow2OpenError> {
    match header.backing_format() {
        Some("qcow2") => Ok(Some(ImageFormat::Qcow2)),
        Some("raw") => Ok(Some(ImageFormat::Raw)),
        Some(other) => Err(Qcow2OpenError::BackingFormat {
            path: path.to_path_buf(),
            format: other.to_string(),
        }),
        None => Ok(None),
    }
}

fn open_backing(
    path: &Path,
    header: &Header,
    seen: &mut HashSet<FileId>,
) -> Result<Backing, Qcow2OpenError> {
    let Some(name) = &header.backing_file else {
        return Ok((None, None));
    };
    let named = resolve_backing(path, name);
    let wrap = |source: OpenError| Qcow2OpenError::Backing {
        path: path.to_path_buf(),
        backing: named.clone(),
        source: Box::new(source),
    };
    let folder = path.parent().unwrap_or(Path::new("."));
    let (file, backing) = crate::backing::opener()
        .open_backing(folder, name)
        .map_err(|source| {
            wrap(OpenError::Io {
                path: named.clone(),
                source,
            })
        })?;
    let format = match declared_backing_format(header, path)? {
        Some(format) => format,
        None => crate::open::probe_file(&file, &backing).map_err(wrap)?,
    };
    let device: Box<dyn BlockDevice> = match format {
        ImageFormat::Raw => Box::new(RawDisk::from_file(file, &backing, true).map_err(wrap)?),
        ImageFormat::Qcow2 => {
            let options = Qcow2Options {
                read_only: true,
                ..Qcow2Options::default()
            };
            match Qcow2Image::from_file_in_chain(file, &backing, &options, seen) {
                Ok(image) => Box::new(image),
                Err(e @ Qcow2OpenError::BackingLoop(_)) => return Err(e),
                Err(e) => return Err(wrap(OpenError::Qcow2(e))),
            }
        }
    };
    Ok((Some(device), Some(backing)))
}
