//! Opening a disk image: which formats there are (`ImageFormat`), telling them apart by magic
//! (`probe_format`), and `open_disk`, the factory over the formats. The formats use its error
//! and, for a qcow2 image's backing file (which may be of any format), its probe.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::block::BlockDevice;
use crate::qcow2::{Qcow2Image, Qcow2OpenError, Qcow2Options};
use crate::raw::RawDisk;

/// Why a disk image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be opened or read
    #[error("cannot open {path}: {source}")]
    Io {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The qcow2 image was refused
    #[error(transparent)]
    Qcow2(#[from] Qcow2OpenError),
}

/// The on-disk formats `open_disk` recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// A flat file holding the disk's bytes.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
}

impl ImageFormat {
    /// The format's name (`raw`, `qcow2`), as qemu-img and the `.vmx` write it.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }

    /// The format a name means.
    pub fn from_name(name: &str) -> Option<ImageFormat> {
        match name.trim() {
            n if n.eq_ignore_ascii_case("raw") => Some(ImageFormat::Raw),
            n if n.eq_ignore_ascii_case("qcow2") => Some(ImageFormat::Qcow2),
            _ => None,
        }
    }
}

/// Opens the image file at `path` for reading, and for writing unless `read_only`.
pub(crate) fn open_image_file(path: &Path, read_only: bool) -> Result<File, OpenError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(|source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Detects the format of the image at `path` by its magic bytes (anything not qcow2 is raw).
/// Only for images whose owner is trusted: a guest can write any magic into a raw disk.
pub fn probe_format(path: &Path) -> Result<ImageFormat, OpenError> {
    let file = File::open(path).map_err(|source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    probe_file(&file, path)
}

/// Detects the format of the open image `file` (found at `path`) by its magic bytes (read at
/// offset 0, whatever the file's position).
pub fn probe_file(file: &File, path: &Path) -> Result<ImageFormat, OpenError> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match file.read_at(&mut magic[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(OpenError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    if got == 4 && magic == crate::qcow2::header::MAGIC {
        Ok(ImageFormat::Qcow2)
    } else {
        Ok(ImageFormat::Raw)
    }
}

/// Opens a raw or qcow2 image (chosen by magic) with default options.
pub fn open_disk(path: &Path, read_only: bool) -> Result<Box<dyn BlockDevice>, OpenError> {
    open_disk_as(path, probe_format(path)?, read_only)
}

/// Opens the image at `path` as `format` (a raw disk is never probed: its first bytes are
/// the guest's).
pub fn open_disk_as(
    path: &Path,
    format: ImageFormat,
    read_only: bool,
) -> Result<Box<dyn BlockDevice>, OpenError> {
    match format {
        ImageFormat::Raw => Ok(Box::new(RawDisk::open(path, read_only)?)),
        ImageFormat::Qcow2 => {
            let options = Qcow2Options {
                read_only,
                ..Qcow2Options::default()
            };
            Ok(Box::new(Qcow2Image::open(path, &options)?))
        }
    }
}
