//! The host's datastores: those vireod.toml configures and the local ones CreateLocalDatastore
//! added at run time (kept in `datastores.json` in the data dir). Readers take the current list
//! as one shared snapshot, so the path resolver, the backing-file confinement and the managers
//! see one set; a change publishes a new list.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::inventory::esxi::DatastoreDir;

/// The file the added datastores are kept in.
const FILE: &str = "datastores.json";

/// Why the datastore list could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file of added datastores could not be read or written.
    #[error("datastore list {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A datastore of that name exists.
    #[error("a datastore named '{0}' exists")]
    DuplicateName(String),
    /// The directory is, holds or lies inside an existing datastore's.
    #[error("{dir} overlaps datastore '{other}' ({other_dir})")]
    Overlaps {
        /// The new directory.
        dir: String,
        /// The datastore it overlaps.
        other: String,
        /// That datastore's directory.
        other_dir: String,
    },
    /// No datastore has that name.
    #[error("no datastore is named '{0}'")]
    NotFound(String),
    /// The datastore comes from vireod.toml.
    #[error("datastore '{0}' is configured in vireod's configuration file; remove it there")]
    Configured(String),
}

/// One added datastore as the file keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Added {
    name: String,
    dir: PathBuf,
}

/// The datastores of this host.
#[derive(Debug)]
pub struct Datastores {
    configured: Vec<String>,
    current: RwLock<Arc<[DatastoreDir]>>,
    file: PathBuf,
}

impl Datastores {
    /// The configured datastores and those added earlier.
    pub fn open(config: &Config) -> Result<Datastores, RegistryError> {
        let file = config.data_dir.join(FILE);
        let added: Vec<Added> = crate::json_file::load(&file)
            .map_err(|source| RegistryError::File {
                path: file.clone(),
                source,
            })?
            .unwrap_or_default();
        let configured = crate::startup::datastore_dirs(config);
        Ok(Datastores {
            configured: configured.iter().map(|d| d.name.clone()).collect(),
            current: RwLock::new(
                configured
                    .into_iter()
                    .chain(added.into_iter().map(|a| DatastoreDir {
                        name: a.name,
                        dir: a.dir,
                    }))
                    .collect(),
            ),
            file,
        })
    }

    /// The datastores now.
    pub fn list(&self) -> Arc<[DatastoreDir]> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Adds a datastore in `dir` (canonical) unless its name is taken or its directory is,
    /// holds or lies inside another datastore's; keeps the added ones.
    pub fn add(&self, name: &str, dir: &Path) -> Result<DatastoreDir, RegistryError> {
        self.change(|list| {
            if list.iter().any(|d| d.name == name) {
                return Err(RegistryError::DuplicateName(name.to_string()));
            }
            for other in list.iter() {
                let other_dir = std::fs::canonicalize(&other.dir).unwrap_or(other.dir.clone());
                if dir.starts_with(&other_dir) || other_dir.starts_with(dir) {
                    return Err(RegistryError::Overlaps {
                        dir: dir.display().to_string(),
                        other: other.name.clone(),
                        other_dir: other_dir.display().to_string(),
                    });
                }
            }
            let added = DatastoreDir {
                name: name.to_string(),
                dir: dir.to_path_buf(),
            };
            list.push(added.clone());
            Ok(added)
        })
    }

    /// Removes an added datastore (its directory and files stay).
    pub fn remove(&self, name: &str) -> Result<DatastoreDir, RegistryError> {
        if self.configured.iter().any(|c| c == name) {
            return Err(RegistryError::Configured(name.to_string()));
        }
        self.change(|list| {
            let at = list
                .iter()
                .position(|d| d.name == name)
                .ok_or_else(|| RegistryError::NotFound(name.to_string()))?;
            Ok(list.remove(at))
        })
    }

    /// Runs `edit` on a copy of the list under the write lock; on success keeps the added
    /// datastores in the file, then publishes the new list.
    fn change<R>(
        &self,
        edit: impl FnOnce(&mut Vec<DatastoreDir>) -> Result<R, RegistryError>,
    ) -> Result<R, RegistryError> {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut list = current.to_vec();
        let result = edit(&mut list)?;
        let added: Vec<Added> = list
            .iter()
            .filter(|d| !self.configured.contains(&d.name))
            .map(|d| Added {
                name: d.name.clone(),
                dir: d.dir.clone(),
            })
            .collect();
        crate::json_file::save(&self.file, &added).map_err(|source| RegistryError::File {
            path: self.file.clone(),
            source,
        })?;
        *current = list.into();
        Ok(result)
    }
}
