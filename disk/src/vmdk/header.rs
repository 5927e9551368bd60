//! The binary structures of a hosted sparse VMDK extent (VMware's "Virtual Disk Format 5.0"):
//! the 512-byte `SparseExtentHeader`, the stream markers and grain records of streamOptimized
//! files, their validation limits and their little-endian encoding. No I/O.

/// `KDMV` read as a little-endian u32: the first four bytes of every sparse extent.
pub const MAGIC: u32 = 0x564d_444b;
/// Bytes per sector; every VMDK offset and size counts sectors.
pub const SECTOR: u64 = 512;
/// `gdOffset` meaning "the grain directory's real offset is in the footer".
pub const GD_AT_END: u64 = u64::MAX;
/// Flag: the newline-detection bytes are valid (detects files mangled by text transfers).
pub const FLAG_NEWLINE_TEST: u32 = 1;
/// Flag: a redundant grain directory exists at `rgdOffset`.
pub const FLAG_REDUNDANT_GD: u32 = 1 << 1;
/// Flag: a grain table entry of 1 means "this grain reads as zeros".
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Flag: grains are compressed (each preceded by its LBA and compressed size).
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag: the file carries stream markers (streamOptimized).
pub const FLAG_MARKERS: u32 = 1 << 17;
/// `compressAlgorithm` for zlib-wrapped deflate.
pub const COMPRESS_DEFLATE: u16 = 1;
/// Grain table entries per grain table: VMware and qemu write 512, and we accept no more.
pub const MAX_GTES_PER_GT: u32 = 512;
/// The largest grain accepted (1 MiB, 2048 sectors); VMware and qemu write 64 KiB.
pub const MAX_GRAIN_SECTORS: u64 = 2048;
/// The largest capacity accepted: 128 TiB (VMware's own limit is 62 TB).
pub const MAX_CAPACITY_SECTORS: u64 = 1 << 38;
/// Bytes in front of a compressed grain's data: its LBA (u64) and compressed size (u32).
pub const GRAIN_RECORD_HEADER: usize = 12;

/// What a stream marker announces (`type` of a marker whose `size` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    /// End of stream.
    EndOfStream,
    /// A grain table follows (`val` sectors).
    GrainTable,
    /// The grain directory follows (`val` sectors).
    GrainDirectory,
    /// The footer (a copy of the header with the real `gdOffset`) follows.
    Footer,
}

impl MarkerKind {
    fn code(self) -> u32 {
        match self {
            MarkerKind::EndOfStream => 0,
            MarkerKind::GrainTable => 1,
            MarkerKind::GrainDirectory => 2,
            MarkerKind::Footer => 3,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => MarkerKind::EndOfStream,
            1 => MarkerKind::GrainTable,
            2 => MarkerKind::GrainDirectory,
            3 => MarkerKind::Footer,
            _ => return None,
        })
    }
}

/// One sector of a streamOptimized file read at a record boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRecord {
    /// A compressed grain: its first sector (in the disk) and compressed byte count.
    Grain {
        /// The grain's first disk sector.
        lba: u64,
        /// Bytes of compressed data after the 12-byte record header.
        size: u32,
    },
    /// A marker: what it announces and its value (sectors of metadata that follow).
    Marker {
        /// The marker's type.
        kind: MarkerKind,
        /// Sectors of metadata following the marker (0 for end of stream).
        sectors: u64,
    },
}

impl StreamRecord {
    /// Decodes the record starting at `sector`; `Err` names an unknown marker type.
    pub fn parse(sector: &[u8]) -> Result<Self, String> {
        let val = le64(sector, 0);
        let size = le32(sector, 8);
        if size != 0 {
            return Ok(StreamRecord::Grain { lba: val, size });
        }
        let code = le32(sector, 12);
        let kind = MarkerKind::from_code(code)
            .ok_or_else(|| format!("unknown stream marker type {code}"))?;
        Ok(StreamRecord::Marker { kind, sectors: val })
    }
}

