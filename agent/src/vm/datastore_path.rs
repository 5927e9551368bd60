//! The one resolver of datastore paths: `[datastore1] folder/file` ↔ files on the host,
//! confined to the datastore. The string is checked lexically (no `..`, no absolute path),
//! then the file is opened beneath the datastore's root ([`super::beneath`]: no symlink
//! followed, nothing outside reachable) and the host path handed out is the opened file's.

use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;

use super::beneath::{self, Access};
use crate::datastore::registry::Datastores;
use crate::inventory::esxi::DatastoreDir;

/// A parsed `[name] relative/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatastorePath {
    /// The datastore's name.
    pub datastore: String,
    /// The path inside it (may be empty for the datastore's root).
    pub path: String,
}

/// Why a datastore path is unusable.
#[derive(Debug, thiserror::Error)]
pub enum DatastorePathError {
    /// Not of the form `[name] path`.
    #[error("'{0}' is not a datastore path ([datastore] folder/file)")]
    Malformed(String),
    /// The path would leave the datastore.
    #[error("'{0}' leaves its datastore")]
    Escapes(String),
    /// No datastore of that name.
    #[error("datastore '{0}' does not exist")]
    NoDatastore(String),
    /// A symlink lies on the way (never followed inside a datastore).
    #[error("'{0}' crosses a symbolic link")]
    Symlink(String),
    /// The file (or, for a new file, its folder) cannot be reached.
    #[error("{path}: {source}")]
    Unreachable {
        /// The datastore path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl DatastorePathError {
    /// Whether the file (or its folder) is simply absent.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DatastorePathError::Unreachable { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound)
    }
}

impl DatastorePath {
    /// Parses `[name] path`.
    pub fn parse(text: &str) -> Result<DatastorePath, DatastorePathError> {
        let malformed = || DatastorePathError::Malformed(text.to_string());
        let rest = text.trim().strip_prefix('[').ok_or_else(malformed)?;
        let (name, path) = rest.split_once(']').ok_or_else(malformed)?;
        if name.is_empty() {
            return Err(malformed());
        }
        let path = path.trim().trim_start_matches('/').to_string();
        let escapes = Path::new(&path)
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        if escapes {
            return Err(DatastorePathError::Escapes(text.to_string()));
        }
        Ok(DatastorePath {
            datastore: name.to_string(),
            path,
        })
    }

