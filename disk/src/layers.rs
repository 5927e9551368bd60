//! The files of a backing chain, opened once: a process that resolves paths (vireod, through
//! its confined backing opener) opens every layer of a disk here and hands the open files to
//! one that must not open paths (the jailed VMM), which then opens the chain from them with
//! [`crate::backing::HandedFiles`].

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::open::{probe_file, ImageFormat, OpenError};
use crate::qcow2::Qcow2OpenError;

/// Longest chain walked (as deep as the qcow2 engine opens).
const MAX_LAYERS: usize = 128;

/// One layer of a chain as opened.
#[derive(Debug)]
pub struct ChainFile {
    /// The host path its opener resolved it at.
    pub path: PathBuf,
    /// The open file (the top layer as the caller opened it, backing layers read-only).
    pub file: File,
    /// Its format.
    pub format: ImageFormat,
}

/// Every layer of the chain whose top is open as `top` (found at `path`, of `format`), top
/// first, each backing file opened through the installed backing opener.
pub fn open_chain_files(
    top: File,
    path: &Path,
    format: ImageFormat,
) -> Result<Vec<ChainFile>, OpenError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OpenError::Io { path, source }
    };
    let mut seen = HashSet::new();
    let mut layers = vec![ChainFile {
        path: path.to_path_buf(),
        file: top,
        format,
    }];
    loop {
        let layer = layers.last().expect("the chain has its top");
        let id = crate::qcow2::file_id(&layer.file).map_err(io_err(&layer.path))?;
        if !seen.insert(id) || layers.len() > MAX_LAYERS {
            return Err(Qcow2OpenError::BackingLoop(layer.path.clone()).into());
        }
        if layer.format == ImageFormat::Raw {
            return Ok(layers);
        }
        let header_file = layer.file.try_clone().map_err(io_err(&layer.path))?;
        let Some((name, declared)) = crate::qcow2::backing_name(header_file, &layer.path)? else {
            return Ok(layers);
        };
        let folder = layer.path.parent().unwrap_or(Path::new("."));
        let named = crate::qcow2::resolve_backing(&layer.path, &name);
        let (file, backing) = crate::backing::opener()
            .open_backing(folder, &name)
            .map_err(|source| Qcow2OpenError::Backing {
                path: layer.path.clone(),
                backing: named.clone(),
                source: Box::new(OpenError::Io {
                    path: named,
                    source,
                }),
            })?;
        let format = match declared {
            Some(format) => format,
            None => probe_file(&file, &backing)?,
        };
        layers.push(ChainFile {
            path: backing,
            file,
            format,
        });
    }
}
