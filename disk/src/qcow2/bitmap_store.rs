//! Persistent dirty bitmaps inside an open image: loading the directory, maintaining every
//! enabled (`auto`) bitmap on guest writes, flagging them `in_use` while the image is open for
//! writing (an image with bitmaps is also flock-ed exclusively, so that other processes can
//! tell a live writer from one that died), and storing them back
//! copy-on-write at close: new clusters, refcounts synced, header switched, old ones freed.

use std::os::fd::AsRawFd;

use super::bitmaps::{
    directory_bytes, parse_directory, table_entries, BitmapEntry, BitmapsExtension, DirtyBitmap,
    FLAG_AUTO, FLAG_IN_USE, TYPE_DIRTY_TRACKING,
};
use super::header::{AUTOCLEAR_BITMAPS, EXT_BITMAPS};
use super::image::Qcow2Image;
use super::io::ImageFile;
use crate::block::BlockError;

/// Bitmap table entry bits holding the data cluster's offset.
const TABLE_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// The bitmaps of an open image.
#[derive(Default)]
pub struct ImageBitmaps {
    /// The directory as last written (flags as on disk).
    pub entries: Vec<BitmapEntry>,
    /// Where the directory is: (offset, bytes); (0, 0) when none is stored.
    pub directory: (u64, u64),
    /// Enabled bitmaps this image marks on every write, by name.
    pub enabled: Vec<(String, DirtyBitmap)>,
    /// True once this process holds the image's exclusive flock.
    pub locked: bool,
}

/// True when another process holds the flock a writer with enabled bitmaps takes.
pub fn is_locked_by_writer(file: &std::fs::File) -> bool {
    // libc's flock: nix's Flock takes ownership of the descriptor, and these locks belong to
    // the image's own descriptor for as long as it is open.
    // SAFETY: flock on a descriptor we own; a shared lock taken here is released at once.
    let got = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    if got {
        // SAFETY: as above.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
    }
    !got
}

/// Reads the directory named by the header's bitmaps extension (when the autoclear bit says
/// it is valid).
pub fn load_directory(
    file: &ImageFile,
    header: &super::header::Header,
) -> Result<Option<ImageBitmaps>, BlockError> {
    if header.autoclear & AUTOCLEAR_BITMAPS == 0 {
        return Ok(None);
    }
    let Some(ext) = header.extensions.iter().find(|e| e.kind == EXT_BITMAPS) else {
        return Ok(None);
    };
    let ext = BitmapsExtension::parse(&ext.data).map_err(|e| file.corrupt(e.to_string()))?;
    if !ext.directory_offset.is_multiple_of(header.cluster_size()) {
        return Err(file.corrupt("bitmap directory is not cluster aligned"));
    }
    let mut buf = vec![0u8; ext.directory_size as usize];
    file.read_exact(&mut buf, ext.directory_offset, "bitmap directory")?;
    let entries = parse_directory(&buf, ext.count, header.size, header.cluster_bits)
        .map_err(|e| file.corrupt(e.to_string()))?;
    Ok(Some(ImageBitmaps {
        entries,
        directory: (ext.directory_offset, ext.directory_size),
        enabled: Vec::new(),
        locked: false,
    }))
}

impl Qcow2Image {
    /// The bitmap directory (empty when the image has no valid bitmaps extension).
    pub fn bitmap_entries(&self) -> &[BitmapEntry] {
        self.bitmaps.as_ref().map_or(&[], |b| &b.entries)
    }

    /// The current content of bitmap `name`: the live copy of an enabled bitmap, otherwise
    /// what is stored. `None` when no such bitmap exists.
    pub fn read_bitmap(&self, name: &str) -> Result<Option<DirtyBitmap>, BlockError> {
        let Some(bitmaps) = &self.bitmaps else {
            return Ok(None);
        };
        if let Some((_, live)) = bitmaps.enabled.iter().find(|(n, _)| n == name) {
            return Ok(Some(live.clone()));
        }
        match bitmaps.entries.iter().find(|e| e.name == name) {
            Some(entry) => self.load_bitmap(entry).map(Some),
            None => Ok(None),
        }
    }

    fn load_bitmap(&self, entry: &BitmapEntry) -> Result<DirtyBitmap, BlockError> {
        let mut bitmap = DirtyBitmap::new(self.header.size, entry.granularity_bits);
        if entry.table_offset == 0 {
            return Ok(bitmap);
        }
        let table = self.bitmap_table(entry)?;
        let cs = self.cluster_size();
        let mut data = vec![0u8; cs as usize];
        for (i, &e) in table.iter().enumerate() {
            let host = e & TABLE_OFFSET_MASK;
            if host == 0 {
                if e & 1 != 0 {
                    bitmap.load_cluster(i as u64, self.cluster_bits, None);
                }
                continue;
            }
            self.check_cluster(host, "bitmap data")?;
            self.file.read_exact(&mut data, host, "bitmap data")?;
            bitmap.load_cluster(i as u64, self.cluster_bits, Some(&data));
        }
        Ok(bitmap)
    }