    /// The datastore this path is on.
    pub fn datastore<'a>(
        &self,
        datastores: &'a [DatastoreDir],
    ) -> Result<&'a DatastoreDir, DatastorePathError> {
        datastores
            .iter()
            .find(|d| d.name == self.datastore)
            .ok_or_else(|| DatastorePathError::NoDatastore(self.datastore.clone()))
    }

    /// Opens this existing file (or folder) beneath its datastore's root.
    pub fn open(
        &self,
        datastores: &[DatastoreDir],
        access: Access,
    ) -> Result<File, DatastorePathError> {
        let root = &self.datastore(datastores)?.dir;
        beneath::open(root, Path::new(&self.path), access).map_err(|e| self.unreachable(e))
    }

    /// The host path of this existing file, read from the file opened beneath the datastore.
    pub fn resolve(&self, datastores: &[DatastoreDir]) -> Result<PathBuf, DatastorePathError> {
        let file = self.open(datastores, Access::Locate)?;
        beneath::host_path(&file).map_err(|e| self.unreachable(e))
    }

    /// The host path a new file at this path gets: its folder (which must exist) resolved as
    /// [`Self::resolve`] does, joined with its own name.
    pub fn resolve_new(&self, datastores: &[DatastoreDir]) -> Result<PathBuf, DatastorePathError> {
        let name = Path::new(&self.path)
            .components()
            .rfind(|c| matches!(c, Component::Normal(_)))
            .ok_or_else(|| DatastorePathError::Escapes(self.to_string()))?;
        Ok(self.parent().resolve(datastores)?.join(name))
    }

    /// Makes this folder (mode 0700) unless it exists; its parent must exist. Returns its
    /// host path and whether it was made.
    pub fn create_folder(
        &self,
        datastores: &[DatastoreDir],
    ) -> Result<(PathBuf, bool), DatastorePathError> {
        match self.resolve(datastores) {
            Ok(dir) => Ok((dir, false)),
            Err(e) if e.is_not_found() => {
                let dir = self.resolve_new(datastores)?;
                make_private_dir(&dir).map_err(|e| self.unreachable(e))?;
                Ok((dir, true))
            }
            Err(e) => Err(e),
        }
    }

    fn unreachable(&self, source: std::io::Error) -> DatastorePathError {
        match source.raw_os_error().map(Errno::from_raw) {
            Some(Errno::EXDEV) => DatastorePathError::Escapes(self.to_string()),
            Some(Errno::ELOOP) => DatastorePathError::Symlink(self.to_string()),
            _ => DatastorePathError::Unreachable {
                path: self.to_string(),
                source,
            },
        }
    }

    /// Whether this names a file directly in the datastore's root (no folder).
    pub fn is_at_root(&self) -> bool {
        Path::new(&self.path)
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .count()
            <= 1
    }

    /// The datastore path of a host file inside one of `datastores` (`..` and symlinks
    /// resolved first); `None` when it lies outside every datastore.
    pub fn of_host_file(file: &Path, datastores: &[DatastoreDir]) -> Option<DatastorePath> {
        let file = std::fs::canonicalize(file).ok()?;
        datastores.iter().find_map(|d| {
            let dir = std::fs::canonicalize(&d.dir).ok()?;
            let path = file.strip_prefix(dir).ok()?.to_str()?.to_string();
            Some(DatastorePath {
                datastore: d.name.clone(),
                path,
            })
        })
    }

    /// The parent folder's datastore path.
    pub fn parent(&self) -> DatastorePath {
        DatastorePath {
            datastore: self.datastore.clone(),
            path: Path::new(&self.path)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// A file in this folder.
    pub fn join(&self, name: &str) -> DatastorePath {
        let path = if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.path)
        };
        DatastorePath {
            datastore: self.datastore.clone(),
            path,
        }
    }
}

/// The backing-file opener vireod installs in `vireo_disk`: a backing file named in a qcow2
/// header (written by a client, a guest or an old host) resolves only inside the datastore
/// of the image naming it — relative to the image's folder, beneath the datastore's root, no
/// symlinks; absolute names are refused.
pub struct ConfinedBacking {
    /// The host's datastores (read at each open: datastores come and go).
    datastores: Arc<Datastores>,
}

impl ConfinedBacking {
    /// An opener for images on these datastores.
    pub fn new(datastores: Arc<Datastores>) -> ConfinedBacking {
        ConfinedBacking { datastores }
    }
}

impl vireo_disk::backing::BackingOpener for ConfinedBacking {
    fn open_backing(&self, child_dir: &Path, name: &str) -> std::io::Result<(File, PathBuf)> {
        let refused = |why: &str| {
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("backing file '{name}' {why}"),
            )
        };
        if Path::new(name).is_absolute() {
            return Err(refused(
                "is an absolute path (only names inside the datastore are followed)",
            ));
        }
        let dir = std::fs::canonicalize(child_dir)?;
        let roots: Vec<PathBuf> = self
            .datastores
            .list()
            .iter()
            .filter_map(|d| std::fs::canonicalize(&d.dir).ok())
            .collect();
        let (root, inside) = roots
            .iter()
            .find_map(|root| Some((root, dir.strip_prefix(root).ok()?)))
            .ok_or_else(|| refused("belongs to an image outside every datastore"))?;
        let file = beneath::open(root, &inside.join(name), Access::Read).map_err(|e| {
            match e.raw_os_error().map(Errno::from_raw) {
                Some(Errno::EXDEV) => refused("leaves the datastore"),
                Some(Errno::ELOOP) => refused("crosses a symbolic link"),
                _ => e,
            }
        })?;
        let path = beneath::host_path(&file)?;
        Ok((file, path))
    }
}

