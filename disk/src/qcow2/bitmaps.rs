//! Persistent dirty bitmaps (the qcow2 bitmaps extension): the extension header, the bitmap
//! directory, and `DirtyBitmap`, the in-memory bit array one bitmap holds. Pure functions over
//! byte buffers; the image (image.rs) decides when they are read, marked and written.

/// Directory entry flag: the bitmap was opened for writing and not stored back (inconsistent).
pub const FLAG_IN_USE: u32 = 1 << 0;
/// Directory entry flag: the bitmap is enabled (every write marks it).
pub const FLAG_AUTO: u32 = 1 << 1;
/// Directory entry flag: unknown extra data may be ignored.
pub const FLAG_EXTRA_DATA_COMPATIBLE: u32 = 1 << 2;
/// Bitmap type: dirty tracking (the only one defined).
pub const TYPE_DIRTY_TRACKING: u8 = 1;
/// Most bitmaps per image (as QEMU).
const MAX_BITMAPS: u32 = 65535;
/// Largest directory accepted, in bytes (as QEMU).
const MAX_DIRECTORY_BYTES: u64 = 64 << 20;
/// Largest bitmap accepted, in bytes of bits (as QEMU): its bit array lives in memory.
const MAX_BITMAP_BYTES: u64 = 512 << 20;
/// Largest total of all bitmaps of one image, in bytes of bits (all enabled ones are loaded).
const MAX_TOTAL_BITMAP_BYTES: u64 = 1 << 30;
const MAX_NAME: usize = 1023;
const ENTRY_FIXED: usize = 24;

/// Where the bitmap directory is, from the extension's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapsExtension {
    /// Number of bitmaps.
    pub count: u32,
    /// Directory size in bytes.
    pub directory_size: u64,
    /// Host offset of the directory.
    pub directory_offset: u64,
}

/// One bitmap directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapEntry {
    /// Host offset of the bitmap table (0 when not yet stored).
    pub table_offset: u64,
    /// Entries in the bitmap table.
    pub table_size: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Bitmap type.
    pub kind: u8,
    /// log2 of the bytes one bit covers.
    pub granularity_bits: u8,
    /// Extra data, kept verbatim.
    pub extra_data: Vec<u8>,
    /// Unique name.
    pub name: String,
}

/// Why a bitmaps extension or directory was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BitmapsError {
    /// Malformed extension or directory
    #[error("invalid bitmaps extension: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> BitmapsError {
    BitmapsError::Invalid(msg.into())
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

impl BitmapsExtension {
    /// Parses the extension payload.
    pub fn parse(data: &[u8]) -> Result<Self, BitmapsError> {
        if data.len() < 24 {
            return Err(invalid("extension shorter than 24 bytes"));
        }
        let ext = Self {
            count: be32(data, 0),
            directory_size: be64(data, 8),
            directory_offset: be64(data, 16),
        };
        if ext.count == 0 || ext.count > MAX_BITMAPS {
            return Err(invalid(format!("{} bitmaps", ext.count)));
        }
        if ext.directory_size == 0 || ext.directory_size > MAX_DIRECTORY_BYTES {
            return Err(invalid(format!(
                "directory of {} bytes",
                ext.directory_size
            )));
        }
        if ext
            .directory_offset
            .checked_add(ext.directory_size)
            .is_none_or(|e| e > 1 << 56)
        {
            return Err(invalid("directory beyond the largest image"));
        }
        Ok(ext)
    }

    /// The extension payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&self.directory_size.to_be_bytes());
        out.extend_from_slice(&self.directory_offset.to_be_bytes());
        out
    }
}

/// Entries in a bitmap table for a disk of `size` bytes: one per cluster of bits.
pub fn table_entries(size: u64, granularity_bits: u8, cluster_bits: u32) -> u64 {
    let bits = size.div_ceil(1 << granularity_bits);
    bits.div_ceil(8 << cluster_bits)
}

