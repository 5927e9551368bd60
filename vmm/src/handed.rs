//! The files vireod hands the VMM already open (`--file FD:PATH`: the layers of every disk
//! chain, CD-ROM media, the kernel and initrd, the serial logs, a saved VM's state and memory). vireod resolved each one beneath its datastore;
//! the VMM takes them at start ([`adopt`]) and from then on opens those paths from the
//! descriptors ([`open`]), and installs them as `vireo_disk`'s backing opener, so a qcow2
//! backing name is followed only to a file vireod resolved and handed over — never to a path
//! of the VMM's choosing. Each reattach of the disks after a snapshot operation comes with the
//! new chains' files (SCM_RIGHTS), which replace the set; a medium the VMM is told to insert
//! by path (inside its jail's view) joins it.

use std::fs::File;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use vireo_disk::backing::HandedFiles;
use vireo_vmm_protocol::HandedFd;

/// Why the handed files could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum HandedError {
    /// A descriptor named on the command line is not open.
    #[error("file descriptor {fd} for {path} is not open: {source}")]
    NotOpen {
        /// The descriptor.
        fd: i32,
        /// The path it stands for.
        path: std::path::PathBuf,
        /// Why.
        source: nix::Error,
    },
    /// A descriptor was named twice or is one of the standard streams.
    #[error("file descriptor {0} cannot be handed over (standard stream or named twice)")]
    Reserved(i32),
    /// The set was already taken.
    #[error("the handed files were already taken")]
    Twice,
    /// A request's descriptors do not match the paths it names.
    #[error("{paths} handed paths but {fds} descriptors were sent")]
    Count {
        /// Paths named.
        paths: usize,
        /// Descriptors received.
        fds: usize,
    },
    /// Descriptors were sent to a VMM started without handed files.
    #[error("this VMM was not started with handed files")]
    NotHanding,
}

static FILES: OnceLock<Arc<HandedFiles>> = OnceLock::new();

/// Takes ownership of the descriptors `files` name (closed on exec from now on) and makes
/// them the backing files every chain of this process opens from. Call once, at start; with
/// no files, chains open by path as before (a VMM run by hand).
pub fn adopt(files: &[HandedFd]) -> Result<(), HandedError> {
    if files.is_empty() {
        return Ok(());
    }
    let set = Arc::new(HandedFiles::default());
    let mut taken = std::collections::HashSet::new();
    for handed in files {
        if handed.fd <= 2 || !taken.insert(handed.fd) {
            return Err(HandedError::Reserved(handed.fd));
        }
        // SAFETY: only borrowed to ask whether it is open; ownership is taken below, once.
        let borrowed = unsafe { BorrowedFd::borrow_raw(handed.fd) };
        fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|source| {
            HandedError::NotOpen {
                fd: handed.fd,
                path: handed.path.clone(),
                source,
            }
        })?;
        // SAFETY: the descriptor is open (checked above), was inherited for this purpose and
        // is owned by nothing else in this process (each number is taken once).
        let owned = unsafe { OwnedFd::from_raw_fd(handed.fd) };
        set.insert(handed.path.clone(), File::from(owned));
    }
    vireo_disk::backing::confine(Box::new(set.clone()));
    FILES.set(set).map_err(|_| HandedError::Twice)
}

/// Makes the descriptors a control request carried, one per path of `paths`, the whole set
/// (they are the files as vireod resolved them now; the earlier ones are closed, so a layer
/// deleted since is not kept open).
pub fn take_sent(paths: &[PathBuf], fds: Vec<OwnedFd>) -> Result<(), HandedError> {
    if paths.len() != fds.len() {
        return Err(HandedError::Count {
            paths: paths.len(),
            fds: fds.len(),
        });
    }
    if paths.is_empty() {
        return Ok(());
    }
    let files = FILES.get().ok_or(HandedError::NotHanding)?;
    files.replace(paths.iter().cloned().zip(fds.into_iter().map(File::from)));
    Ok(())
}

/// Adds the descriptors a control request carried, one per path of `paths` (none: the
/// request names paths in the VMM's view only).
pub fn add_sent(paths: &[PathBuf], fds: Vec<OwnedFd>) -> Result<(), HandedError> {
    if fds.is_empty() {
        return Ok(());
    }
    if paths.len() != fds.len() {
        return Err(HandedError::Count {
            paths: paths.len(),
            fds: fds.len(),
        });
    }
    let files = FILES.get().ok_or(HandedError::NotHanding)?;
    for (path, fd) in paths.iter().zip(fds) {
        files.insert(path.clone(), File::from(fd));
    }
    Ok(())
}

/// The handed file at `path`, taken out of the set (so that it never serves as a backing
/// file and closes with its user): the serial logs, a saved VM's state and memory files.
pub fn take(path: &Path) -> Option<File> {
    FILES.get().and_then(|files| files.take(path))
}

/// The handed file at `path` ([`take`]), else opened by path for reading (a VMM run by hand).
pub fn open_once(path: &Path) -> std::io::Result<File> {
    take(path).map_or_else(|| File::open(path), Ok)
}

/// The file at `path`: the handed one (taken out of the set when opened for writing, so that
/// the image's writer lock ends when the VMM closes it; a descriptor of it otherwise), else
/// opened by path (read, and write unless `read_only`); a medium opened by path joins the
/// handed set when there is one.
pub fn open(path: &Path, read_only: bool) -> std::io::Result<File> {
    if let Some(files) = FILES.get() {
        let handed = match read_only {
            true => files.get(path)?,
            false => files.take(path),
        };
        if let Some(file) = handed {
            return Ok(file);
        }
    }
    let file = File::options().read(true).write(!read_only).open(path)?;
    if let Some(files) = FILES.get().filter(|_| read_only) {
        files.insert(path.to_owned(), file.try_clone()?);
    }
    Ok(file)
}
