//! Deleting a folder of large files (a resumed VM's set-aside memory file) without stalling the
//! datastore: ext4 frees a file's blocks under one journal handle when its last link and user
//! go, and every fsync on the file system waits for that handle — 160–180 ms for a 768 MiB
//! memory file here, which a revert or a suspend that syncs its journal meanwhile waits out.
//! Truncating it from the end in steps keeps each handle, and so each such wait, short.
//!
//! Only for files nothing maps any more: a VMM mapping one would fault on the truncated pages.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

/// Bytes freed per step (one journal handle; a few milliseconds here).
const STEP_BYTES: u64 = 8 << 20;
/// Pause between steps, so that the file system's other writers get their commits through.
const PAUSE: Duration = Duration::from_millis(2);

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
}