/// Parses `count` directory entries and checks them against a disk of `size` bytes.
pub fn parse_directory(
    buf: &[u8],
    count: u32,
    size: u64,
    cluster_bits: u32,
) -> Result<Vec<BitmapEntry>, BitmapsError> {
    let mut entries = Vec::with_capacity(count.min(1024) as usize);
    let mut at = 0usize;
    let mut total_bytes = 0u64;
    for _ in 0..count {
        if at + ENTRY_FIXED > buf.len() {
            return Err(invalid("directory truncated"));
        }
        let name_size = u16::from_be_bytes([buf[at + 18], buf[at + 19]]) as usize;
        let extra_size = be32(buf, at + 20) as usize;
        let end = at + ENTRY_FIXED + extra_size + name_size;
        if name_size == 0 || name_size > MAX_NAME || extra_size > 1 << 16 || end > buf.len() {
            return Err(invalid("directory entry runs past the directory"));
        }
        let entry = BitmapEntry {
            table_offset: be64(buf, at),
            table_size: be32(buf, at + 8),
            flags: be32(buf, at + 12),
            kind: buf[at + 16],
            granularity_bits: buf[at + 17],
            extra_data: buf[at + ENTRY_FIXED..at + ENTRY_FIXED + extra_size].to_vec(),
            name: String::from_utf8(buf[end - name_size..end].to_vec())
                .map_err(|_| invalid("bitmap name is not UTF-8"))?,
        };
        entry.validate(size, cluster_bits)?;
        total_bytes += (entry.table_size as u64) << cluster_bits;
        if total_bytes > MAX_TOTAL_BITMAP_BYTES {
            return Err(invalid(format!(
                "bitmaps larger than {MAX_TOTAL_BITMAP_BYTES} bytes in total"
            )));
        }
        if entries.iter().any(|e: &BitmapEntry| e.name == entry.name) {
            return Err(invalid(format!("duplicate bitmap {:?}", entry.name)));
        }
        entries.push(entry);
        at = end.next_multiple_of(8);
    }
    Ok(entries)
}

/// The directory bytes for `entries`.
pub fn directory_bytes(entries: &[BitmapEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.table_offset.to_be_bytes());
        out.extend_from_slice(&e.table_size.to_be_bytes());
        out.extend_from_slice(&e.flags.to_be_bytes());
        out.push(e.kind);
        out.push(e.granularity_bits);
        out.extend_from_slice(&(e.name.len() as u16).to_be_bytes());
        out.extend_from_slice(&(e.extra_data.len() as u32).to_be_bytes());
        out.extend_from_slice(&e.extra_data);
        out.extend_from_slice(e.name.as_bytes());
        out.resize(out.len().next_multiple_of(8), 0);
    }
    out
}

impl BitmapEntry {
    fn validate(&self, size: u64, cluster_bits: u32) -> Result<(), BitmapsError> {
        let name = &self.name;
        if !(9..=31).contains(&self.granularity_bits) {
            return Err(invalid(format!(
                "bitmap {name:?}: granularity 2^{}",
                self.granularity_bits
            )));
        }
        if self.table_size as u64 != table_entries(size, self.granularity_bits, cluster_bits) {
            return Err(invalid(format!(
                "bitmap {name:?}: table size {}",
                self.table_size
            )));
        }
        if self.table_size as u64 * (1 << cluster_bits) > MAX_BITMAP_BYTES {
            return Err(invalid(format!(
                "bitmap {name:?}: larger than {MAX_BITMAP_BYTES} bytes"
            )));
        }
        if !self.table_offset.is_multiple_of(1 << cluster_bits) || self.table_offset >= 1 << 56 {
            return Err(invalid(format!(
                "bitmap {name:?}: table offset {:#x}",
                self.table_offset
            )));
        }
        if self.flags & !(FLAG_IN_USE | FLAG_AUTO | FLAG_EXTRA_DATA_COMPATIBLE) != 0 {
            return Err(invalid(format!(
                "bitmap {name:?}: reserved flags {:#x}",
                self.flags
            )));
        }
        Ok(())
    }

    /// True when the entry may be loaded and maintained: a consistent dirty-tracking bitmap
    /// without extra data we would have to understand.
    pub fn is_usable(&self) -> bool {
        self.kind == TYPE_DIRTY_TRACKING
            && self.flags & FLAG_IN_USE == 0
            && (self.extra_data.is_empty() || self.flags & FLAG_EXTRA_DATA_COMPATIBLE != 0)
    }
}

/// A dirty bitmap over a disk: one bit per `1 << granularity_bits` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyBitmap {
    granularity_bits: u8,
    size: u64,
    words: Vec<u64>,
}

impl DirtyBitmap {
    /// An all-clear bitmap for a disk of `size` bytes.
    pub fn new(size: u64, granularity_bits: u8) -> Self {
        let bits = size.div_ceil(1 << granularity_bits);
        Self {
            granularity_bits,
            size,
            words: vec![0; bits.div_ceil(64) as usize],
        }
    }

    /// Bytes covered by one bit.
    pub fn granularity(&self) -> u64 {
        1 << self.granularity_bits
    }

    /// log2 of `granularity`.
    pub fn granularity_bits(&self) -> u8 {
        self.granularity_bits
    }