/// Encodes a marker sector announcing `sectors` of metadata of `kind`.
pub fn encode_marker(kind: MarkerKind, sectors: u64) -> [u8; SECTOR as usize] {
    let mut out = [0u8; SECTOR as usize];
    out[0..8].copy_from_slice(&sectors.to_le_bytes());
    out[12..16].copy_from_slice(&kind.code().to_le_bytes());
    out
}

/// Encodes the 12-byte header of a compressed grain record.
pub fn encode_grain_record(lba: u64, size: u32) -> [u8; GRAIN_RECORD_HEADER] {
    let mut out = [0u8; GRAIN_RECORD_HEADER];
    out[0..8].copy_from_slice(&lba.to_le_bytes());
    out[8..12].copy_from_slice(&size.to_le_bytes());
    out
}

/// A sparse extent's header (all sizes and offsets in sectors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseHeader {
    /// Format version (1; 2 for zeroed-grain GTEs; 3 for streamOptimized).
    pub version: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Disk size in sectors.
    pub capacity: u64,
    /// Sectors per grain (a power of two).
    pub grain_size: u64,
    /// Sector of the embedded descriptor (0: none).
    pub descriptor_offset: u64,
    /// Sectors reserved for the embedded descriptor.
    pub descriptor_size: u64,
    /// Entries per grain table.
    pub gtes_per_gt: u32,
    /// Sector of the redundant grain directory (0: none).
    pub rgd_offset: u64,
    /// Sector of the grain directory, or `GD_AT_END`.
    pub gd_offset: u64,
    /// Sectors of metadata before the first grain.
    pub overhead: u64,
    /// True when the extent was not closed cleanly.
    pub unclean_shutdown: bool,
    /// `COMPRESS_DEFLATE` or 0.
    pub compress_algorithm: u16,
}

/// The newline-detection bytes VMware stores at offset 73: `\n`, ` `, `\r`, `\n`.
const NEWLINE_BYTES: [u8; 4] = [b'\n', b' ', b'\r', b'\n'];

impl SparseHeader {
    /// Decodes and validates a header sector; `Err` says what is wrong.
    pub fn parse(sector: &[u8]) -> Result<Self, String> {
        if sector.len() < SECTOR as usize || le32(sector, 0) != MAGIC {
            return Err("not a sparse VMDK extent (no KDMV magic)".into());
        }
        let header = SparseHeader {
            version: le32(sector, 4),
            flags: le32(sector, 8),
            capacity: le64(sector, 12),
            grain_size: le64(sector, 20),
            descriptor_offset: le64(sector, 28),
            descriptor_size: le64(sector, 36),
            gtes_per_gt: le32(sector, 44),
            rgd_offset: le64(sector, 48),
            gd_offset: le64(sector, 56),
            overhead: le64(sector, 64),
            unclean_shutdown: sector[72] != 0,
            compress_algorithm: u16::from_le_bytes([sector[77], sector[78]]),
        };
        if header.flags & FLAG_NEWLINE_TEST != 0 && sector[73..77] != NEWLINE_BYTES {
            return Err("newline-detection bytes are damaged (file transferred as text?)".into());
        }
        header.validate()?;
        Ok(header)
    }

    /// Checks the limits every reader relies on.
    fn validate(&self) -> Result<(), String> {
        if !(1..=3).contains(&self.version) {
            return Err(format!("unsupported sparse VMDK version {}", self.version));
        }
        if !self.grain_size.is_power_of_two() || self.grain_size > MAX_GRAIN_SECTORS {
            return Err(format!(
                "grain size of {} sectors is not a power of two up to {MAX_GRAIN_SECTORS}",
                self.grain_size
            ));
        }
        if self.gtes_per_gt == 0 || self.gtes_per_gt > MAX_GTES_PER_GT {
            return Err(format!(
                "{} grain table entries per table (1..={MAX_GTES_PER_GT} accepted)",
                self.gtes_per_gt
            ));
        }
        if self.capacity > MAX_CAPACITY_SECTORS {
            return Err(format!(
                "capacity of {} sectors exceeds the {MAX_CAPACITY_SECTORS} accepted",
                self.capacity
            ));
        }
        if self.compressed() && self.compress_algorithm != COMPRESS_DEFLATE {
            return Err(format!(
                "unknown compression algorithm {}",
                self.compress_algorithm
            ));
        }
        Ok(())
    }

