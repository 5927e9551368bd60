//! Files and folders of a datastore as FileManager and `/folder` change them: make a folder,
//! delete, move and copy (whole trees), and new files written under a temporary name then
//! renamed into place. Every entry is reached through the datastore resolver: its folder is
//! opened beneath the datastore's root (`vm::beneath`: no `..`, no absolute path, no symlink)
//! and the entry itself is then only ever named relative to that folder's descriptor, one
//! component at a time, never following a symlink.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat2, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::inventory::esxi::DatastoreDir;
use crate::vm::beneath::Access;
use crate::vm::datastore_path::{DatastorePath, DatastorePathError};

/// Why a datastore file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path is malformed, leaves its datastore, names no datastore or crosses a symlink.
    #[error(transparent)]
    Path(#[from] DatastorePathError),
    /// The path names the datastore itself, which is not a file.
    #[error("{0} names the datastore itself, not a file in it")]
    DatastoreRoot(String),
    /// Nothing is there.
    #[error("{0} does not exist")]
    NotFound(String),
    /// Something is there already.
    #[error("{0} already exists")]
    Exists(String),
    /// The entry is a symbolic link or a device, socket or pipe (never followed, copied,
    /// moved or written).
    #[error("{0} is a symbolic link or a special file")]
    Special(String),
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The datastore path acted on.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl FileError {
    fn io(path: &DatastorePath, errno: Errno) -> FileError {
        FileError::Io {
            path: path.to_string(),
            source: std::io::Error::from(errno),
        }
    }
}

/// The kind of an entry found in a datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A folder.
    Folder,
    /// A symbolic link (left alone: never followed).
    Symlink,
    /// A device, socket or pipe.
    Other,
}

impl EntryKind {
    fn of(stat: &FileStat) -> EntryKind {
        match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => EntryKind::File,
            SFlag::S_IFDIR => EntryKind::Folder,
            SFlag::S_IFLNK => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }
}

/// One entry of a datastore: its folder, opened beneath the datastore's root, and its own name
/// in that folder.
pub struct Entry {
    folder: File,
    name: CString,
    /// The entry's datastore path.
    pub path: DatastorePath,
}

impl Entry {
    /// The entry at `path`; its folder must exist (the entry itself need not).
    pub fn locate(datastores: &[DatastoreDir], path: &DatastorePath) -> Result<Entry, FileError> {
        let name = Path::new(&path.path)
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name),
                _ => None,
            })
            .next_back()
            .ok_or_else(|| FileError::DatastoreRoot(path.to_string()))?;
        let folder = path.parent().open(datastores, Access::Directory)?;
        Ok(Entry {
            folder,
            name: CString::new(name.as_bytes()).expect("path components hold no NUL"),
            path: path.clone(),
        })
    }

    /// Parses `[datastore] path` and locates it.
    pub fn parse(datastores: &[DatastoreDir], text: &str) -> Result<Entry, FileError> {
        Entry::locate(datastores, &DatastorePath::parse(text)?)
    }

    /// What is there (a symlink is reported as one, not followed); `None` when nothing is.
    pub fn kind(&self) -> Result<Option<EntryKind>, FileError> {
        match fstatat(
            &self.folder,
            self.name.as_c_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) => Ok(Some(EntryKind::of(&stat))),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(FileError::io(&self.path, errno)),
        }
    }

    /// What is there, or NotFound.
    fn existing_kind(&self) -> Result<EntryKind, FileError> {
        self.kind()?
            .ok_or_else(|| FileError::NotFound(self.path.to_string()))
    }

    /// A sibling entry in the same folder (for temporary names).
    fn sibling(&self, name: &str) -> Result<Entry, FileError> {
        Ok(Entry {
            folder: self.folder.try_clone().map_err(|source| FileError::Io {
                path: self.path.to_string(),
                source,
            })?,
            name: CString::new(name).expect("temporary names hold no NUL"),
            path: self.path.parent().join(name),
        })
    }
}

