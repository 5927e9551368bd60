//! Datastore paths: `[datastore1] folder/file` ↔ files on the host, confined to the datastore
//! (no `..`, no absolute paths inside the brackets' path).

use std::path::{Component, Path, PathBuf};

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
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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

    /// The file on the host.
    pub fn resolve(&self, datastores: &[DatastoreDir]) -> Result<PathBuf, DatastorePathError> {
        Ok(self.datastore(datastores)?.dir.join(&self.path))
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
            dir: "/data/ds1".into(),
        }];
        assert_eq!(p.resolve(&ds).unwrap(), Path::new("/data/ds1/vm/vm.vmx"));
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
}
