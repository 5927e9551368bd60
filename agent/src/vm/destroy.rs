//! What Destroy_Task deletes: the files the VM owns — its `.vmx`, `.vmsd`, each disk's layers
//! down to its base file (never the parent disks a linked clone is built on) and their tree
//! sidecars, snapshot and suspend state, logs, screenshots — at the host paths the datastore
//! resolver gave (a path that crosses a symlink is left alone), then its folder if nothing
//! else is left in it. Nothing is removed recursively.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vireo_disk::tree::SIDECAR_SUFFIX;

use super::logs::{self, SERIAL_LOG, VMM_LOG};
use super::snapshots::live::SAVED_FILES;
use super::snapshots::{memory_dir, vmsd_path};
use super::{Vm, VmState};

/// The files and folders (removed after the files in them) the VM owns, as host paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnedFiles {
    files: Vec<PathBuf>,
    folders: Vec<PathBuf>,
}

/// Lists what the VM owns; `bases` are its disks' base files (resolved).
pub fn owned_files(vm: &Vm, state: &VmState, bases: &[PathBuf]) -> OwnedFiles {
    let mut files = vec![vm.vmx_file.clone(), vmsd_path(vm)];
    for (base, view) in bases.iter().zip(&state.disk_views) {
        let chains = std::iter::once(&view.active).chain(view.snapshots.values());
        for chain in chains {
            // The chain runs top layer first down to the base, then the parents below it.
            let own = chain
                .chain
                .iter()
                .position(|p| p == base)
                .map_or(0, |i| i + 1);
            files.extend(chain.chain[..own].iter().cloned());
        }
        files.push(base.clone());
        let mut sidecar = base.as_os_str().to_owned();
        sidecar.push(SIDECAR_SUFFIX);
        files.push(sidecar.into());
    }
    let mut folders = Vec::new();
    let uids = state.snapshots.snapshots.iter().map(|s| s.uid);
    for dir in uids
        .map(|uid| memory_dir(vm, uid))
        .chain([vm.suspend_dir()])
    {
        files.extend(SAVED_FILES.iter().map(|f| dir.join(f)));
        folders.push(dir);
    }
    files.extend([VMM_LOG, SERIAL_LOG].map(|f| vm.file(f)));
    files.extend(logs::rotations(vm));
    files.extend(screenshots(vm));
    files.sort();
    files.dedup();
    folders.push(vm.dir.clone());
    OwnedFiles { files, folders }
}

/// `<stem>-N.png` in the VM folder (CreateScreenshot's files).
fn screenshots(vm: &Vm) -> Vec<PathBuf> {
    let stem = vm
        .vmx_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_screenshot = |name: &str| {
        name.strip_prefix(&stem)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix(".png"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    std::fs::read_dir(&vm.dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_str().is_some_and(is_screenshot))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

impl OwnedFiles {
    /// Whether every file and folder is inside `dir` (no `..` on the way): a deletion found in
    /// a journal on a datastore is finished only then.
    pub fn all_within(&self, dir: &Path) -> bool {
        self.files
            .iter()
            .chain(&self.folders)
            .all(|path| super::recovery::confined(path, dir))
    }

    /// Adds `file`, removed after every other one (the task journal of the deletion).
    pub fn and_last(mut self, file: PathBuf) -> OwnedFiles {
        self.files.push(file);
        self
    }

    /// Deletes the files (a missing one is fine; a symlink or a non-file is left alone),
    /// then each folder if it is empty. Returns the folders that had to stay.
    pub fn remove(&self) -> Vec<PathBuf> {
        for file in &self.files {
            remove_file(file);
        }
        self.folders
            .iter()
            .filter(|dir| match std::fs::remove_dir(dir) {
                Ok(()) => false,
                Err(e) => e.kind() != std::io::ErrorKind::NotFound,
            })
            .cloned()
            .collect()
    }
}

/// Whether `path` (absolute) crosses no symlink on its way.
fn direct(path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|c| c == path)
}

fn remove_file(file: &Path) {
    match std::fs::symlink_metadata(file) {
        Ok(meta) if meta.is_file() && file.parent().is_some_and(direct) => {
            if let Err(error) = std::fs::remove_file(file) {
                tracing::warn!(file = %file.display(), "cannot delete: {error}");
            }
        }
        Ok(_) => tracing::warn!(file = %file.display(), "not a plain file: left in place"),
        Err(_) => {}
    }
}