    fn bitmap_table(&self, entry: &BitmapEntry) -> Result<Vec<u64>, BlockError> {
        self.check_cluster(entry.table_offset, "bitmap table")?;
        let mut raw = vec![0u8; entry.table_size as usize * 8];
        self.file
            .read_exact(&mut raw, entry.table_offset, "bitmap table")?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect())
    }

    /// At a writable open: loads every consistent `auto` bitmap for maintenance and marks it
    /// `in_use` on disk. Bitmaps found `in_use` were not stored back by their last writer:
    /// they stay as they are (inconsistent) and are not maintained.
    pub(super) fn start_maintaining_bitmaps(&mut self) -> Result<(), BlockError> {
        let Some(bitmaps) = &self.bitmaps else {
            return Ok(());
        };
        if bitmaps.entries.is_empty() {
            return Ok(());
        }
        self.lock()?;
        let bitmaps = self.bitmaps.as_ref().expect("checked above");
        let auto: Vec<BitmapEntry> = bitmaps
            .entries
            .iter()
            .filter(|e| e.is_usable() && e.flags & FLAG_AUTO != 0)
            .cloned()
            .collect();
        if auto.is_empty() {
            return Ok(());
        }
        let mut enabled = Vec::new();
        for entry in &auto {
            enabled.push((entry.name.clone(), self.load_bitmap(entry)?));
        }
        let bitmaps = self.bitmaps.as_mut().expect("checked above");
        bitmaps.enabled = enabled;
        for e in &mut bitmaps.entries {
            if auto.iter().any(|a| a.name == e.name) {
                e.flags |= FLAG_IN_USE;
            }
        }
        let bytes = directory_bytes(&bitmaps.entries);
        let offset = bitmaps.directory.0;
        self.file.write_all(&bytes, offset)?;
        self.file.sync()
    }

    fn lock(&mut self) -> Result<(), BlockError> {
        let bitmaps = self.bitmaps.get_or_insert_with(ImageBitmaps::default);
        if bitmaps.locked {
            return Ok(());
        }
        // libc's flock, as in is_locked_by_writer.
        // SAFETY: flock on the image's own descriptor; released when it is closed.
        let rc =
            unsafe { libc::flock(self.file.file().as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(self.file.io_err(std::io::Error::other(
                "image is open for writing by another process",
            )));
        }
        bitmaps.locked = true;
        Ok(())
    }

    /// Marks `[offset, offset + len)` in every enabled bitmap.
    pub(super) fn mark_bitmaps(&mut self, offset: u64, len: u64) {
        if let Some(bitmaps) = &mut self.bitmaps {
            for (_, bitmap) in &mut bitmaps.enabled {
                bitmap.set_range(offset, len);
            }
        }
    }

    /// Adds (or replaces) the enabled bitmap `name` with `content` (granularity included) and
    /// stores the directory at once, flagged `in_use` until the image is closed.
    pub fn add_bitmap(&mut self, name: &str, content: DirtyBitmap) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        self.lock()?;
        let stale = self.detach_bitmap(name)?;
        let bitmaps = self.bitmaps.as_mut().expect("lock creates the bitmaps");
        bitmaps.entries.push(BitmapEntry {
            table_offset: 0,
            table_size: table_entries(
                self.header.size,
                content.granularity_bits(),
                self.cluster_bits,
            ) as u32,
            flags: FLAG_AUTO | FLAG_IN_USE,
            kind: TYPE_DIRTY_TRACKING,
            granularity_bits: content.granularity_bits(),
            extra_data: Vec::new(),
            name: name.to_string(),
        });
        bitmaps.enabled.push((name.to_string(), content));
        self.store_bitmaps(true, stale)
    }

    /// Removes bitmap `name` (if present) and stores the directory.
    pub fn remove_bitmap(&mut self, name: &str) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        let stale = self.detach_bitmap(name)?;
        self.store_bitmaps(true, stale)
    }

    /// Drops bitmap `name` from memory; returns the host clusters it occupied on disk.
    fn detach_bitmap(&mut self, name: &str) -> Result<Vec<u64>, BlockError> {
        let Some(bitmaps) = &self.bitmaps else {
            return Ok(Vec::new());
        };
        let Some(entry) = bitmaps.entries.iter().find(|e| e.name == name).cloned() else {
            return Ok(Vec::new());
        };
        let clusters = self.stored_clusters(&entry)?;
        let bitmaps = self.bitmaps.as_mut().expect("checked above");
        bitmaps.entries.retain(|e| e.name != name);
        bitmaps.enabled.retain(|(n, _)| n != name);
        Ok(clusters)
    }

    /// Host clusters of a stored bitmap: its table's and its data's.
    fn stored_clusters(&self, entry: &BitmapEntry) -> Result<Vec<u64>, BlockError> {
        if entry.table_offset == 0 {
            return Ok(Vec::new());
        }
        let bits = self.cluster_bits;
        let table_clusters = (entry.table_size as u64 * 8)
            .div_ceil(self.cluster_size())
            .max(1);
        let first = entry.table_offset >> bits;
        let mut clusters: Vec<u64> = (first..first + table_clusters).collect();
        for e in self.bitmap_table(entry)? {
            if e & TABLE_OFFSET_MASK != 0 {
                clusters.push((e & TABLE_OFFSET_MASK) >> bits);
            }
        }
        Ok(clusters)
    }

    /// Writes every enabled bitmap to new clusters and a new directory, switches the header
    /// to it (after the refcounts are durable) and then frees the old clusters and `extra`.
    /// With `in_use` false (at close) the bitmaps are flagged consistent.
    pub(super) fn store_bitmaps(
        &mut self,
        in_use: bool,
        extra: Vec<u64>,
    ) -> Result<(), BlockError> {
        let Some(bitmaps) = self.bitmaps.take() else {
            return Ok(());
        };
        self.store_bitmaps_from(bitmaps, in_use, extra)
    }

    /// At close: stores the enabled bitmaps flagged consistent (nothing to do without any).
    pub(super) fn store_bitmaps_at_close(&mut self) -> Result<(), BlockError> {
        if self.bitmaps.as_ref().is_some_and(|b| !b.enabled.is_empty()) {
            self.store_bitmaps(false, Vec::new())?;
        }
        Ok(())
    }

    fn store_bitmaps_from(
        &mut self,
        mut bitmaps: ImageBitmaps,
        in_use: bool,
        mut frees: Vec<u64>,
    ) -> Result<(), BlockError> {
        let cs = self.cluster_size();
        let bits = self.cluster_bits;
        let mut entries = bitmaps.entries.clone();
        for (name, bitmap) in &bitmaps.enabled {
            let entry = entries
                .iter_mut()
                .find(|e| &e.name == name)
                .expect("enabled bitmaps have entries");
            let old = entry.clone();
            let mut table = vec![0u8; entry.table_size as usize * 8];
            for i in 0..entry.table_size as u64 {
                if let Some(data) = bitmap.cluster_bytes(i, bits) {
                    let host = self.allocate(1)?;
                    self.file.write_all(&data, host)?;
                    table[i as usize * 8..i as usize * 8 + 8].copy_from_slice(&host.to_be_bytes());
                }
            }
            let table_clusters = (table.len() as u64).div_ceil(cs).max(1);
            entry.table_offset = self.allocate(table_clusters)?;
            table.resize((table_clusters * cs) as usize, 0);
            self.file.write_all(&table, entry.table_offset)?;
            entry.flags = if in_use {
                entry.flags | FLAG_IN_USE
            } else {
                entry.flags & !FLAG_IN_USE
            };
            self.file_len = self.file_len.max(entry.table_offset + table_clusters * cs);
            frees.extend(self.stored_clusters(&old)?);
        }
        if bitmaps.directory.0 != 0 {
            let first = bitmaps.directory.0 >> bits;
            frees.extend(first..first + bitmaps.directory.1.div_ceil(cs));
        }
        let directory = directory_bytes(&entries);
        let location = if entries.is_empty() {
            (0, 0)
        } else {
            let clusters = (directory.len() as u64).div_ceil(cs);
            let offset = self.allocate(clusters)?;
            self.file.write_all(&directory, offset)?;
            self.file_len = self.file_len.max(offset + clusters * cs);
            (offset, directory.len() as u64)
        };
        self.file.sync()?;
        self.persist_refcounts()?;
        let extension = (!entries.is_empty()).then(|| {
            BitmapsExtension {
                count: entries.len() as u32,
                directory_size: location.1,
                directory_offset: location.0,
            }
            .to_bytes()
        });
        self.header.set_extension(EXT_BITMAPS, extension);
        if entries.is_empty() {
            self.header.autoclear &= !AUTOCLEAR_BITMAPS;
        } else {
            self.header.autoclear |= AUTOCLEAR_BITMAPS;
        }
        self.write_header()?;
        for cluster in frees {
            self.free_cluster(cluster)?;
        }
        self.persist_refcounts()?;
        bitmaps.entries = entries;
        bitmaps.directory = location;
        self.bitmaps = Some(bitmaps);
        Ok(())
    }
}
