//! Files for guest operations, done with the calling thread's identity (see `identity`): make,
//! delete, move and list directories and files, temporary names, attributes, and the chunks of
//! a file transfer (read at an offset; write creating the file at offset 0 and appending at
//! its end after that). Paths must be absolute; errors map to the protocol's fault kinds.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;

use super::wire::{ChunkResult, FileEntry, FileKind, FileList, GuestFault, GuestOpError};

/// Most entries one `list-files` answer holds (and the default).
pub const MAX_LIST_ENTRIES: u32 = 1000;
/// Attempts at a fresh temporary name.
const TEMP_ATTEMPTS: u32 = 100;

/// An I/O error on `path` as a guest-op failure.
pub fn io_fault(path: &str, error: std::io::Error) -> GuestOpError {
    let fault = match error.kind() {
        ErrorKind::NotFound => GuestFault::NotFound,
        ErrorKind::PermissionDenied => GuestFault::PermissionDenied,
        ErrorKind::AlreadyExists => GuestFault::AlreadyExists,
        ErrorKind::NotADirectory => GuestFault::NotADirectory,
        ErrorKind::IsADirectory => GuestFault::NotAFile,
        ErrorKind::DirectoryNotEmpty => GuestFault::DirectoryNotEmpty,
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge => {
            GuestFault::NoSpace
        }
        _ => GuestFault::Failed,
    };
    GuestOpError::new(fault, format!("{path}: {error}"))
}

fn bad(message: impl Into<String>) -> GuestOpError {
    GuestOpError::new(GuestFault::BadRequest, message)
}

/// `path`, which must be absolute.
pub fn absolute(path: &str) -> Result<&Path, GuestOpError> {
    if !path.starts_with('/') {
        return Err(bad(format!("{path:?} is not an absolute path")));
    }
    Ok(Path::new(path))
}

/// Metadata without following a final symlink.
fn lstat(path: &str) -> Result<fs::Metadata, GuestOpError> {
    fs::symlink_metadata(absolute(path)?).map_err(|e| io_fault(path, e))
}

/// MakeDirectoryInGuest.
pub fn make_directory(path: &str, parents: bool) -> Result<(), GuestOpError> {
    let dir = absolute(path)?;
    let made = if parents {
        fs::create_dir_all(dir)
    } else {
        fs::create_dir(dir)
    };
    made.map_err(|e| io_fault(path, e))
}

/// DeleteFileInGuest: a file or symlink, never a directory.
pub fn delete_file(path: &str) -> Result<(), GuestOpError> {
    if lstat(path)?.is_dir() {
        return Err(GuestOpError::new(
            GuestFault::NotAFile,
            format!("{path} is a directory"),
        ));
    }
    fs::remove_file(path).map_err(|e| io_fault(path, e))
}

/// DeleteDirectoryInGuest.
pub fn delete_directory(path: &str, recursive: bool) -> Result<(), GuestOpError> {
    if !lstat(path)?.is_dir() {
        return Err(GuestOpError::new(
            GuestFault::NotADirectory,
            format!("{path} is not a directory"),
        ));
    }
    let removed = if recursive {
        fs::remove_dir_all(path)
    } else {
        fs::remove_dir(path)
    };
    removed.map_err(|e| io_fault(path, e))
}

/// MoveFileInGuest: `from` must not be a directory; an existing `to` is replaced only with
/// `overwrite`.
pub fn move_file(from: &str, to: &str, overwrite: bool) -> Result<(), GuestOpError> {
    if lstat(from)?.is_dir() {
        return Err(GuestOpError::new(
            GuestFault::NotAFile,
            format!("{from} is a directory"),
        ));
    }
    rename(from, to, overwrite)
}

/// MoveDirectoryInGuest: `to` must not exist.
pub fn move_directory(from: &str, to: &str) -> Result<(), GuestOpError> {
    if !lstat(from)?.is_dir() {
        return Err(GuestOpError::new(
            GuestFault::NotADirectory,
            format!("{from} is not a directory"),
        ));
    }
    rename(from, to, false)
}

