//! Growing a closed disk image of either format to a new guest size (ReconfigVM's
//! capacityInKB going up): a raw file is extended with a hole, a qcow2 image's header and L1
//! table move (`Qcow2Image::grow`). Disks never shrink.

use std::path::{Path, PathBuf};

use crate::open::{ImageFormat, OpenError};
use crate::qcow2::{Qcow2GrowError, Qcow2Image, Qcow2Options};

/// Why an image could not grow.
#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    /// The image could not be opened for writing.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The qcow2 image refused.
    #[error("{path}: {source}")]
    Qcow2 {
        /// The image.
        path: PathBuf,
        /// Why.
        source: Qcow2GrowError,
    },
    /// The raw file is larger than the size asked for.
    #[error("{path}: {size} bytes is smaller than the disk's {current}: disks never shrink")]
    Shrink {
        /// The image.
        path: PathBuf,
        /// Asked for.
        size: u64,
        /// The disk's size.
        current: u64,
    },
    /// Extending the raw file failed.
    #[error("cannot extend {path}: {source}")]
    Io {
        /// The image.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Grows the image at `path` (of `format`, pinned by the caller) to `size` bytes.
pub fn grow_image(path: &Path, format: ImageFormat, size: u64) -> Result<(), GrowError> {
    match format {
        ImageFormat::Raw => grow_raw(path, size),
        ImageFormat::Qcow2 => {
            let options = Qcow2Options::default();
            let mut image = Qcow2Image::open(path, &options).map_err(OpenError::from)?;
            let qcow2 = |source| GrowError::Qcow2 {
                path: path.to_owned(),
                source,
            };
            image.grow(size).map_err(qcow2)?;
            image.close().map_err(|e| qcow2(Qcow2GrowError::Write(e)))
        }
    }
}

fn grow_raw(path: &Path, size: u64) -> Result<(), GrowError> {
    let io = |source| GrowError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| OpenError::Io {
            path: path.to_owned(),
            source,
        })?;
    let current = file.metadata().map_err(io)?.len();
    if size < current {
        return Err(GrowError::Shrink {
            path: path.to_owned(),
            size,
            current,
        });
    }
    file.set_len(size).map_err(io)?;
    file.sync_all().map_err(io)
}
