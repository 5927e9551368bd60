//! The datastores' content as the host's managers and `/folder` see it: files and folders
//! changed through the one datastore resolver ([`files`]), and the vim25 faults their
//! failures become.

pub mod files;
pub mod listing;
pub mod local;
pub mod registry;
pub mod search;
pub mod virtual_disks;

use vireo_api::schema::Schema;
use vireo_api::Fault;

use crate::faults;
use crate::vm::datastore_path::DatastorePathError;
use files::FileError;

/// The fault a datastore file operation's failure is reported as.
pub fn file_error_fault(schema: &Schema, error: FileError) -> Fault {
    let message = error.to_string();
    match error {
        FileError::Path(DatastorePathError::NoDatastore(name)) => {
            faults::invalid_datastore(schema, &name, message)
        }
        FileError::Path(
            DatastorePathError::Malformed(path) | DatastorePathError::Escapes(path),
        )
        | FileError::DatastoreRoot(path) => faults::invalid_datastore_path(schema, &path, message),
        FileError::Path(e) if e.is_not_found() => {
            faults::file_not_found(schema, &e.to_string(), message)
        }
        FileError::NotFound(path) => faults::file_not_found(schema, &path, message),
        FileError::Exists(path) => faults::file_already_exists(schema, &path),
        FileError::Io { path, source }
            if source.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) =>
        {
            faults::no_disk_space(schema, &path, message)
        }
        FileError::Io { path, .. } | FileError::Special(path) => {
            faults::file_fault(schema, &path, message)
        }
        FileError::Path(e) => faults::file_fault(schema, &e.to_string(), message),
    }
}
