//! The open files vireod hands each `vireo-vmm`, so that the VMM opens nothing on a datastore
//! by path: every layer of each disk's chain (the top read-write unless the drive is
//! read-only, backing layers read-only), CD-ROM media, the kernel and initrd. Each file is
//! opened beneath its datastore's root (`beneath`, no symlinks), backing files through the
//! confined backing opener, and named by the host path read back from its descriptor; the
//! VMM gets the descriptors at start (`--file FD:PATH`) or with a control request
//! (SCM_RIGHTS) and follows qcow2 backing names only to these paths.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use vireo_disk::layers::open_chain_files;
use vireo_disk::open::{ImageFormat, OpenError};
use vireo_vmm_protocol::HandedFd;

use super::beneath::{self, Access};
use crate::inventory::esxi::DatastoreDir;

/// Why a file could not be opened for the VMM.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// The path is on no datastore.
    #[error("{0} is not on a datastore")]
    Outside(PathBuf),
    /// The file could not be opened beneath its datastore.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A layer of a disk's chain was refused.
    #[error(transparent)]
    Chain(#[from] OpenError),
}

/// The files one VMM is given, each with the host path it stands for.
#[derive(Debug, Default)]
pub struct Handoff {
    files: Vec<(PathBuf, File)>,
}

impl Handoff {
    /// Adds the file at `path` (a kernel, initrd, medium or saved state) opened for reading;
    /// returns the host path the VMM knows it by.
    pub fn add_file(
        &mut self,
        datastores: &[DatastoreDir],
        path: &Path,
    ) -> Result<PathBuf, HandoffError> {
        self.add_opened(datastores, path, Access::Read)
    }

    /// Adds the file at `path` opened with `access` (a log, a file a save writes); returns the
    /// host path the VMM knows it by.
    pub fn add_opened(
        &mut self,
        datastores: &[DatastoreDir],
        path: &Path,
        access: Access,
    ) -> Result<PathBuf, HandoffError> {
        let (file, host_path) = open_beneath(datastores, path, access)?;
        self.files.push((host_path.clone(), file));
        Ok(host_path)
    }

    /// Adds a file of the host's own that is no datastore's (the tools installer ISO), opened
    /// for reading; returns the host path the VMM knows it by.
    pub fn add_host_file(&mut self, path: &Path) -> Result<PathBuf, HandoffError> {
        let open_error = |source| HandoffError::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        let host_path = beneath::host_path(&file).map_err(open_error)?;
        self.files.push((host_path.clone(), file));
        Ok(host_path)
    }

    /// Adds every layer of the disk whose top is `path` (of `format`), the top writable
    /// unless `read_only`; returns the top's host path.
    pub fn add_chain(
        &mut self,
        datastores: &[DatastoreDir],
        path: &Path,
        format: ImageFormat,
        read_only: bool,
    ) -> Result<PathBuf, HandoffError> {
        let access = if read_only {
            Access::Read
        } else {
            Access::Modify
        };
        let (top, host_path) = open_beneath(datastores, path, access)?;
        for layer in open_chain_files(top, &host_path, format)? {
            self.files.push((layer.path, layer.file));
        }
        Ok(host_path)
    }

    /// The `--file` arguments that name these files by their descriptors here (inherited as
    /// they are by a VMM started with [`Handoff::fds`] kept open).
    pub fn args(&self) -> Vec<HandedFd> {
        self.files
            .iter()
            .map(|(path, file)| HandedFd {
                fd: file.as_raw_fd(),
                path: path.clone(),
            })
            .collect()
    }

    /// The descriptors, in order.
    pub fn fds(&self) -> Vec<RawFd> {
        self.files
            .iter()
            .map(|(_, file)| file.as_raw_fd())
            .collect()
    }

    /// The host paths, in the order of [`Handoff::fds`].
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|(path, _)| path.clone()).collect()
    }
}

/// Opens the host path `path` beneath the root of the datastore holding it (so that no symlink
/// is followed, whatever changed since the path was resolved); returns the file and the host
/// path read back from it.
fn open_beneath(
    datastores: &[DatastoreDir],
    path: &Path,
    access: Access,
) -> Result<(File, PathBuf), HandoffError> {
    let open_error = |source| HandoffError::Open {
        path: path.to_owned(),
        source,
    };
    let (root, inside) = datastores
        .iter()
        .filter_map(|d| std::fs::canonicalize(&d.dir).ok())
        .find_map(|root| {
            let inside = path.strip_prefix(&root).ok()?.to_owned();
            Some((root, inside))
        })
        .ok_or_else(|| HandoffError::Outside(path.to_owned()))?;
    let file = beneath::open(&root, &inside, access).map_err(open_error)?;
    let host_path = beneath::host_path(&file).map_err(open_error)?;
    Ok((file, host_path))
}
