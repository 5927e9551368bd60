//! The directory of a local datastore made by CreateLocalDatastore: the name checked, the path
//! kept beneath the folder local datastores are made in (`local_datastore_root`, so an API
//! user never turns the host's own files into a datastore), and the folders made one at a time
//! through the beneath resolver, so that no `..`, outside absolute path or symlink leads
//! elsewhere.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{mkdirat, Mode};

use crate::vm::beneath::{self, Access};

/// The longest datastore name ESXi accepts.
const MAX_NAME: usize = 42;
/// The longest path accepted.
const MAX_PATH: usize = 1024;

/// Why a local datastore cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum LocalDatastoreError {
    /// The name is empty, too long or has a character datastore paths cannot carry.
    #[error("'{name}' is not a valid datastore name: {why}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// The path is not beneath the folder local datastores are made in.
    #[error("'{path}' is not beneath {root}, where local datastores are made")]
    OutsideRoot {
        /// The path.
        path: String,
        /// The folder.
        root: String,
    },
    /// The path names no folder below the root, or has `.`/`..` parts, or is too long.
    #[error("'{0}' must name a folder below the local datastore folder, without '.' or '..'")]
    Path(String),
    /// A part of the path is a symbolic link or not a folder.
    #[error("'{path}' crosses a symbolic link or a file")]
    NotAFolder {
        /// The path.
        path: String,
    },
    /// The folder could not be made.
    #[error("cannot make {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Checks a datastore name: 1 to 42 characters, none that a `[name] path` or a URL breaks on.
pub fn check_name(name: &str) -> Result<(), LocalDatastoreError> {
    let bad = |why| {
        Err(LocalDatastoreError::Name {
            name: name.to_string(),
            why,
        })
    };
    if name.trim().is_empty() {
        return bad("it is empty");
    }
    if name.chars().count() > MAX_NAME {
        return bad("it is longer than 42 characters");
    }
    if name != name.trim() || name == "." || name == ".." {
        return bad("it starts or ends with blanks, or is '.' or '..'");
    }
    if name
        .chars()
        .any(|c| c.is_control() || "/\\[]%\"".contains(c))
    {
        return bad("it has a control character or one of / \\ [ ] % \"");
    }
    Ok(())
}

/// The folder `path` names below `root` (absolute and beneath it, or relative to it): made if
/// missing, and returned as the kernel names the opened folder.
pub fn make_dir(root: &Path, path: &str) -> Result<PathBuf, LocalDatastoreError> {
    let relative = relative_to_root(root, path)?;
    std::fs::create_dir_all(root).map_err(|source| LocalDatastoreError::Io {
        path: root.display().to_string(),
        source,
    })?;
    let mut made = PathBuf::new();
    let mut folder = open(root, &made, path)?;
    for part in relative.iter() {
        let next = made.join(part);
        folder = match open(root, &next, path) {
            Err(LocalDatastoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                make(&folder, part, path)?;
                open(root, &next, path)?
            }
            other => other?,
        };
        made = next;
    }
    beneath::host_path(&folder).map_err(|source| LocalDatastoreError::Io {
        path: path.to_string(),
        source,
    })
}

/// `path` as a relative path of plain names beneath `root`.
fn relative_to_root(root: &Path, path: &str) -> Result<PathBuf, LocalDatastoreError> {
    let given = Path::new(path);
    if path.len() > MAX_PATH || path.contains('\0') {
        return Err(LocalDatastoreError::Path(path.to_string()));
    }
    let relative = if given.is_absolute() {
        given
            .strip_prefix(root)
            .map_err(|_| LocalDatastoreError::OutsideRoot {
                path: path.to_string(),
                root: root.display().to_string(),
            })?
    } else {
        given
    };
    let plain = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if !plain || relative.as_os_str().is_empty() {
        return Err(LocalDatastoreError::Path(path.to_string()));
    }
    Ok(relative.to_path_buf())
}

fn open(root: &Path, relative: &Path, path: &str) -> Result<std::fs::File, LocalDatastoreError> {
    beneath::open(root, relative, Access::Directory).map_err(|source| {
        match source.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV) => LocalDatastoreError::NotAFolder {
                path: path.to_string(),
            },
            _ => LocalDatastoreError::Io {
                path: path.to_string(),
                source,
            },
        }
    })
}

/// Makes folder `name` in `parent` (one a concurrent call made first is as good).
fn make(parent: &std::fs::File, name: &OsStr, path: &str) -> Result<(), LocalDatastoreError> {
    match mkdirat(parent, name, Mode::S_IRWXU) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(errno) => Err(LocalDatastoreError::Io {
            path: path.to_string(),
            source: errno.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vireo-local-ds-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_that_paths_or_urls_break_on_are_refused() {
        assert!(check_name("ds2").is_ok());
        assert!(check_name("Datastore 2").is_ok());
        for bad in [
            "",
            " ",
            "a/b",
            "a]b",
            "[a",
            "..",
            "x\n",
            " lead",
            &"x".repeat(43),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn folders_are_made_beneath_the_root_only() {
        let base = scratch("root");
        let root = base.join("volumes");
        let made = make_dir(&root, "a/b").unwrap();
        assert_eq!(made, std::fs::canonicalize(root.join("a/b")).unwrap());
        let absolute = root.join("c").display().to_string();
        assert!(make_dir(&root, &absolute).unwrap().ends_with("volumes/c"));
        for escape in ["../x", "a/../../x", "/etc", "", "."] {
            assert!(make_dir(&root, escape).is_err(), "{escape:?}");
        }
        assert!(!base.join("x").exists());
        std::os::unix::fs::symlink(&base, root.join("link")).unwrap();
        assert!(matches!(
            make_dir(&root, "link/inside"),
            Err(LocalDatastoreError::NotAFolder { .. })
        ));
        assert!(!base.join("inside").exists());
        std::fs::write(root.join("file"), b"x").unwrap();
        assert!(make_dir(&root, "file/sub").is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
