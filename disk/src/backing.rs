//! How a qcow2 image's backing file is found: every backing-file lookup of this crate goes
//! through one [`BackingOpener`]. By default a name resolves as qemu-img resolves it (relative
//! to the image's folder, absolute as given), which suits an operator's own files (`vdisk`). A
//! process that opens images it does not trust (vireod: a client or a guest may have written
//! the header) installs a confined opener once with [`confine`]; from then on every chain any
//! part of this crate opens — trees, merges, CBT, sizes — resolves through it. A process
//! handed its images already open (the jailed VMM) installs [`HandedFiles`]: a chain then
//! opens from those files only, never by path.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Finds and opens backing files.
pub trait BackingOpener: Send + Sync {
    /// Opens, read-only, the backing file `name` that an image in folder `child_dir` names;
    /// returns it and its host path.
    fn open_backing(&self, child_dir: &Path, name: &str) -> io::Result<(File, PathBuf)>;
}

/// qemu-img's rule: relative to the image's folder, absolute names as given.
struct HostPaths;

impl BackingOpener for HostPaths {
    fn open_backing(&self, child_dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
        let path = child_dir.join(name);
        Ok((File::open(&path)?, path))
    }
}

static OPENER: OnceLock<Box<dyn BackingOpener>> = OnceLock::new();

/// Makes `opener` the one every later backing-file lookup of this process goes through.
/// Returns false (and changes nothing) when one was installed before.
pub fn confine(opener: Box<dyn BackingOpener>) -> bool {
    OPENER.set(opener).is_ok()
}

/// Image files already open, by the host path their opener resolved them at. As a backing
/// opener, a backing name is taken relative to the naming image's path (lexically: no
/// absolute names, no `..` above the root) and must be one of these paths; nothing is opened.
#[derive(Debug, Default)]
pub struct HandedFiles {
    files: Mutex<HashMap<PathBuf, File>>,
}

impl HandedFiles {
    /// Adds `file` as the image at `path` (replacing one recorded there before).
    pub fn insert(&self, path: PathBuf, file: File) {
        self.lock().insert(path, file);
    }

    /// Makes `files` the whole set (what was recorded before is closed).
    pub fn replace(&self, files: impl IntoIterator<Item = (PathBuf, File)>) {
        *self.lock() = files.into_iter().collect();
    }

    /// A descriptor of the file recorded at `path`, if any.
    pub fn get(&self, path: &Path) -> io::Result<Option<File>> {
        self.lock().get(path).map(File::try_clone).transpose()
    }

    /// The file recorded at `path`, taken out of the set (so that no copy of it outlives the
    /// taker's: a writer's lock on it ends when the taker closes it).
    pub fn take(&self, path: &Path) -> Option<File> {
        self.lock().remove(path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, File>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `dir` joined with the relative `name`, `.` and `..` taken lexically; `None` for an absolute
/// name or one that climbs above the root.
pub fn join_lexically(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut path = dir.to_path_buf();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir if path.parent().is_some() => {
                path.pop();
            }
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(path)
}

impl BackingOpener for Arc<HandedFiles> {
    fn open_backing(&self, child_dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
        let refused = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, why);
        let path = join_lexically(child_dir, name).ok_or_else(|| {
            refused(format!(
                "backing file '{name}' leaves the folders of the files handed over"
            ))
        })?;
        let file = self.get(&path)?.ok_or_else(|| {
            refused(format!(
                "backing file '{name}' ({}) is not among the files handed over",
                path.display()
            ))
        })?;
        Ok((file, path))
    }
}

/// The installed opener, or qemu-img's rule.
pub(crate) fn opener() -> &'static dyn BackingOpener {
    OPENER.get().map_or(&HostPaths, |o| o.as_ref())
}
