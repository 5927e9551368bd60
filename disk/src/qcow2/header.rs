//! The qcow2 header: parsing and validating the first cluster (fixed fields, header extensions,
//! backing file name) and serialising it back. Unknown extensions are kept verbatim.
//! Pure functions over byte buffers: no I/O here, so hostile input can be fuzzed directly.

/// The four bytes every qcow2 image starts with.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Incompatible feature: the image was not closed cleanly (lazy refcounts in use).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature: metadata is known to be corrupt.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bits this engine understands.
pub const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY | INCOMPAT_CORRUPT;
/// Autoclear feature: the bitmaps extension is consistent with the image.
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
/// Byte offset of the refcount table offset field (followed by its cluster count).
pub const REFCOUNT_TABLE_FIELD: u64 = 48;
/// Byte offset of the L1 table offset field.
pub const L1_TABLE_OFFSET_FIELD: u64 = 40;
/// Byte offset of the incompatible-features field.
pub const INCOMPAT_FIELD: u64 = 72;
/// Header extension: name of the backing file's format.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: feature name table.
pub const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
/// Header extension: persistent bitmaps.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Largest L1 table accepted (entries), as QEMU does: 32 MiB of table.
pub const MAX_L1_ENTRIES: u64 = (32 << 20) / 8;
/// Largest refcount table accepted, in bytes (8 MiB, as QEMU does).
pub const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;
const V2_HEADER_LEN: usize = 72;
const V3_HEADER_LEN: u32 = 112;
const MAX_BACKING_NAME: u32 = 1023;

/// A header extension kept as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The extension's type code.
    pub kind: u32,
    /// Its payload (without padding).
    pub data: Vec<u8>,
}

/// The parsed qcow2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version, 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Guest-visible size in bytes.
    pub size: u64,
    /// Entries in the L1 table.
    pub l1_size: u32,
    /// Host offset of the L1 table.
    pub l1_table_offset: u64,
    /// Host offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters occupied by the refcount table.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Host offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits.
    pub incompatible: u64,
    /// Compatible feature bits.
    pub compatible: u64,
    /// Autoclear feature bits.
    pub autoclear: u64,
    /// log2 of the refcount width in bits.
    pub refcount_order: u32,
    /// Header extensions in file order, unknown ones included.
    pub extensions: Vec<Extension>,
    /// The backing file name as stored (possibly relative to the image's directory).
    pub backing_file: Option<String>,
}