/// Makes the folder `dir` with mode 0700, whatever the umask.
pub fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

impl std::fmt::Display for DatastorePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.datastore, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resolves_and_refuses_escapes() {
        let p = DatastorePath::parse("[datastore1] vm/vm.vmx").unwrap();
        assert_eq!(p.path, "vm/vm.vmx");
        assert_eq!(p.parent().to_string(), "[datastore1] vm");
        assert_eq!(
            p.parent().join("disk.qcow2").to_string(),
            "[datastore1] vm/disk.qcow2"
        );
        let ds = [DatastoreDir {
            name: "datastore1".into(),
            dir: "/nonexistent/ds1".into(),
        }];
        assert!(!p.is_at_root());
        assert!(DatastorePath::parse("[d] x.vmx").unwrap().is_at_root());
        assert_eq!(DatastorePath::parse("[datastore1]").unwrap().path, "");
        assert!(matches!(
            DatastorePath::parse("[datastore1] ../etc/passwd"),
            Err(DatastorePathError::Escapes(_))
        ));
        assert!(matches!(
            DatastorePath::parse("/etc/passwd"),
            Err(DatastorePathError::Malformed(_))
        ));
        assert!(matches!(
            DatastorePath::parse("[nope] x").unwrap().resolve(&ds),
            Err(DatastorePathError::NoDatastore(_))
        ));
    }

    #[test]
    fn names_host_files_inside_a_datastore() {
        let root = std::env::temp_dir().join(format!("vireo-dspath-{}", std::process::id()));
        std::fs::create_dir_all(root.join("ds1/base")).unwrap();
        std::fs::write(root.join("ds1/base/base.qcow2"), b"").unwrap();
        std::fs::write(root.join("outside.qcow2"), b"").unwrap();
        let ds = [DatastoreDir {
            name: "datastore1".into(),
            dir: root.join("ds1"),
        }];
        let name = |p: &Path| DatastorePath::of_host_file(p, &ds).map(|p| p.to_string());
        let via_dots = root.join("ds1/vm/../base/base.qcow2");
        std::fs::create_dir_all(root.join("ds1/vm")).unwrap();
        assert_eq!(
            name(&via_dots).as_deref(),
            Some("[datastore1] base/base.qcow2")
        );
        assert_eq!(name(&root.join("outside.qcow2")), None);
        assert_eq!(name(&root.join("ds1/missing.qcow2")), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn resolves_files_inside_and_refuses_symlinks_out() {
        let root = std::env::temp_dir().join(format!("vireo-dsresolve-{}", std::process::id()));
        std::fs::create_dir_all(root.join("ds1/vm")).unwrap();
        std::fs::write(root.join("ds1/vm/disk.qcow2"), b"").unwrap();
        std::fs::write(root.join("canary"), b"secret").unwrap();
        std::os::unix::fs::symlink(root.join("canary"), root.join("ds1/vm/evil.qcow2")).unwrap();
        let ds = [DatastoreDir {
            name: "datastore1".into(),
            dir: root.join("ds1"),
        }];
        let at = |p: &str| DatastorePath::parse(p).unwrap();
        let canonical = std::fs::canonicalize(root.join("ds1")).unwrap();
        assert_eq!(
            at("[datastore1] vm/disk.qcow2").resolve(&ds).unwrap(),
            canonical.join("vm/disk.qcow2")
        );
        assert_eq!(
            at("[datastore1] vm/new.qcow2").resolve_new(&ds).unwrap(),
            canonical.join("vm/new.qcow2")
        );
        assert!(matches!(
            at("[datastore1] vm/evil.qcow2").resolve(&ds),
            Err(DatastorePathError::Symlink(_))
        ));
        assert!(at("[datastore1] vm/missing")
            .resolve(&ds)
            .unwrap_err()
            .is_not_found());
        assert!(at("[datastore1] nofolder/new")
            .resolve_new(&ds)
            .unwrap_err()
            .is_not_found());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
