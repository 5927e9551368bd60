//! Deleting a folder of large files (a saved state's memory file) without stalling the
//! datastore: ext4 frees a file's blocks under one journal handle when its last link and user
//! go, and every fsync on the file system waits for that handle — 160–180 ms for a 768 MiB
//! memory file here, which a revert or a suspend that syncs its journal meanwhile waits out.
//! Truncating it from the end in steps keeps each handle, and so each such wait, short.
//!
//! Only for files nothing maps any more: a VMM mapping one would fault on the truncated pages.
//! A folder a running VMM may map is set aside (renamed) at once and handed to that VMM's
//! [`AfterExit`], which deletes it once the VMM has exited.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Bytes freed per step (one journal handle; a few milliseconds here).
const STEP_BYTES: u64 = 8 << 20;
/// Pause between steps, so that the file system's other writers get their commits through.
const PAUSE: Duration = Duration::from_millis(2);

/// What marks a folder's name once it is set aside.
const SET_ASIDE: &str = ".discarded-";

/// The saved state's memory file a VMM maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Maps {
    /// None: it booted.
    Nothing,
    /// The memory file it was restored from, known by its inode: its folder may be renamed
    /// later, and other folders may link the same file (a suspended state that a revert made
    /// from a snapshot shares that snapshot's).
    File {
        /// The file system's device.
        device: u64,
        /// The inode on it.
        inode: u64,
    },
    /// Not known (a VMM adopted from an earlier vireod, or a file that could not be looked
    /// at): any.
    Unknown,
}

impl Maps {
    /// What a VMM restored from the memory file at `path` maps.
    pub fn file(path: &Path) -> Maps {
        match std::fs::symlink_metadata(path) {
            Ok(metadata) => Maps::File {
                device: metadata.dev(),
                inode: metadata.ino(),
            },
            Err(_) => Maps::Unknown,
        }
    }
}

/// The folders to delete once a VMM has exited (it may map a file in them until then).
#[derive(Debug)]
pub struct AfterExit {
    maps: Maps,
    folders: Mutex<Vec<PathBuf>>,
}

impl AfterExit {
    /// Nothing to delete yet, for a VMM that maps `maps`.
    pub fn new(maps: Maps) -> AfterExit {
        AfterExit {
            maps,
            folders: Mutex::new(Vec::new()),
        }
    }

    /// Whether the VMM may map a file in `folder` (one that cannot be listed may).
    pub fn may_map(&self, folder: &Path) -> bool {
        match self.maps {
            Maps::Nothing => false,
            Maps::File { device, inode } => std::fs::read_dir(folder).map_or(true, |entries| {
                entries.filter_map(Result::ok).any(|entry| {
                    entry
                        .metadata()
                        .map_or(true, |m| m.dev() == device && m.ino() == inode)
                })
            }),
            Maps::Unknown => true,
        }
    }

    /// Has `folder` deleted once the VMM has exited.
    pub fn delete_later(&self, folder: PathBuf) {
        crate::locks::lock(&self.folders).push(folder);
    }

    /// Deletes the folders handed over (the VMM has exited).
    pub fn run(&self) {
        let folders = std::mem::take(&mut *crate::locks::lock(&self.folders));
        for folder in folders {
            remove_dir(&folder);
        }
    }
}

/// Moves `folder` aside as `<folder>.discarded-<µs>` (one rename, so that a new folder of its
/// name can be made at once); returns where it went.
pub fn set_aside(folder: &Path) -> std::io::Result<PathBuf> {
    let mut name = folder.file_name().unwrap_or_default().to_os_string();
    name.push(format!("{SET_ASIDE}{}", crate::inventory::now_micros()));
    let aside = folder.with_file_name(name);
    std::fs::rename(folder, &aside)?;
    Ok(aside)
}

/// [`set_aside`], or when `folder` cannot be moved, removes it now (a plain unlink: the blocks
/// of a file something maps are freed when it unmaps it); returns where it went.
pub fn set_aside_or_remove(folder: &Path) -> Option<PathBuf> {
    match set_aside(folder) {
        Ok(aside) => Some(aside),
        Err(error) => {
            tracing::warn!(folder = %folder.display(), "cannot set aside: {error}");
            let _ = std::fs::remove_dir_all(folder);
            None
        }
    }
}

/// Deletes `folder` ([`remove_dir`]) on a thread of its own, or now when none starts.
pub fn remove_in_background(folder: PathBuf) {
    let doomed = folder.clone();
    let spawned = std::thread::Builder::new()
        .name("paced-delete".into())
        .spawn(move || remove_dir(&doomed));
    if spawned.is_err() {
        remove_dir(&folder);
    }
}

/// Whether `name` is that of a folder [`set_aside`] made.
pub fn is_set_aside(name: &str) -> bool {
    name.contains(SET_ASIDE)
}

