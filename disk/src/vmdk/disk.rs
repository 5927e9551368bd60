//! `VmdkDisk`: a VMDK opened read-only behind `BlockDevice` — a sparse file with its embedded
//! descriptor, or a text descriptor whose flat, sparse and zero extents make up the disk.
//! Extent names are resolved inside the descriptor's folder only (no absolute names, no `..`).

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use super::descriptor::{self, ExtentSource, MAX_DESCRIPTOR_BYTES};
use super::header::{MAGIC, MAX_CAPACITY_SECTORS, SECTOR};
use super::sparse::SparseExtent;
use crate::block::{check_range, BlockDevice, BlockError};

/// Why a VMDK could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum VmdkOpenError {
    /// A file could not be opened or read
    #[error("cannot open {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid VMDK
    #[error("malformed VMDK {path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A valid VMDK of a kind this reader does not handle
    #[error("unsupported VMDK {path}: {reason}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is unsupported.
        reason: String,
    },
    /// An extent names a file outside the descriptor's folder
    #[error("{path}: extent file {name:?} is not inside the descriptor's folder")]
    ExtentPath {
        /// The descriptor.
        path: PathBuf,
        /// The extent's name as written.
        name: String,
    },
}

/// Where one extent's bytes come from.
enum Backing {
    Flat {
        file: File,
        path: PathBuf,
        offset: u64,
    },
    Sparse(Box<SparseExtent>),
    Zero,
}

/// One extent placed in the disk.
struct Placed {
    start: u64,
    len: u64,
    backing: Backing,
}

/// A VMDK disk, read-only.
pub struct VmdkDisk {
    extents: Vec<Placed>,
    capacity: u64,
    create_type: String,
}

/// True when the file at `path` starts like a VMDK (sparse magic or descriptor signature).
pub fn is_vmdk(path: &Path) -> std::io::Result<bool> {
    let mut head = [0u8; 21];
    let n = File::open(path)?.read(&mut head)?;
    Ok(head[..n.min(4)] == MAGIC.to_le_bytes()
        || head[..n].starts_with(descriptor::SIGNATURE.as_bytes()))
}

impl VmdkDisk {
    /// Opens the VMDK at `path` (a sparse extent file or a descriptor file).
    pub fn open(path: &Path) -> Result<Self, VmdkOpenError> {
        let io = |source| VmdkOpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let mut magic = [0u8; 4];
        let sparse = file.read_exact_at(&mut magic, 0).is_ok() && magic == MAGIC.to_le_bytes();
        if sparse {
            return Self::open_monolithic(file, path);
        }
        let len = file.metadata().map_err(io)?.len();
        if len > MAX_DESCRIPTOR_BYTES {
            return Err(malformed(
                path,
                "neither a sparse extent nor a descriptor".into(),
            ));
        }
        let mut text = String::new();
        (&file).read_to_string(&mut text).map_err(io)?;
        let text = text.split('\0').next().unwrap_or_default();
        Self::open_descriptor(text, path)
    }

    /// The descriptor's `createType` (monolithicSparse, streamOptimized, monolithicFlat, ...).
    pub fn create_type(&self) -> &str {
        &self.create_type
    }

    /// Byte ranges that may hold data (stored grains, flat extents); the rest reads as zeros.
    pub fn data_ranges(&mut self) -> Result<Vec<Range<u64>>, BlockError> {
        let mut ranges = Vec::new();
        for extent in &mut self.extents {
            match &mut extent.backing {
                Backing::Zero => {}
                Backing::Flat { .. } => ranges.push(extent.start..extent.start + extent.len),
                Backing::Sparse(sparse) => ranges.extend(
                    sparse
                        .allocated()?
                        .into_iter()
                        .map(|r| extent.start + r.start..extent.start + r.end.min(extent.len)),
                ),
            }
        }
        Ok(ranges)
    }

    /// A sparse extent file on its own.
    fn open_monolithic(file: File, path: &Path) -> Result<Self, VmdkOpenError> {
        let sparse = SparseExtent::open(file, path)?;
        let create_type = match sparse.embedded_descriptor()? {
            Some(text) => {
                descriptor::parse(&text)
                    .map_err(|reason| unsupported(path, reason))?
                    .create_type
            }
            None => "monolithicSparse".to_string(),
        };
        let capacity = sparse.header().capacity * SECTOR;
        Ok(Self {
            extents: vec![Placed {
                start: 0,
                len: capacity,
                backing: Backing::Sparse(Box::new(sparse)),
            }],
            capacity,
            create_type,
        })
    }

