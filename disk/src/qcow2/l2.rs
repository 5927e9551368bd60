//! L1/L2 table entries: what one guest cluster maps to, decoded from its L2 entry.
//! Pure decoding and encoding, no I/O.

/// L1/L2 flag: the cluster's refcount is exactly one, so it may be written in place.
pub const COPIED: u64 = 1 << 63;
/// L2 flag: the cluster is deflate-compressed.
pub const COMPRESSED: u64 = 1 << 62;
/// L2 flag (v3): the cluster reads as zeros.
pub const ZERO: u64 = 1;
/// Host offset bits of L1 entries and standard L2 entries.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// What a guest cluster maps to in one image layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterMapping {
    /// Not allocated here: read the backing file (or zeros).
    Unallocated,
    /// Reads as zeros; `host` is a preallocated cluster to reuse, if any.
    Zero {
        /// Preallocated host cluster, if any.
        host: Option<u64>,
    },
    /// Stored uncompressed at `host`.
    Data {
        /// Host offset of the cluster.
        host: u64,
        /// Refcount is one: writable in place.
        copied: bool,
    },
    /// Stored deflate-compressed: `len` bytes at `host`.
    Compressed {
        /// Host byte offset of the compressed stream.
        host: u64,
        /// Bytes the stream may span.
        len: u64,
    },
}

impl ClusterMapping {
    /// Decodes an L2 entry of an image with `cluster_bits` and format `version`.
    pub fn decode(entry: u64, cluster_bits: u32, version: u32) -> Result<Self, String> {
        if entry & COMPRESSED != 0 {
            let offset_bits = 62 - (cluster_bits - 8);
            let host = entry & ((1 << offset_bits) - 1);
            let sectors = ((entry >> offset_bits) & ((1 << (cluster_bits - 8)) - 1)) + 1;
            return Ok(Self::Compressed {
                host,
                len: sectors * 512 - (host & 511),
            });
        }
        let host = entry & OFFSET_MASK;
        if host & ((1 << cluster_bits) - 1) != 0 {
            return Err(format!(
                "L2 entry {entry:#x} points to an unaligned cluster"
            ));
        }
        if version >= 3 && entry & ZERO != 0 {
            return Ok(Self::Zero {
                host: (host != 0).then_some(host),
            });
        }
        if host == 0 {
            return Ok(Self::Unallocated);
        }
        Ok(Self::Data {
            host,
            copied: entry & COPIED != 0,
        })
    }

    /// Host clusters this mapping holds a reference to (first cluster, count).
    pub fn host_clusters(&self, cluster_bits: u32) -> Option<(u64, u64)> {
        match *self {
            Self::Unallocated | Self::Zero { host: None } => None,
            Self::Zero { host: Some(h) } | Self::Data { host: h, .. } => {
                Some((h >> cluster_bits, 1))
            }
            Self::Compressed { host, len } => {
                let first = host >> cluster_bits;
                let last = (host + len - 1) >> cluster_bits;
                Some((first, last - first + 1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_kind_of_entry() {
        let cb = 16;
        assert_eq!(
            ClusterMapping::decode(0, cb, 3),
            Ok(ClusterMapping::Unallocated)
        );
        assert_eq!(
            ClusterMapping::decode(ZERO, cb, 3),
            Ok(ClusterMapping::Zero { host: None })
        );
        assert_eq!(
            ClusterMapping::decode(COPIED | 0x30000, cb, 3),
            Ok(ClusterMapping::Data {
                host: 0x30000,
                copied: true
            })
        );
        assert!(ClusterMapping::decode(0x30200, cb, 3).is_err());
        // compressed: offset bits = 62 - 8 = 54; 3 additional sectors
        let entry = COMPRESSED | (3u64 << 54) | 0x12345;
        assert_eq!(
            ClusterMapping::decode(entry, cb, 3),
            Ok(ClusterMapping::Compressed {
                host: 0x12345,
                len: 4 * 512 - 0x145
            })
        );
    }
}