/// Deletes `dir` and the files in it, the large ones step by step; failures are logged.
pub fn remove_dir(dir: &Path) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => return tracing::warn!(dir = %dir.display(), "cannot list: {error}"),
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
            _ => {
                shrink(&path);
                std::fs::remove_file(&path)
            }
        };
        if let Err(error) = removed {
            tracing::warn!(file = %path.display(), "cannot remove: {error}");
        }
    }
    if let Err(error) = std::fs::remove_dir(dir) {
        tracing::warn!(dir = %dir.display(), "cannot remove: {error}");
    }
}

/// Truncates the regular file at `path` to nothing, [`STEP_BYTES`] at a time. A file with
/// other links (a snapshot's memory file hard-linked into a suspended state) keeps its blocks,
/// and a symbolic link is never followed: both are only unlinked by the caller.
fn shrink(path: &Path) {
    let Some(file) = only_link(path) else {
        return;
    };
    let Ok(mut size) = file.metadata().map(|m| m.len()) else {
        return;
    };
    while size > 0 {
        size = size.saturating_sub(STEP_BYTES);
        if let Err(error) = file.set_len(size) {
            return tracing::debug!(file = %path.display(), "cannot truncate: {error}");
        }
        if size > 0 {
            std::thread::sleep(PAUSE);
        }
    }
}

/// The file at `path` opened for writing when it is a regular file with no other link.
fn only_link(path: &Path) -> Option<File> {
    // Not even opened unless it is one (a FIFO or a device could block or act on open).
    if !std::fs::symlink_metadata(path).ok()?.is_file() {
        return None;
    }
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let metadata = file.metadata().ok()?;
    (metadata.is_file() && metadata.nlink() == 1).then_some(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vireo-paced-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("set-aside")).unwrap();
        dir
    }

    fn file_of(path: &Path, len: u64) {
        let file = File::create(path).unwrap();
        file.write_all_at(b"saved", len - 5).unwrap();
    }

    #[test]
    fn the_folder_and_its_files_go() {
        let dir = scratch("all");
        let doomed = dir.join("set-aside");
        file_of(&doomed.join("vm.mem"), 3 * STEP_BYTES + 7);
        file_of(&doomed.join("vm.state"), 100);
        std::fs::create_dir(doomed.join("nested")).unwrap();
        remove_dir(&doomed);
        assert!(!doomed.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_linked_elsewhere_and_a_symlink_target_keep_their_bytes() {
        let dir = scratch("links");
        let doomed = dir.join("set-aside");
        // A snapshot's memory file, hard-linked into the set-aside state.
        let snapshot = dir.join("snapshot.mem");
        file_of(&snapshot, 2 * STEP_BYTES);
        std::fs::hard_link(&snapshot, doomed.join("vm.mem")).unwrap();
        // A file outside, which a hostile VMM pointed a link at.
        let outside = dir.join("outside");
        file_of(&outside, 4096);
        std::os::unix::fs::symlink(&outside, doomed.join("vm.state")).unwrap();
        remove_dir(&doomed);
        assert!(!doomed.exists());
        assert_eq!(std::fs::metadata(&snapshot).unwrap().len(), 2 * STEP_BYTES);
        assert_eq!(std::fs::metadata(&outside).unwrap().len(), 4096);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_is_shrunk_to_nothing_before_it_is_unlinked() {
        let dir = scratch("shrink");
        let path = dir.join("set-aside").join("vm.mem");
        file_of(&path, 2 * STEP_BYTES + 1);
        let kept = File::open(&path).unwrap();
        shrink(&path);
        assert_eq!(kept.metadata().unwrap().len(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_set_aside_waits_for_the_vmm_that_maps_it() {
        let dir = scratch("after-exit");
        let saved = dir.join("snapshot-3");
        std::fs::create_dir(&saved).unwrap();
        file_of(&saved.join("vm.mem"), STEP_BYTES + 1);
        let other = dir.join("snapshot-4");
        std::fs::create_dir(&other).unwrap();
        file_of(&other.join("vm.mem"), STEP_BYTES + 1);
        let vmm = AfterExit::new(Maps::file(&saved.join("vm.mem")));
        assert!(vmm.may_map(&saved) && !vmm.may_map(&other));
        assert!(AfterExit::new(Maps::Unknown).may_map(&saved));
        assert!(!AfterExit::new(Maps::Nothing).may_map(&saved));
        // A suspended state linking the mapped file maps it too, whatever its name.
        let suspended = dir.join("suspend");
        std::fs::create_dir(&suspended).unwrap();
        std::fs::hard_link(saved.join("vm.mem"), suspended.join("vm.mem")).unwrap();
        assert!(vmm.may_map(&suspended));
        assert_eq!(
            Maps::file(&dir.join("missing")),
            Maps::Unknown,
            "a file that cannot be looked at may be anything"
        );

        let aside = set_aside(&saved).unwrap();
        assert!(!saved.exists() && aside.join("vm.mem").exists());
        assert!(
            vmm.may_map(&aside),
            "the file is found under the folder's new name"
        );
        assert!(is_set_aside(&aside.file_name().unwrap().to_string_lossy()));
        assert!(!is_set_aside("snapshot-3"));
        vmm.delete_later(aside.clone());
        assert!(aside.exists(), "nothing goes before the VMM has exited");
        vmm.run();
        assert!(!aside.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