    /// A descriptor file and the extents it lists.
    fn open_descriptor(text: &str, path: &Path) -> Result<Self, VmdkOpenError> {
        let parsed = descriptor::parse(text).map_err(|reason| unsupported(path, reason))?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let mut extents = Vec::new();
        let mut start = 0u64;
        for extent in parsed.extents {
            let len = extent.sectors.saturating_mul(SECTOR);
            let backing = match extent.source {
                ExtentSource::Zero => Backing::Zero,
                ExtentSource::Flat {
                    file,
                    offset_sectors,
                } => open_flat(path, folder, &file, offset_sectors, len)?,
                ExtentSource::Sparse { file } => {
                    let extent_path = extent_path(path, folder, &file)?;
                    let opened = File::open(&extent_path).map_err(|source| VmdkOpenError::Io {
                        path: extent_path.clone(),
                        source,
                    })?;
                    let sparse = SparseExtent::open(opened, &extent_path)?;
                    if sparse.header().capacity < extent.sectors {
                        return Err(malformed(
                            path,
                            format!("extent {file:?} is smaller than listed"),
                        ));
                    }
                    Backing::Sparse(Box::new(sparse))
                }
            };
            extents.push(Placed {
                start,
                len,
                backing,
            });
            start = start.saturating_add(len);
        }
        if start > MAX_CAPACITY_SECTORS * SECTOR {
            return Err(malformed(
                path,
                format!("capacity of {start} bytes is too large"),
            ));
        }
        Ok(Self {
            extents,
            capacity: start,
            create_type: parsed.create_type,
        })
    }
}

/// A flat extent: `len` bytes of `name` from sector `offset_sectors`, which must exist.
fn open_flat(
    descriptor: &Path,
    folder: &Path,
    name: &str,
    offset_sectors: u64,
    len: u64,
) -> Result<Backing, VmdkOpenError> {
    let path = extent_path(descriptor, folder, name)?;
    let io = |source| VmdkOpenError::Io {
        path: path.clone(),
        source,
    };
    let file = File::open(&path).map_err(io)?;
    let offset = offset_sectors.saturating_mul(SECTOR);
    let file_len = file.metadata().map_err(io)?.len();
    if offset.saturating_add(len) > file_len {
        return Err(malformed(
            descriptor,
            format!("flat extent {name:?} is shorter than the descriptor says"),
        ));
    }
    Ok(Backing::Flat { file, path, offset })
}

/// `name` inside `folder`, refusing names that could leave it.
fn extent_path(descriptor: &Path, folder: &Path, name: &str) -> Result<PathBuf, VmdkOpenError> {
    let relative = Path::new(name);
    let confined = !name.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !confined {
        return Err(VmdkOpenError::ExtentPath {
            path: descriptor.to_path_buf(),
            name: name.to_string(),
        });
    }
    Ok(folder.join(relative))
}

fn malformed(path: &Path, reason: String) -> VmdkOpenError {
    VmdkOpenError::Malformed {
        path: path.to_path_buf(),
        reason,
    }
}

fn unsupported(path: &Path, reason: String) -> VmdkOpenError {
    VmdkOpenError::Unsupported {
        path: path.to_path_buf(),
        reason,
    }
}

impl BlockDevice for VmdkDisk {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn is_read_only(&self) -> bool {
        true
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        check_range(offset, buf.len() as u64, self.capacity)?;
        let mut done = 0usize;
        for extent in &mut self.extents {
            let at = offset + done as u64;
            if done == buf.len() {
                break;
            }
            if at >= extent.start + extent.len {
                continue;
            }
            let within = at - extent.start;
            let n = ((extent.len - within) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            match &mut extent.backing {
                Backing::Zero => out.fill(0),
                Backing::Sparse(sparse) => sparse.read(out, within)?,
                Backing::Flat { file, path, offset } => file
                    .read_exact_at(out, *offset + within)
                    .map_err(|source| BlockError::Io {
                    path: path.clone(),
                    source,
                })?,
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&mut self, _buf: &[u8], _offset: u64) -> Result<(), BlockError> {
        Err(BlockError::ReadOnly)
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        Ok(())
    }

    fn discard(&mut self, _offset: u64, _len: u64) -> Result<(), BlockError> {
        Err(BlockError::ReadOnly)
    }

    fn write_zeroes(&mut self, _offset: u64, _len: u64) -> Result<(), BlockError> {
        Err(BlockError::ReadOnly)
    }
}