impl Entry {
    /// A host path naming `name` in this entry's folder through the open folder descriptor
    /// (`/proc/self/fd/N/name`: the folder cannot be swapped for another meanwhile), for
    /// libraries that open files by path. Valid while the entry lives.
    pub fn via_folder(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.folder.as_raw_fd())).join(name)
    }

    /// This entry's own path through the folder descriptor (see [`Entry::via_folder`]).
    pub fn via_fd(&self) -> PathBuf {
        self.via_folder(&self.name.to_string_lossy())
    }

    /// The host path of the entry, read from its opened folder (for comparing with the
    /// files VMs use).
    pub fn host_path(&self) -> Result<PathBuf, FileError> {
        let folder =
            crate::vm::beneath::host_path(&self.folder).map_err(|source| FileError::Io {
                path: self.path.to_string(),
                source,
            })?;
        Ok(folder.join(OsStr::from_bytes(self.name.as_bytes())))
    }

    /// Renames this entry (a finished temporary file or folder) to `target`, never replacing
    /// what is there (EEXIST, or ENOTEMPTY for a folder).
    fn rename_onto(&self, target: &Entry) -> nix::Result<()> {
        renameat2(
            &self.folder,
            self.name.as_c_str(),
            &target.folder,
            target.name.as_c_str(),
            RenameFlags::RENAME_NOREPLACE,
        )
    }

    /// Makes the new file at this entry with `build`, which writes it at the path it is given
    /// (a temporary name in the same folder); renames it into place once built. Nothing is
    /// left when `build` fails, and an entry that appeared meanwhile is not replaced.
    pub fn build_new<E: From<FileError>>(
        &self,
        build: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.kind()?.is_some() {
            return Err(FileError::Exists(self.path.to_string()).into());
        }
        let partial = self.sibling(&temporary_name(&self.name))?;
        let built = build(&partial.via_fd());
        let placed = built.and_then(|()| {
            partial.rename_onto(self).map_err(|errno| match errno {
                Errno::EEXIST => FileError::Exists(self.path.to_string()).into(),
                errno => FileError::io(&self.path, errno).into(),
            })
        });
        if placed.is_err() {
            let _ = unlinkat(
                &partial.folder,
                partial.name.as_c_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
        placed
    }
}

/// Makes the folder `path` (mode 0700); with `parents`, its missing parent folders too.
/// An existing folder at `path` is FileAlreadyExists, as on ESXi.
pub fn make_directory(
    datastores: &[DatastoreDir],
    path: &DatastorePath,
    parents: bool,
) -> Result<(), FileError> {
    if parents {
        let mut at = DatastorePath {
            datastore: path.datastore.clone(),
            path: String::new(),
        };
        let components: Vec<_> = Path::new(&path.path).components().collect();
        for component in &components[..components.len().saturating_sub(1)] {
            if let Component::Normal(name) = component {
                at = at.join(&name.to_string_lossy());
                let entry = Entry::locate(datastores, &at)?;
                match entry.kind()? {
                    None => make_folder(&entry)?,
                    Some(EntryKind::Folder) => {}
                    Some(_) => return Err(FileError::Exists(at.to_string())),
                }
            }
        }
    }
    let entry = Entry::locate(datastores, path).map_err(not_found_as_missing(path))?;
    make_folder(&entry)
}

/// A missing parent folder reported as NotFound of the path asked for.
fn not_found_as_missing(path: &DatastorePath) -> impl Fn(FileError) -> FileError + '_ {
    move |e| match e {
        FileError::Path(ref p) if p.is_not_found() => {
            FileError::NotFound(path.parent().to_string())
        }
        e => e,
    }
}

fn make_folder(entry: &Entry) -> Result<(), FileError> {
    match mkdirat(&entry.folder, entry.name.as_c_str(), Mode::S_IRWXU) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) => Err(FileError::Exists(entry.path.to_string())),
        Err(errno) => Err(FileError::io(&entry.path, errno)),
    }
}

/// Deletes the file or folder (with everything in it) at `path`; a symlink is removed
/// itself, never what it points to.
pub fn delete(datastores: &[DatastoreDir], path: &DatastorePath) -> Result<(), FileError> {
    let entry = Entry::locate(datastores, path).map_err(not_found_as_missing(path))?;
    let kind = entry.existing_kind()?;
    remove(&entry.folder, &entry.name, kind).map_err(|errno| FileError::io(path, errno))
}