fn rename(from: &str, to: &str, overwrite: bool) -> Result<(), GuestOpError> {
    let target = absolute(to)?;
    if overwrite {
        if fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
            return Err(GuestOpError::new(
                GuestFault::NotAFile,
                format!("{to} is a directory"),
            ));
        }
        return fs::rename(from, target).map_err(|e| io_fault(to, e));
    }
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        absolute(from)?,
        nix::fcntl::AT_FDCWD,
        target,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|e| io_fault(to, std::io::Error::from(e)))
}

/// CreateTemporaryFile/DirectoryInGuest: a new, empty entry `dir/prefix<random>suffix`
/// (mode 0600 or 0700).
pub fn create_temporary(
    prefix: &str,
    suffix: &str,
    dir: Option<&str>,
    directory: bool,
) -> Result<String, GuestOpError> {
    let dir = dir.unwrap_or("/tmp");
    absolute(dir)?;
    if prefix.contains('/') || suffix.contains('/') {
        return Err(bad("a temporary name's prefix and suffix cannot hold '/'"));
    }
    for _ in 0..TEMP_ATTEMPTS {
        let path = format!(
            "{}/{prefix}{}{suffix}",
            dir.trim_end_matches('/'),
            random_name()
        );
        let made = if directory {
            fs::DirBuilder::new().mode(0o700).create(&path)
        } else {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map(drop)
        };
        match made {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_fault(dir, e)),
        }
    }
    Err(GuestOpError::new(
        GuestFault::Failed,
        "no free temporary name",
    ))
}

fn random_name() -> String {
    let mut bytes = [0u8; 6];
    let _ = fs::File::open("/dev/urandom").and_then(|f| f.read_exact_at(&mut bytes, 0));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A directory entry's or file's facts, named `name`.
fn entry(name: String, meta: &fs::Metadata, path: &Path) -> FileEntry {
    let kind = if meta.is_dir() {
        FileKind::Directory
    } else if meta.file_type().is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::File
    };
    FileEntry {
        name,
        kind,
        size: meta.len(),
        mtime: Some(meta.mtime()),
        atime: Some(meta.atime()),
        mode: Some(meta.mode() & 0o7777),
        uid: Some(meta.uid()),
        gid: Some(meta.gid()),
        target: (kind == FileKind::Symlink)
            .then(|| fs::read_link(path).ok())
            .flatten()
            .map(|t| t.to_string_lossy().into_owned()),
    }
}

/// The facts of the file at `path`.
pub fn stat(path: &str) -> Result<FileEntry, GuestOpError> {
    let meta = lstat(path)?;
    Ok(entry(path.to_string(), &meta, Path::new(path)))
}

/// ListFilesInGuest: a directory's entries sorted by name (`.` and `..` included, as ESXi
/// lists them), or one file; from `index`, at most `max`, names matching `pattern`.
pub fn list(
    path: &str,
    index: u32,
    max: u32,
    pattern: Option<&str>,
) -> Result<FileList, GuestOpError> {
    let meta = lstat(path)?;
    let dir = Path::new(path);
    let mut entries = Vec::new();
    if meta.is_dir() {
        entries.push(entry(".".into(), &meta, dir));
        if let Ok(parent) = fs::metadata(dir.join("..")) {
            entries.push(entry("..".into(), &parent, dir));
        }
        let mut names: Vec<String> = fs::read_dir(dir)
            .map_err(|e| io_fault(path, e))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let child = dir.join(&name);
            if let Ok(meta) = fs::symlink_metadata(&child) {
                entries.push(entry(name, &meta, &child));
            }
        }
    } else {
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        entries.push(entry(name, &meta, dir));
    }
    entries.retain(|e| pattern.is_none_or(|p| wildcard_match(p, &e.name)));
    let max = if max == 0 {
        MAX_LIST_ENTRIES
    } else {
        max.min(MAX_LIST_ENTRIES)
    };
    let total = entries.len() as u64;
    let files: Vec<FileEntry> = entries
        .into_iter()
        .skip(index as usize)
        .take(max as usize)
        .collect();
    let remaining = total.saturating_sub(u64::from(index) + files.len() as u64);
    Ok(FileList { files, remaining })
}