    /// True when grains are deflate-compressed records.
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// True when the file carries stream markers.
    pub fn has_markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    /// Bytes per grain.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_size * SECTOR
    }

    /// Disk sectors one grain table covers.
    pub fn sectors_per_gt(&self) -> u64 {
        self.grain_size * u64::from(self.gtes_per_gt)
    }

    /// Entries in the grain directory.
    pub fn gd_entries(&self) -> u64 {
        self.capacity.div_ceil(self.sectors_per_gt())
    }

    /// Sectors one grain table occupies.
    pub fn gt_sectors(&self) -> u64 {
        (u64::from(self.gtes_per_gt) * 4).div_ceil(SECTOR)
    }

    /// Encodes the header sector.
    pub fn encode(&self) -> [u8; SECTOR as usize] {
        let mut out = [0u8; SECTOR as usize];
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&self.version.to_le_bytes());
        out[8..12].copy_from_slice(&self.flags.to_le_bytes());
        out[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        out[20..28].copy_from_slice(&self.grain_size.to_le_bytes());
        out[28..36].copy_from_slice(&self.descriptor_offset.to_le_bytes());
        out[36..44].copy_from_slice(&self.descriptor_size.to_le_bytes());
        out[44..48].copy_from_slice(&self.gtes_per_gt.to_le_bytes());
        out[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        out[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        out[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        out[72] = u8::from(self.unclean_shutdown);
        out[73..77].copy_from_slice(&NEWLINE_BYTES);
        out[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        out
    }
}

/// The little-endian u32 at `at`.
pub fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// The little-endian u64 at `at`.
pub fn le64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_header() -> SparseHeader {
        SparseHeader {
            version: 3,
            flags: FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity: 2048,
            grain_size: 128,
            descriptor_offset: 1,
            descriptor_size: 20,
            gtes_per_gt: 512,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead: 128,
            unclean_shutdown: false,
            compress_algorithm: COMPRESS_DEFLATE,
        }
    }

    #[test]
    fn header_round_trips() {
        let header = stream_header();
        assert_eq!(SparseHeader::parse(&header.encode()).unwrap(), header);
    }

    #[test]
    fn lying_headers_are_refused() {
        let mut bad = stream_header();
        bad.grain_size = 3;
        assert!(SparseHeader::parse(&bad.encode()).is_err());
        let mut bad = stream_header();
        bad.gtes_per_gt = 1 << 20;
        assert!(SparseHeader::parse(&bad.encode()).is_err());
        let mut bad = stream_header();
        bad.capacity = u64::MAX;
        assert!(SparseHeader::parse(&bad.encode()).is_err());
        let mut bytes = stream_header().encode();
        bytes[75] = b'\n';
        assert!(SparseHeader::parse(&bytes).is_err());
        assert!(SparseHeader::parse(&[0u8; 512]).is_err());
    }

    #[test]
    fn records_decode() {
        let marker = encode_marker(MarkerKind::GrainTable, 4);
        assert_eq!(
            StreamRecord::parse(&marker).unwrap(),
            StreamRecord::Marker {
                kind: MarkerKind::GrainTable,
                sectors: 4
            }
        );
        let mut grain = [0u8; 512];
        grain[..12].copy_from_slice(&encode_grain_record(128, 77));
        assert_eq!(
            StreamRecord::parse(&grain).unwrap(),
            StreamRecord::Grain { lba: 128, size: 77 }
        );
        let mut unknown = encode_marker(MarkerKind::Footer, 1);
        unknown[12] = 9;
        assert!(StreamRecord::parse(&unknown).is_err());
    }
}
