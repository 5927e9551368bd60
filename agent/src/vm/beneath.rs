//! Opening files beneath a directory the kernel keeps us in: `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` relative to an fd of the
//! root, so that no `..`, absolute path or symlink (swapped in at any moment) leads out. The
//! host path handed back is read from the opened fd, not computed from the string.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// How a file beneath the root is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A handle that only names the file (no read or write; any type, directories too).
    Locate,
    /// Reading.
    Read,
    /// Reading and writing an existing file (nothing created or truncated).
    Modify,
    /// Writing an existing file, or creating it with mode 0600; truncated.
    Replace,
    /// Reading and appending to a file, created with mode 0600 when missing (a live log).
    Append,
    /// Reading and writing a file, created with mode 0600 when missing; never truncated.
    Update,
    /// Reading and writing a new file, created with mode 0600 (it must not exist).
    New,
    /// A directory (a handle naming it).
    Directory,
}

impl Access {
    fn flags(self) -> OFlag {
        match self {
            // openat2 refuses any other flag beside O_PATH (O_CLOEXEC and O_DIRECTORY aside).
            Access::Locate => OFlag::O_PATH,
            Access::Read => OFlag::O_RDONLY | OFlag::O_NOCTTY,
            Access::Modify => OFlag::O_RDWR | OFlag::O_NOCTTY,
            Access::Replace => OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOCTTY,
            Access::Append => OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_APPEND | OFlag::O_NOCTTY,
            Access::Update => OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOCTTY,
            Access::New => OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOCTTY,
            Access::Directory => OFlag::O_PATH | OFlag::O_DIRECTORY,
        }
    }
}

/// Opens `relative` beneath `root`; fails with `EXDEV` when the path would leave `root` and
/// `ELOOP` when it crosses a symlink. An empty `relative` opens `root` itself.
pub fn open(root: &Path, relative: &Path, access: Access) -> io::Result<File> {
    let root = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    let mode = match access {
        Access::Replace | Access::Append | Access::Update | Access::New => {
            Mode::from_bits_truncate(0o600)
        }
        Access::Locate | Access::Read | Access::Modify | Access::Directory => Mode::empty(),
    };
    let how = OpenHow::new()
        .flags(access.flags() | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    Ok(File::from(openat2(&root, relative, how)?))
}

/// The host path of an opened file, as the kernel records it for the fd.
pub fn host_path(file: &File) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vireo-beneath-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root/vm")).unwrap();
        std::fs::write(dir.join("root/vm/disk"), b"inside").unwrap();
        std::fs::write(dir.join("canary"), b"outside").unwrap();
        dir
    }

    fn errno(result: io::Result<File>) -> Option<i32> {
        result.err().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn opens_inside_and_names_the_opened_file() {
        let dir = scratch("inside");
        let root = dir.join("root");
        let file = open(&root, Path::new("vm/disk"), Access::Read).unwrap();
        let canonical = std::fs::canonicalize(root.join("vm/disk")).unwrap();
        assert_eq!(host_path(&file).unwrap(), canonical);
        let root_itself = open(&root, Path::new(""), Access::Directory).unwrap();
        assert_eq!(
            host_path(&root_itself).unwrap(),
            std::fs::canonicalize(&root).unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_dots_absolute_paths_and_symlinks() {
        let dir = scratch("escape");
        let root = dir.join("root");
        let canary = dir.join("canary");
        std::os::unix::fs::symlink(&canary, root.join("vm/link")).unwrap();
        std::os::unix::fs::symlink("disk", root.join("vm/inner-link")).unwrap();
        std::os::unix::fs::symlink(&dir, root.join("dirlink")).unwrap();
        assert_eq!(
            errno(open(&root, Path::new("../canary"), Access::Read)),
            Some(Errno::EXDEV as i32)
        );
        assert_eq!(
            errno(open(&root, &canary, Access::Read)),
            Some(Errno::EXDEV as i32)
        );
        assert_eq!(
            errno(open(&root, Path::new("vm/link"), Access::Read)),
            Some(Errno::ELOOP as i32)
        );
        assert_eq!(
            errno(open(&root, Path::new("vm/inner-link"), Access::Read)),
            Some(Errno::ELOOP as i32)
        );
        assert_eq!(
            errno(open(&root, Path::new("dirlink/canary"), Access::Replace)),
            Some(Errno::ELOOP as i32)
        );
        assert_eq!(std::fs::read(&canary).unwrap(), b"outside");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_swapped_in_after_a_check_is_not_followed() {
        let dir = scratch("race");
        let root = dir.join("root");
        let canary = dir.join("canary");
        // A lexical check passes for "vm/disk"; then the file becomes a symlink out.
        assert!(open(&root, Path::new("vm/disk"), Access::Locate).is_ok());
        std::fs::remove_file(root.join("vm/disk")).unwrap();
        std::os::unix::fs::symlink(&canary, root.join("vm/disk")).unwrap();
        assert_eq!(
            errno(open(&root, Path::new("vm/disk"), Access::Replace)),
            Some(Errno::ELOOP as i32)
        );
        // And a folder swapped for a symlink to the outside.
        std::fs::remove_file(root.join("vm/disk")).unwrap();
        std::fs::remove_dir(root.join("vm")).unwrap();
        std::os::unix::fs::symlink(&dir, root.join("vm")).unwrap();
        assert_eq!(
            errno(open(&root, Path::new("vm/canary"), Access::Read)),
            Some(Errno::ELOOP as i32)
        );
        assert_eq!(std::fs::read(&canary).unwrap(), b"outside");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn creates_files_private_whatever_the_umask() {
        let dir = scratch("mode");
        let root = dir.join("root");
        use std::os::unix::fs::PermissionsExt;
        for (name, access) in [
            ("new", Access::Replace),
            ("log", Access::Append),
            ("log-1", Access::Update),
            ("vm.mem", Access::New),
        ] {
            let file = open(&root, &Path::new("vm").join(name), access).unwrap();
            assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(
            errno(open(&root, Path::new("vm/vm.mem"), Access::New)),
            Some(Errno::EEXIST as i32),
            "a new file must not exist"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