/// Whether `name` matches `pattern` (`*` any run, `?` one character; ESXi's matchPattern is a
/// Perl regular expression, of which these two cover the common `*.log` / `.*` uses: a
/// pattern `.*` matches everything).
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    if pattern == ".*" || pattern.is_empty() {
        return true;
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// ChangeFileAttributesInGuest: the given attributes, the others untouched.
pub fn change_attributes(
    path: &str,
    mode: Option<u32>,
    owner: (Option<u32>, Option<u32>),
    times: (Option<i64>, Option<i64>),
) -> Result<(), GuestOpError> {
    let target = absolute(path)?;
    let meta = fs::metadata(target).map_err(|e| io_fault(path, e))?;
    if let Some(mode) = mode {
        fs::set_permissions(target, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| io_fault(path, e))?;
    }
    if owner != (None, None) {
        std::os::unix::fs::chown(target, owner.0, owner.1).map_err(|e| io_fault(path, e))?;
    }
    if times != (None, None) {
        let (mtime, atime) = times;
        let at = |secs: Option<i64>, current: i64| {
            nix::sys::time::TimeSpec::new(secs.unwrap_or(current), 0)
        };
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            target,
            &at(atime, meta.atime()),
            &at(mtime, meta.mtime()),
            nix::sys::stat::UtimensatFlags::FollowSymlink,
        )
        .map_err(|e| io_fault(path, std::io::Error::from(e)))?;
    }
    Ok(())
}

/// One chunk of a download: up to `length` bytes at `offset` of a regular file.
pub fn read_chunk(path: &str, offset: u64, length: u32) -> Result<ChunkResult, GuestOpError> {
    let file = fs::File::open(absolute(path)?).map_err(|e| io_fault(path, e))?;
    let meta = file.metadata().map_err(|e| io_fault(path, e))?;
    if !meta.is_file() {
        return Err(GuestOpError::new(
            GuestFault::NotAFile,
            format!("{path} is not a file"),
        ));
    }
    let want = meta.len().saturating_sub(offset).min(u64::from(length)) as usize;
    let mut buffer = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_fault(path, e)),
        }
    }
    buffer.truncate(filled);
    Ok(ChunkResult {
        data: base64::engine::general_purpose::STANDARD.encode(&buffer),
        size: meta.len(),
    })
}

/// One chunk of an upload: offset 0 creates the file (mode 0644 less the umask; an existing
/// one is replaced only with `overwrite`), later chunks must start at the file's end.
pub fn write_chunk(
    path: &str,
    offset: u64,
    data: &str,
    overwrite: bool,
) -> Result<(), GuestOpError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| bad("a chunk's data is not base64"))?;
    let target = absolute(path)?;
    let mut options = OpenOptions::new();
    options.write(true).custom_flags(libc::O_NOFOLLOW);
    match (offset, overwrite) {
        (0, true) => options.create(true).truncate(true),
        (0, false) => options.create_new(true),
        _ => &mut options,
    };
    let file = options.open(target).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => {
            GuestOpError::new(GuestFault::NotAFile, format!("{path} is a symlink"))
        }
        _ => io_fault(path, e),
    })?;
    let size = file.metadata().map_err(|e| io_fault(path, e))?.len();
    if size != offset {
        return Err(bad(format!("{path} holds {size} bytes, not {offset}")));
    }
    file.write_all_at(&bytes, offset)
        .map_err(|e| io_fault(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_shell_globs() {
        assert!(wildcard_match("*.log", "boot.log"));
        assert!(!wildcard_match("*.log", "boot.log.1"));
        assert!(wildcard_match("a?c*", "abcdef"));
        assert!(wildcard_match(".*", "anything"));
        assert!(!wildcard_match("x*", "abc"));
    }
}