/// Why a header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a qcow2 image
    #[error("not a qcow2 image (bad magic)")]
    BadMagic,
    /// Truncated header
    #[error("header is truncated")]
    Truncated,
    /// Unsupported version
    #[error("unsupported qcow2 version {0}")]
    Version(u32),
    /// Invalid field
    #[error("invalid header: {0}")]
    Invalid(String),
    /// Unknown or unsupported incompatible features
    #[error("unsupported incompatible features {0:#x}")]
    IncompatibleFeatures(u64),
    /// Encrypted images are not supported
    #[error("encrypted images are not supported")]
    Encrypted,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn invalid(msg: impl Into<String>) -> HeaderError {
    HeaderError::Invalid(msg.into())
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The backing format named by the backing-format extension, if any.
    pub fn backing_format(&self) -> Option<&str> {
        self.extensions
            .iter()
            .find(|e| e.kind == EXT_BACKING_FORMAT)
            .and_then(|e| std::str::from_utf8(&e.data).ok())
    }

    /// Parses and validates the header from the image's first bytes (at least one cluster
    /// when the file is that long).
    pub fn parse(buf: &[u8]) -> Result<Self, HeaderError> {
        if buf.len() < 4 || buf[..4] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if buf.len() < V2_HEADER_LEN {
            return Err(HeaderError::Truncated);
        }
        let version = be32(buf, 4);
        if version != 2 && version != 3 {
            return Err(HeaderError::Version(version));
        }
        let cluster_bits = be32(buf, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(invalid(format!(
                "cluster_bits {cluster_bits} out of 9..=21"
            )));
        }
        let cluster_size = 1u64 << cluster_bits;
        if be32(buf, 32) != 0 {
            return Err(HeaderError::Encrypted);
        }
        let (incompatible, compatible, autoclear, refcount_order, header_length) = if version == 3 {
            if buf.len() < 104 {
                return Err(HeaderError::Truncated);
            }
            (
                be64(buf, 72),
                be64(buf, 80),
                be64(buf, 88),
                be32(buf, 96),
                be32(buf, 100),
            )
        } else {
            (0, 0, 0, 4, V2_HEADER_LEN as u32)
        };
        if incompatible & !INCOMPAT_KNOWN != 0 {
            return Err(HeaderError::IncompatibleFeatures(
                incompatible & !INCOMPAT_KNOWN,
            ));
        }
        if refcount_order > 6 {
            return Err(invalid(format!("refcount_order {refcount_order} > 6")));
        }
        if version == 3 && (header_length < 104 || header_length % 8 != 0) {
            return Err(invalid(format!("header_length {header_length}")));
        }
        if header_length as u64 > cluster_size || header_length as usize > buf.len() {
            return Err(invalid("header_length beyond the first cluster"));
        }
        let backing_offset = be64(buf, 8);
        let mut extensions_end = buf.len().min(cluster_size as usize);
        if backing_offset != 0 {
            extensions_end = extensions_end.min(backing_offset as usize);
        }
        let header = Header {
            version,
            cluster_bits,
            size: be64(buf, 24),
            l1_size: be32(buf, 36),
            l1_table_offset: be64(buf, 40),
            refcount_table_offset: be64(buf, 48),
            refcount_table_clusters: be32(buf, 56),
            nb_snapshots: be32(buf, 60),
            snapshots_offset: be64(buf, 64),
            incompatible,
            compatible,
            autoclear,
            refcount_order,
            extensions: parse_extensions(buf, header_length as usize, extensions_end)?,
            backing_file: parse_backing_name(buf, backing_offset, be32(buf, 16), cluster_size)?,
        };
        header.validate_layout()?;
        Ok(header)
    }

    /// Checks sizes and table placement against the limits this engine accepts.
    fn validate_layout(&self) -> Result<(), HeaderError> {
        let cs = self.cluster_size();
        let l2_entries = cs / 8;
        let bytes_per_l1 = l2_entries * cs;
        if self.size > (1u64 << 62) {
            return Err(invalid(format!("size {} too large", self.size)));
        }
        let needed_l1 = self.size.div_ceil(bytes_per_l1);
        if (self.l1_size as u64) < needed_l1 {
            return Err(invalid("L1 table too small for the disk size"));
        }
        if self.l1_size as u64 > MAX_L1_ENTRIES {
            return Err(invalid("L1 table too large"));
        }
        if self.l1_size > 0 {
            check_table(
                self.l1_table_offset,
                self.l1_size as u64 * 8,
                cs,
                "L1 table",
            )?;
        }
        if self.refcount_table_clusters == 0 {
            return Err(invalid("empty refcount table"));
        }
        let rt_bytes = self.refcount_table_clusters as u64 * cs;
        if rt_bytes > MAX_REFCOUNT_TABLE_BYTES {
            return Err(invalid("refcount table too large"));
        }
        check_table(self.refcount_table_offset, rt_bytes, cs, "refcount table")
    }

    /// Serialises the header, its extensions and the backing file name into one buffer
    /// that must fit in the first cluster.
    pub fn to_bytes(&self) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes()); // backing offset, patched below
        out.extend_from_slice(&0u32.to_be_bytes()); // backing size, patched below
        out.extend_from_slice(&self.cluster_bits.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // crypt_method
        out.extend_from_slice(&self.l1_size.to_be_bytes());
        out.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        out.extend_from_slice(&self.refcount_table_offset.to_be_bytes());
        out.extend_from_slice(&self.refcount_table_clusters.to_be_bytes());
        out.extend_from_slice(&self.nb_snapshots.to_be_bytes());
        out.extend_from_slice(&self.snapshots_offset.to_be_bytes());
        if self.version == 3 {
            out.extend_from_slice(&self.incompatible.to_be_bytes());
            out.extend_from_slice(&self.compatible.to_be_bytes());
            out.extend_from_slice(&self.autoclear.to_be_bytes());
            out.extend_from_slice(&self.refcount_order.to_be_bytes());
            out.extend_from_slice(&V3_HEADER_LEN.to_be_bytes());
            out.resize(V3_HEADER_LEN as usize, 0); // compression type 0 (deflate) + padding
        }
        for ext in &self.extensions {
            out.extend_from_slice(&ext.kind.to_be_bytes());
            out.extend_from_slice(&(ext.data.len() as u32).to_be_bytes());
            out.extend_from_slice(&ext.data);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        out.extend_from_slice(&[0u8; 8]); // end of extensions
        if let Some(name) = &self.backing_file {
            let offset = out.len() as u64;
            out[8..16].copy_from_slice(&offset.to_be_bytes());
            out[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        if out.len() as u64 > self.cluster_size() {
            return Err(invalid("header does not fit in the first cluster"));
        }
        Ok(out)
    }

    /// Replaces (or with `None` removes) the extension of type `kind`.
    pub fn set_extension(&mut self, kind: u32, data: Option<Vec<u8>>) {
        match (self.extensions.iter().position(|e| e.kind == kind), data) {
            (Some(i), Some(data)) => self.extensions[i].data = data,
            (Some(i), None) => {
                self.extensions.remove(i);
            }
            (None, Some(data)) => self.extensions.push(Extension { kind, data }),
            (None, None) => {}
        }
    }
}

fn check_table(offset: u64, bytes: u64, cluster_size: u64, what: &str) -> Result<(), HeaderError> {
    if offset == 0 || !offset.is_multiple_of(cluster_size) {
        return Err(invalid(format!(
            "{what} offset {offset:#x} is not a valid cluster"
        )));
    }
    if offset.checked_add(bytes).is_none_or(|end| end > 1 << 56) {
        return Err(invalid(format!("{what} extends beyond the largest image")));
    }
    Ok(())
}

/// Reads the extension list in `buf[start..end]`; a region too short for one entry has none.
fn parse_extensions(buf: &[u8], start: usize, end: usize) -> Result<Vec<Extension>, HeaderError> {
    let mut extensions = Vec::new();
    let mut at = start;
    loop {
        if at + 8 > end {
            return Ok(extensions);
        }
        let kind = be32(buf, at);
        let len = be32(buf, at + 4) as usize;
        at += 8;
        if kind == 0 {
            return Ok(extensions);
        }
        let padded = len.next_multiple_of(8);
        if at + len > end {
            return Err(invalid(format!(
                "header extension {kind:#x} runs past the first cluster"
            )));
        }
        extensions.push(Extension {
            kind,
            data: buf[at..at + len].to_vec(),
        });
        at += padded;
    }
}

fn parse_backing_name(
    buf: &[u8],
    offset: u64,
    len: u32,
    cluster_size: u64,
) -> Result<Option<String>, HeaderError> {
    if offset == 0 {
        return Ok(None);
    }
    if len == 0 || len > MAX_BACKING_NAME {
        return Err(invalid(format!("backing file name length {len}")));
    }
    let end = offset + len as u64;
    if end > cluster_size || end > buf.len() as u64 {
        return Err(invalid("backing file name outside the first cluster"));
    }
    let name = std::str::from_utf8(&buf[offset as usize..end as usize])
        .map_err(|_| invalid("backing file name is not UTF-8"))?;
    Ok(Some(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: 3,
            cluster_bits: 16,
            size: 1 << 30,
            l1_size: 2,
            l1_table_offset: 3 << 16,
            refcount_table_offset: 1 << 16,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            extensions: vec![
                Extension {
                    kind: EXT_BACKING_FORMAT,
                    data: b"qcow2".to_vec(),
                },
                Extension {
                    kind: 0x1234_5678,
                    data: vec![1, 2, 3],
                },
            ],
            backing_file: Some("base.qcow2".into()),
        }
    }

    #[test]
    fn round_trips_with_unknown_extensions() {
        let header = sample();
        let mut bytes = header.to_bytes().unwrap();
        bytes.resize(1 << 16, 0);
        assert_eq!(Header::parse(&bytes).unwrap(), header);
        assert_eq!(header.backing_format(), Some("qcow2"));
    }

    #[test]
    fn refuses_unknown_incompatible_bits_and_bad_fields() {
        let mut bytes = sample().to_bytes().unwrap();
        bytes.resize(1 << 16, 0);
        let mut bad = bytes.clone();
        bad[79] = 0x10;
        assert_eq!(
            Header::parse(&bad),
            Err(HeaderError::IncompatibleFeatures(0x10))
        );
        let mut bad = bytes.clone();
        bad[23] = 30;
        assert!(matches!(Header::parse(&bad), Err(HeaderError::Invalid(_))));
        let mut bad = bytes.clone();
        bad[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Header::parse(&bad), Err(HeaderError::Invalid(_))));
        assert_eq!(Header::parse(&bytes[..50]), Err(HeaderError::Truncated));
        assert_eq!(Header::parse(b"QFI"), Err(HeaderError::BadMagic));
    }

    #[test]
    fn random_corruption_never_panics() {
        let mut bytes = sample().to_bytes().unwrap();
        bytes.resize(4096, 0);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut copy = bytes.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % 256) as usize;
                copy[at] = (state >> 32) as u8;
            }
            let _ = Header::parse(&copy);
        }
    }
}
