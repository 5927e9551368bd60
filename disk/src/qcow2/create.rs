//! Creating empty qcow2 v3 images: header, refcount table and blocks, an empty L1 table,
//! optionally a backing file (with the backing-format extension). 16-bit refcounts.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::header::{self, Extension, Header};
use super::io::ImageFile;
use super::refcount;
use crate::block::BlockError;
use crate::open::ImageFormat;

const REFCOUNT_ORDER: u32 = 4;

/// The backing file a new image starts from.
#[derive(Debug, Clone)]
pub struct BackingSpec {
    /// Name stored in the header (relative names resolve against the new image's folder).
    pub name: String,
    /// Format stored in the backing-format extension.
    pub format: ImageFormat,
}

/// Parameters of a new image.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Guest-visible size in bytes.
    pub size: u64,
    /// log2 of the cluster size (12..=21 for 4 KiB..2 MiB; 16 is the usual 64 KiB).
    pub cluster_bits: u32,
    /// Backing file, if the image is an overlay.
    pub backing: Option<BackingSpec>,
}

impl CreateOptions {
    /// A standalone image of `size` bytes with 64 KiB clusters.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            cluster_bits: 16,
            backing: None,
        }
    }
}

/// Why an image could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Invalid parameters
    #[error("cannot create {path}: {reason}")]
    Invalid {
        /// The image to create.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file could not be written
    #[error("cannot create {path}: {source}")]
    Io {
        /// The image to create.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing the metadata failed
    #[error(transparent)]
    Write(#[from] BlockError),
}

/// Creates a new, empty qcow2 v3 image at `path` (which must not exist).
pub fn create(path: &Path, options: &CreateOptions) -> Result<(), CreateError> {
    let invalid = |reason: String| CreateError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if !(9..=21).contains(&options.cluster_bits) {
        return Err(invalid(format!(
            "cluster size 2^{} is outside 512 B..2 MiB",
            options.cluster_bits
        )));
    }
    let cs = 1u64 << options.cluster_bits;
    let l1_size = options.size.div_ceil(cs / 8 * cs);
    if l1_size > header::MAX_L1_ENTRIES {
        return Err(invalid(format!(
            "size {} is too large for this cluster size",
            options.size
        )));
    }
    let layout = Layout::compute(l1_size, options.cluster_bits);
    let mut header = Header {
        version: 3,
        cluster_bits: options.cluster_bits,
        size: options.size,
        l1_size: l1_size as u32,
        l1_table_offset: layout.l1_cluster * cs,
        refcount_table_offset: cs,
        refcount_table_clusters: layout.table_clusters as u32,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible: 0,
        compatible: 0,
        autoclear: 0,
        refcount_order: REFCOUNT_ORDER,
        extensions: Vec::new(),
        backing_file: None,
    };
    if let Some(backing) = &options.backing {
        let format = super::image::format_name(backing.format);
        header.extensions.push(Extension {
            kind: header::EXT_BACKING_FORMAT,
            data: format.as_bytes().to_vec(),
        });
        header.backing_file = Some(backing.name.clone());
    }
    let header_bytes = header.to_bytes().map_err(|e| invalid(e.to_string()))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| CreateError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let file = ImageFile::new(file, path);
    layout.write(&file, cs)?;
    file.write_all(&header_bytes, 0)?;
    file.sync()?;
    Ok(())
}

/// Where the metadata of a new image goes: header, refcount table, refcount blocks, L1.
struct Layout {
    table_clusters: u64,
    block_clusters: u64,
    l1_cluster: u64,
    total_clusters: u64,
}

impl Layout {
    fn compute(l1_size: u64, cluster_bits: u32) -> Self {
        let cs = 1u64 << cluster_bits;
        let per_block = (cs * 8) >> REFCOUNT_ORDER;
        let l1_clusters = (l1_size * 8).div_ceil(cs).max(1);
        let (mut table_clusters, mut block_clusters) = (1, 1);
        loop {
            let total = 1 + table_clusters + block_clusters + l1_clusters;
            let blocks = total.div_ceil(per_block);
            let tables = (blocks * 8).div_ceil(cs);
            if blocks == block_clusters && tables == table_clusters {
                return Self {
                    table_clusters,
                    block_clusters,
                    l1_cluster: 1 + table_clusters + block_clusters,
                    total_clusters: total,
                };
            }
            (table_clusters, block_clusters) = (tables, blocks);
        }
    }

    /// Writes the refcount table and blocks (every metadata cluster counted once) and sizes
    /// the file to cover the zeroed L1 table.
    fn write(&self, file: &ImageFile, cs: u64) -> Result<(), BlockError> {
        let per_block = (cs * 8) >> REFCOUNT_ORDER;
        let first_block = 1 + self.table_clusters;
        let mut table = vec![0u8; (self.table_clusters * cs) as usize];
        for b in 0..self.block_clusters {
            let offset = (first_block + b) * cs;
            table[(b * 8) as usize..(b * 8 + 8) as usize].copy_from_slice(&offset.to_be_bytes());
            let mut block = vec![0u8; cs as usize];
            let covered = b * per_block..((b + 1) * per_block).min(self.total_clusters);
            for cluster in covered.clone() {
                refcount::set_entry(&mut block, cluster - covered.start, REFCOUNT_ORDER, 1);
            }
            file.write_all(&block, offset)?;
        }
        file.write_all(&table, cs)?;
        file.set_len(self.total_clusters * cs)
    }
}