/// Removes `name` in the folder `dir` (a folder with its content).
fn remove(dir: impl AsFd, name: &CStr, kind: EntryKind) -> Result<(), Errno> {
    if kind != EntryKind::Folder {
        return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    }
    let mut folder = open_folder(&dir, name)?;
    let children = list(&mut folder)?;
    for (child, stat) in children {
        remove(&folder, &child, EntryKind::of(&stat))?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

/// Opens the folder `name` in `dir` for listing (a symlink in its place is refused).
fn open_folder(dir: impl AsFd, name: &CStr) -> Result<Dir, Errno> {
    Dir::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The entries of a folder (without `.` and `..`), each as it is (symlinks not followed).
fn list(folder: &mut Dir) -> Result<Vec<(CString, FileStat)>, Errno> {
    let names: Vec<CString> = folder
        .iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    names
        .into_iter()
        .map(|name| {
            let stat = fstatat(&*folder, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
            Ok((name, stat))
        })
        .collect()
}

/// Moves `from` to `to` (files or whole folders, across datastores too); an existing `to` is
/// replaced only with `force`.
pub fn move_entry(
    datastores: &[DatastoreDir],
    from: &DatastorePath,
    to: &DatastorePath,
    force: bool,
) -> Result<(), FileError> {
    let (source, target, kind) = source_and_target(datastores, from, to, force)?;
    let moved = renameat2(
        &source.folder,
        source.name.as_c_str(),
        &target.folder,
        target.name.as_c_str(),
        RenameFlags::RENAME_NOREPLACE,
    );
    match moved {
        Ok(()) => Ok(()),
        Err(Errno::EXDEV) => {
            copy_into_place(&source, &target, kind)?;
            remove(&source.folder, &source.name, kind).map_err(|errno| FileError::io(from, errno))
        }
        Err(Errno::EEXIST | Errno::ENOTEMPTY) => Err(FileError::Exists(to.to_string())),
        Err(errno) => Err(FileError::io(from, errno)),
    }
}

/// Copies `from` to `to` (a file or a whole folder); an existing `to` is replaced only with
/// `force`. The copy is made under a temporary name and renamed into place when complete.
pub fn copy_entry(
    datastores: &[DatastoreDir],
    from: &DatastorePath,
    to: &DatastorePath,
    force: bool,
) -> Result<(), FileError> {
    let (source, target, kind) = source_and_target(datastores, from, to, force)?;
    copy_into_place(&source, &target, kind)
}

/// The file or folder at `from` (a symlink, device or socket is refused) and the entry at
/// `to`, made free (an existing one is deleted with `force`, refused without).
fn source_and_target(
    datastores: &[DatastoreDir],
    from: &DatastorePath,
    to: &DatastorePath,
    force: bool,
) -> Result<(Entry, Entry, EntryKind), FileError> {
    let source = Entry::locate(datastores, from).map_err(not_found_as_missing(from))?;
    let target = Entry::locate(datastores, to).map_err(not_found_as_missing(to))?;
    let kind = source.existing_kind()?;
    if !matches!(kind, EntryKind::File | EntryKind::Folder) {
        return Err(FileError::Special(from.to_string()));
    }
    clear_target(&target, force)?;
    Ok((source, target, kind))
}

/// Refuses an existing `target` unless `force`, in which case it is deleted.
fn clear_target(target: &Entry, force: bool) -> Result<(), FileError> {
    match target.kind()? {
        None => Ok(()),
        Some(_) if !force => Err(FileError::Exists(target.path.to_string())),
        Some(kind) => remove(&target.folder, &target.name, kind)
            .map_err(|errno| FileError::io(&target.path, errno)),
    }
}

/// Copies `source` to a temporary sibling of `target`, then renames it to `target`.
fn copy_into_place(source: &Entry, target: &Entry, kind: EntryKind) -> Result<(), FileError> {
    let partial = target.sibling(&temporary_name(&target.name))?;
    let copied = match kind {
        EntryKind::Folder => {
            copy_folder(&source.folder, &source.name, &partial.folder, &partial.name)
        }
        _ => copy_file(&source.folder, &source.name, &partial.folder, &partial.name),
    };
    let placed = copied.and_then(|()| partial.rename_onto(target));
    placed.map_err(|errno| {
        let _ = remove(&partial.folder, &partial.name, kind);
        match errno {
            Errno::EEXIST | Errno::ENOTEMPTY => FileError::Exists(target.path.to_string()),
            errno => FileError::io(&source.path, errno),
        }
    })
}

/// A name no other file in the folder has, for a file still being written: hidden, and
/// naming the file it becomes.
pub fn temporary_name(final_name: &CStr) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{}{PARTIAL_MARK}{}-{}",
        final_name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether `name` is a file still being written (see [`temporary_name`]).
pub fn is_partial(name: &str) -> bool {
    name.starts_with('.') && name.contains(PARTIAL_MARK)
}

/// What every temporary name holds.
const PARTIAL_MARK: &str = ".vireo-partial-";

fn copy_file(from_dir: impl AsFd, from: &CStr, to_dir: impl AsFd, to: &CStr) -> Result<(), Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    let mut source = File::from(openat(from_dir, from, flags, Mode::empty())?);
    let mut target = create_new(to_dir, to)?;
    std::io::copy(&mut source, &mut target).map_err(errno_of)?;
    target.sync_all().map_err(errno_of)
}

fn copy_folder(
    from_dir: impl AsFd,
    from: &CStr,
    to_dir: impl AsFd,
    to: &CStr,
) -> Result<(), Errno> {
    let mut source = open_folder(from_dir, from)?;
    mkdirat(&to_dir, to, Mode::S_IRWXU)?;
    let target = open_folder(&to_dir, to)?;
    for (name, stat) in list(&mut source)? {
        match EntryKind::of(&stat) {
            EntryKind::File => copy_file(&source, &name, &target, &name)?,
            EntryKind::Folder => copy_folder(&source, &name, &target, &name)?,
            // Links, devices and sockets are not datastore content: left behind.
            EntryKind::Symlink | EntryKind::Other => {}
        }
    }
    Ok(())
}

/// Creates the new file `name` in `dir` (mode 0600; never through a symlink, never over an
/// existing file).
pub fn create_new(dir: impl AsFd, name: &CStr) -> Result<File, Errno> {
    let flags = OFlag::O_WRONLY
        | OFlag::O_CREAT
        | OFlag::O_EXCL
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY;
    openat(dir, name, flags, Mode::S_IRUSR | Mode::S_IWUSR).map(File::from)
}

fn errno_of(error: std::io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(Errno::EIO as i32))
}

/// A new file being written in a datastore: under a temporary name until [`NewFile::commit`]
/// renames it over its final name; dropped uncommitted, the partial file is deleted.
pub struct NewFile {
    entry: Entry,
    partial: Option<Entry>,
    /// The open file being written.
    pub file: File,
}

impl NewFile {
    /// Starts writing a file to `path` (whose folder must exist). A folder or symlink at
    /// `path` is refused; an existing file will be replaced on commit.
    pub fn create(datastores: &[DatastoreDir], path: &DatastorePath) -> Result<NewFile, FileError> {
        let entry = Entry::locate(datastores, path).map_err(not_found_as_missing(path))?;
        match entry.kind()? {
            None | Some(EntryKind::File) => {}
            Some(EntryKind::Symlink) => return Err(FileError::Special(path.to_string())),
            Some(_) => return Err(FileError::Exists(path.to_string())),
        }
        let partial = entry.sibling(&temporary_name(&entry.name))?;
        let file = create_new(&partial.folder, &partial.name)
            .map_err(|errno| FileError::io(path, errno))?;
        Ok(NewFile {
            entry,
            partial: Some(partial),
            file,
        })
    }

    /// Syncs the file and renames it to its final name.
    pub fn commit(mut self) -> Result<(), FileError> {
        let path = &self.entry.path;
        self.file.sync_all().map_err(|source| FileError::Io {
            path: path.to_string(),
            source,
        })?;
        let partial = self.partial.take().expect("committed once");
        nix::fcntl::renameat(
            &partial.folder,
            partial.name.as_c_str(),
            &self.entry.folder,
            self.entry.name.as_c_str(),
        )
        .map_err(|errno| {
            let _ = unlinkat(
                &partial.folder,
                partial.name.as_c_str(),
                UnlinkatFlags::NoRemoveDir,
            );
            FileError::io(path, errno)
        })
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if let Some(partial) = &self.partial {
            let _ = unlinkat(
                &partial.folder,
                partial.name.as_c_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

/// The bytes free to an unprivileged writer on the file system holding `file`.
pub fn free_bytes(file: &File) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::fstatvfs(file).map_err(std::io::Error::from)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// A folder's entries (names and kinds, sorted by name), read through its descriptor.
pub fn read_folder(
    datastores: &[DatastoreDir],
    path: &DatastorePath,
) -> Result<Vec<(String, EntryKind, FileStat)>, FileError> {
    let folder = path.open(datastores, Access::Directory)?;
    let mut dir = open_folder(&folder, c".").map_err(|errno| FileError::io(path, errno))?;
    let mut entries: Vec<(String, EntryKind, FileStat)> = list(&mut dir)
        .map_err(|errno| FileError::io(path, errno))?
        .into_iter()
        .filter_map(|(name, stat)| {
            let name = OsStr::from_bytes(name.as_bytes()).to_str()?.to_string();
            Some((name, EntryKind::of(&stat), stat))
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// Whether `path` is a folder (the datastore's root is one; symlinks are not followed).
pub fn is_folder(datastores: &[DatastoreDir], path: &DatastorePath) -> bool {
    path.path.is_empty()
        || Entry::locate(datastores, path)
            .and_then(|e| e.kind())
            .is_ok_and(|k| k == Some(EntryKind::Folder))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A scratch datastore `ds` beside a canary folder outside it.
    struct Scratch {
        dir: PathBuf,
        datastores: Vec<DatastoreDir>,
    }

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("vireo-dsfiles-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("ds/vm")).unwrap();
            std::fs::create_dir_all(dir.join("outside")).unwrap();
            std::fs::write(dir.join("ds/vm/disk"), b"inside").unwrap();
            std::fs::write(dir.join("outside/canary"), b"outside").unwrap();
            let datastores = vec![DatastoreDir {
                name: "ds".into(),
                dir: dir.join("ds"),
            }];
            Scratch { dir, datastores }
        }

        fn at(&self, text: &str) -> DatastorePath {
            DatastorePath::parse(text).unwrap()
        }

        fn canary_untouched(&self) {
            assert_eq!(
                std::fs::read(self.dir.join("outside/canary")).unwrap(),
                b"outside"
            );
            let names: Vec<_> = std::fs::read_dir(self.dir.join("outside"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["canary"]);
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn makes_moves_copies_and_deletes_inside_the_datastore() {
        let s = Scratch::new("ops");
        let ds = &s.datastores;
        make_directory(ds, &s.at("[ds] a/b/c"), true).unwrap();
        assert!(s.dir.join("ds/a/b/c").is_dir());
        assert!(matches!(
            make_directory(ds, &s.at("[ds] a/b/c"), false),
            Err(FileError::Exists(_))
        ));
        assert!(matches!(
            make_directory(ds, &s.at("[ds] x/y"), false),
            Err(FileError::NotFound(_))
        ));
        copy_entry(ds, &s.at("[ds] vm"), &s.at("[ds] a/vm-copy"), false).unwrap();
        assert_eq!(
            std::fs::read(s.dir.join("ds/a/vm-copy/disk")).unwrap(),
            b"inside"
        );
        assert!(matches!(
            copy_entry(
                ds,
                &s.at("[ds] vm/disk"),
                &s.at("[ds] a/vm-copy/disk"),
                false
            ),
            Err(FileError::Exists(_))
        ));
        std::fs::write(s.dir.join("ds/vm/disk"), b"newer").unwrap();
        copy_entry(
            ds,
            &s.at("[ds] vm/disk"),
            &s.at("[ds] a/vm-copy/disk"),
            true,
        )
        .unwrap();
        assert_eq!(
            std::fs::read(s.dir.join("ds/a/vm-copy/disk")).unwrap(),
            b"newer"
        );
        move_entry(ds, &s.at("[ds] a/vm-copy"), &s.at("[ds] moved"), false).unwrap();
        assert!(!s.dir.join("ds/a/vm-copy").exists());
        assert_eq!(
            std::fs::read(s.dir.join("ds/moved/disk")).unwrap(),
            b"newer"
        );
        assert!(matches!(
            move_entry(ds, &s.at("[ds] moved"), &s.at("[ds] vm"), false),
            Err(FileError::Exists(_))
        ));
        delete(ds, &s.at("[ds] a")).unwrap();
        assert!(!s.dir.join("ds/a").exists());
        assert!(matches!(
            delete(ds, &s.at("[ds] a")),
            Err(FileError::NotFound(_))
        ));
        let leftovers: Vec<_> = std::fs::read_dir(s.dir.join("ds"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| is_partial(n))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn refuses_escapes_and_never_follows_symlinks() {
        let s = Scratch::new("attack");
        let ds = &s.datastores;
        let outside = s.dir.join("outside");
        std::os::unix::fs::symlink(&outside, s.dir.join("ds/out")).unwrap();
        std::os::unix::fs::symlink(outside.join("canary"), s.dir.join("ds/vm/link")).unwrap();
        // Lexical escapes never parse; the datastore itself is not a file.
        assert!(DatastorePath::parse("[ds] ../outside/canary").is_err());
        assert!(DatastorePath::parse("[ds] vm/../../outside").is_err());
        assert!(matches!(
            delete(ds, &s.at("[ds] ")),
            Err(FileError::DatastoreRoot(_))
        ));
        assert!(matches!(
            delete(ds, &s.at("[ds] /")),
            Err(FileError::DatastoreRoot(_))
        ));
        // A symlinked folder on the way is refused, whatever the operation.
        let through = s.at("[ds] out/canary");
        assert!(matches!(delete(ds, &through), Err(FileError::Path(_))));
        assert!(make_directory(ds, &s.at("[ds] out/new"), true).is_err());
        assert!(matches!(
            make_directory(ds, &s.at("[ds] out/new"), false),
            Err(FileError::Path(_))
        ));
        assert!(copy_entry(ds, &s.at("[ds] vm/disk"), &s.at("[ds] out/copied"), true).is_err());
        assert!(move_entry(ds, &through, &s.at("[ds] stolen"), true).is_err());
        assert!(copy_entry(ds, &through, &s.at("[ds] stolen"), true).is_err());
        assert!(NewFile::create(ds, &s.at("[ds] out/uploaded")).is_err());
        // A symlink itself is neither copied nor moved, nor written through; deleting it removes
        // the link only, and deleting a folder holding links leaves their targets.
        assert!(matches!(
            copy_entry(ds, &s.at("[ds] vm/link"), &s.at("[ds] copy"), false),
            Err(FileError::Special(_))
        ));
        assert!(matches!(
            move_entry(ds, &s.at("[ds] vm/link"), &s.at("[ds] copy"), false),
            Err(FileError::Special(_))
        ));
        assert!(matches!(
            NewFile::create(ds, &s.at("[ds] vm/link")),
            Err(FileError::Special(_))
        ));
        assert!(copy_entry(ds, &s.at("[ds] vm/disk"), &s.at("[ds] vm/link"), true).is_ok());
        assert!(!s.dir.join("ds/vm/link").is_symlink());
        std::os::unix::fs::symlink(&outside, s.dir.join("ds/vm/outlink")).unwrap();
        copy_entry(ds, &s.at("[ds] vm"), &s.at("[ds] vm2"), false).unwrap();
        assert!(!s.dir.join("ds/vm2/outlink").exists());
        delete(ds, &s.at("[ds] out")).unwrap();
        delete(ds, &s.at("[ds] vm")).unwrap();
        s.canary_untouched();
    }

    #[test]
    fn new_files_appear_only_when_committed() {
        let s = Scratch::new("new");
        let ds = &s.datastores;
        let target = s.at("[ds] vm/upload.iso");
        {
            let mut partial = NewFile::create(ds, &target).unwrap();
            std::io::Write::write_all(&mut partial.file, b"half").unwrap();
            assert!(!s.dir.join("ds/vm/upload.iso").exists());
        }
        let names = |dir: &str| -> Vec<String> {
            let mut names: Vec<_> = std::fs::read_dir(s.dir.join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names("ds/vm"), ["disk"], "a dropped upload leaves nothing");
        let mut whole = NewFile::create(ds, &target).unwrap();
        std::io::Write::write_all(&mut whole.file, b"whole").unwrap();
        whole.commit().unwrap();
        assert_eq!(
            std::fs::read(s.dir.join("ds/vm/upload.iso")).unwrap(),
            b"whole"
        );
        assert_eq!(names("ds/vm"), ["disk", "upload.iso"]);
        let listed: Vec<_> = read_folder(ds, &s.at("[ds] vm"))
            .unwrap()
            .into_iter()
            .map(|(name, kind, stat)| (name, kind, stat.st_size))
            .collect();
        assert_eq!(
            listed,
            [
                ("disk".to_string(), EntryKind::File, 6),
                ("upload.iso".to_string(), EntryKind::File, 5)
            ]
        );
        assert!(matches!(
            NewFile::create(ds, &s.at("[ds] vm")),
            Err(FileError::Exists(_))
        ));
    }
}