    /// Marks every bit touching `[offset, offset + len)`.
    pub fn set_range(&mut self, offset: u64, len: u64) {
        if len == 0 || offset >= self.size {
            return;
        }
        let end = (offset + len).min(self.size);
        let (first, last) = (
            offset >> self.granularity_bits,
            (end - 1) >> self.granularity_bits,
        );
        for bit in first..=last {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// Merges `other` (same geometry) into this bitmap.
    pub fn union(&mut self, other: &DirtyBitmap) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
    }

    /// The marked byte ranges within `[start, start + len)`, merged and in order.
    pub fn extents(&self, start: u64, len: u64) -> Vec<(u64, u64)> {
        let end = start.saturating_add(len).min(self.size);
        let mut out: Vec<(u64, u64)> = Vec::new();
        if start >= end {
            return out;
        }
        let g = self.granularity_bits;
        let (first, last) = (start >> g, (end - 1) >> g);
        let mut bit = first;
        while bit <= last {
            let word = self.words[(bit / 64) as usize] >> (bit % 64);
            if word == 0 {
                bit = (bit / 64 + 1) * 64;
                continue;
            }
            bit += word.trailing_zeros() as u64;
            if bit > last {
                break;
            }
            let (s, e) = ((bit << g).max(start), ((bit + 1) << g).min(end));
            match out.last_mut() {
                Some(prev) if prev.0 + prev.1 == s => prev.1 = e - prev.0,
                _ => out.push((s, e - s)),
            }
            bit += 1;
        }
        out
    }

    /// Bytes of the on-disk serialisation of cluster `index` of the bitmap data (bit 0 of
    /// byte 0 first), or `None` when that cluster is all clear.
    pub fn cluster_bytes(&self, index: u64, cluster_bits: u32) -> Option<Vec<u8>> {
        let words_per_cluster = (1usize << cluster_bits) / 8;
        let first = index as usize * words_per_cluster;
        let words = self.words.get(first..)?;
        let words = &words[..words.len().min(words_per_cluster)];
        if words.iter().all(|&w| w == 0) {
            return None;
        }
        let mut out = vec![0u8; 1 << cluster_bits];
        for (i, w) in words.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        Some(out)
    }

    /// Loads cluster `index` of the bitmap data from its on-disk bytes (`None` = all ones).
    pub fn load_cluster(&mut self, index: u64, cluster_bits: u32, data: Option<&[u8]>) {
        let words_per_cluster = (1usize << cluster_bits) / 8;
        let first = index as usize * words_per_cluster;
        let total = self.words.len();
        for i in 0..words_per_cluster.min(total.saturating_sub(first)) {
            self.words[first + i] = match data {
                Some(d) => u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().unwrap()),
                None => u64::MAX,
            };
        }
        let bits = self.size.div_ceil(1 << self.granularity_bits);
        if !bits.is_multiple_of(64) {
            if let Some(last) = self.words.last_mut() {
                *last &= (1 << (bits % 64)) - 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_round_trips_and_refuses_garbage() {
        let size = 1 << 30;
        let entries = vec![
            BitmapEntry {
                table_offset: 0x30000,
                table_size: table_entries(size, 16, 16) as u32,
                flags: FLAG_AUTO,
                kind: TYPE_DIRTY_TRACKING,
                granularity_bits: 16,
                extra_data: Vec::new(),
                name: "vireo-cbt".into(),
            },
            BitmapEntry {
                table_offset: 0x40000,
                table_size: table_entries(size, 12, 16) as u32,
                flags: FLAG_IN_USE | FLAG_EXTRA_DATA_COMPATIBLE,
                kind: TYPE_DIRTY_TRACKING,
                granularity_bits: 12,
                extra_data: vec![1, 2, 3],
                name: "other".into(),
            },
        ];
        let bytes = directory_bytes(&entries);
        assert_eq!(parse_directory(&bytes, 2, size, 16).unwrap(), entries);
        assert!(!entries[1].is_usable());
        assert!(parse_directory(&bytes[..30], 2, size, 16).is_err());
        assert!(parse_directory(&bytes, 2, size * 64, 16).is_err());
        let mut state = 0x1234_5678_9abc_def1u64;
        for _ in 0..5000 {
            let mut copy = bytes.clone();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            copy[(state % bytes.len() as u64) as usize] = (state >> 40) as u8;
            let _ = parse_directory(&copy, 2, size, 16);
        }
    }

    #[test]
    fn bitmap_marks_merges_and_serialises() {
        let mut b = DirtyBitmap::new(10 << 20, 16);
        b.set_range(100, 1);
        b.set_range(65536, 65537);
        b.set_range(5 << 20, 4096);
        assert_eq!(
            b.extents(0, 10 << 20),
            vec![(0, 65536 * 3), (5 << 20, 65536)]
        );
        assert_eq!(b.extents(1000, 70000), vec![(1000, 70000)]);
        let bytes = b.cluster_bytes(0, 12).unwrap();
        assert_eq!(bytes[0], 0b111);
        let mut back = DirtyBitmap::new(10 << 20, 16);
        back.load_cluster(0, 12, Some(&bytes));
        assert_eq!(back, b);
        let mut full = DirtyBitmap::new(10 << 20, 16);
        full.load_cluster(0, 12, None);
        assert_eq!(full.extents(0, u64::MAX), vec![(0, 10 << 20)]);
    }
}
