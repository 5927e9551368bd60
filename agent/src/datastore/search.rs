//! HostDatastoreBrowser's searches: a datastore folder (with its subfolders for
//! SearchDatastoreSubFolders) read through the datastore resolver, each entry classified by
//! type (folder, virtual disk, VM configuration, ISO or floppy image, log, NVRAM), kept when it
//! matches the spec's name patterns and one of its queries, with the facts a query may ask for
//! read from the file itself (a disk's capacity from its header, a `.vmx`'s config.version).
//! Symbolic links, special files and partial uploads are never listed nor followed.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::sys::stat::FileStat;

use super::files::{self, EntryKind, FileError};
use crate::inventory::esxi::DatastoreDir;
use crate::vm::beneath::{self, Access};
use crate::vm::datastore_path::DatastorePath;
use crate::vm::vmx_file::VmxFile;

/// The most entries one search lists (folders read count too).
pub const MAX_ENTRIES: usize = 100_000;
/// Bytes of a disk read for its header (qcow2 header and extensions, VMDK sparse header).
const HEADER_BYTES: u64 = 4096;
/// The largest `.vmx` read for its config.version.
const MAX_VMX_BYTES: u64 = 1 << 20;

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// A folder could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The search would list more than [`MAX_ENTRIES`].
    #[error("the search lists more than {MAX_ENTRIES} entries; search a smaller folder")]
    TooMany,
}

/// What kind of file an entry is, as the browser's query types tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A folder (FolderFileQuery).
    Folder,
    /// A virtual disk: `.qcow2`, `.vmdk`, `.raw` (VmDiskFileQuery).
    Disk,
    /// A VM's configuration, `.vmx` (VmConfigFileQuery).
    Config,
    /// A CD image, `.iso` (IsoImageFileQuery).
    Iso,
    /// A floppy image, `.flp` (FloppyImageFileQuery).
    Floppy,
    /// A log, `*.log` or a rotated `*.log.N` (VmLogFileQuery).
    Log,
    /// A VM's NVRAM, `.nvram` (VmNvramFileQuery).
    Nvram,
    /// Any other file (only the plain FileQuery matches it).
    Other,
}

impl FileType {
    /// Every typed kind, with the query type that selects it.
    pub const QUERIES: [(FileType, &'static str); 7] = [
        (FileType::Folder, "FolderFileQuery"),
        (FileType::Disk, "VmDiskFileQuery"),
        (FileType::Config, "VmConfigFileQuery"),
        (FileType::Iso, "IsoImageFileQuery"),
        (FileType::Floppy, "FloppyImageFileQuery"),
        (FileType::Log, "VmLogFileQuery"),
        (FileType::Nvram, "VmNvramFileQuery"),
    ];

    /// The type of the entry `name` of kind `kind`.
    fn of(name: &str, kind: EntryKind) -> FileType {
        if kind == EntryKind::Folder {
            return FileType::Folder;
        }
        let lower = name.to_ascii_lowercase();
        let extension = lower.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        let rotated_log = lower.rsplit_once('.').is_some_and(|(stem, n)| {
            stem.ends_with(".log") && n.bytes().all(|b| b.is_ascii_digit())
        });
        match extension {
            "qcow2" | "vmdk" | "raw" => FileType::Disk,
            "vmx" => FileType::Config,
            "iso" => FileType::Iso,
            "flp" => FileType::Floppy,
            "log" => FileType::Log,
            "nvram" => FileType::Nvram,
            _ if rotated_log => FileType::Log,
            _ => FileType::Other,
        }
    }

    /// The FileInfo subtype describing a file of this type.
    pub fn info_type(self) -> &'static str {
        match self {
            FileType::Folder => "FolderFileInfo",
            FileType::Disk => "VmDiskFileInfo",
            FileType::Config => "VmConfigFileInfo",
            FileType::Iso => "IsoImageFileInfo",
            FileType::Floppy => "FloppyImageFileInfo",
            FileType::Log => "VmLogFileInfo",
            FileType::Nvram => "VmNvramFileInfo",
            FileType::Other => "FileInfo",
        }
    }
}

/// A disk query's filter (VmDiskFileQueryFilter); an empty list matches anything.
#[derive(Debug, Clone, Default)]
pub struct DiskFilter {
    /// Backing types (`VirtualDiskFlatVer2BackingInfo`).
    pub disk_types: Vec<String>,
    /// Hardware versions.
    pub hardware_versions: Vec<i32>,
    /// Controller types (`ParaVirtualSCSIController`).
    pub controller_types: Vec<String>,
    /// Thin or thick only.
    pub thin: Option<bool>,
}

/// One query of a search spec.
#[derive(Debug, Clone)]
pub enum Query {
    /// The plain FileQuery: every file and folder.
    Any,
    /// One type's query, with what its filter asks.
    Typed(FileType),
    /// VmDiskFileQuery with its filter.
    Disk(DiskFilter),
    /// VmConfigFileQuery with the config versions it matches (empty: any).
    Config(Vec<i32>),
    /// A query type this host keeps no files of (VmSnapshotFileQuery, TemplateConfigFileQuery):
    /// matches nothing.
    Unmatched,
}

impl Query {
    /// The type this query selects (`None`: any).
    pub fn file_type(&self) -> Option<FileType> {
        match self {
            Query::Any | Query::Unmatched => None,
            Query::Typed(t) => Some(*t),
            Query::Disk(_) => Some(FileType::Disk),
            Query::Config(_) => Some(FileType::Config),
        }
    }

    fn matches(&self, found: &Found) -> bool {
        if self.file_type().is_some_and(|t| t != found.file_type) {
            return false;
        }
        let any_or = |list: &[i32], value: Option<i32>| {
            list.is_empty() || value.is_some_and(|v| list.contains(&v))
        };
        match self {
            Query::Disk(filter) => {
                let Some(disk) = &found.disk else {
                    return false;
                };
                let user = disk.user.as_ref();
                (filter.disk_types.is_empty()
                    || filter.disk_types.iter().any(|t| t == DISK_BACKING_TYPE))
                    && any_or(&filter.hardware_versions, user.map(|u| u.hardware_version))
                    && (filter.controller_types.is_empty()
                        || user.is_some_and(|u| {
                            filter.controller_types.iter().any(|c| c == u.controller)
                        }))
                    && filter.thin.is_none_or(|thin| thin == disk.thin)
            }
            Query::Config(versions) => any_or(versions, found.config_version),
            Query::Any | Query::Typed(_) => true,
            Query::Unmatched => false,
        }
    }
}

/// The backing type every disk here has (a file-backed disk, as VMs report it).
pub const DISK_BACKING_TYPE: &str = "VirtualDiskFlatVer2BackingInfo";

/// A search: its queries (none: every entry, as plain FileInfo), name patterns (`*`, `?`;
/// none: any name), case sensitivity and order.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// The queries; an entry is kept when one matches.
    pub queries: Vec<Query>,
    /// Name patterns; an entry is kept when one matches.
    pub patterns: Vec<String>,
    /// Whether patterns ignore case.
    pub case_insensitive: bool,
    /// Whether folders come before files (otherwise all by name).
    pub folders_first: bool,
}

/// A running VM's (or any registered VM's) use of a disk file.
#[derive(Debug, Clone)]
pub struct DiskUser {
    /// The VM's virtual hardware version.
    pub hardware_version: i32,
    /// The controller the disk is attached to.
    pub controller: &'static str,
}

/// What a disk file's own header says.
#[derive(Debug, Clone)]
pub struct DiskFacts {
    /// Capacity in bytes (unknown for a VMDK descriptor).
    pub capacity: Option<u64>,
    /// Whether it grows as written (qcow2, sparse VMDK) rather than being fully allocated.
    pub thin: bool,
    /// The registered VM using it, if any.
    pub user: Option<DiskUser>,
}

/// One entry a search found.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its name in its folder.
    pub name: String,
    /// Its type.
    pub file_type: FileType,
    /// The index of the spec's query that matched it (`None` when the spec has none).
    pub matched_by: Option<usize>,
    /// Its size in bytes.
    pub size: i64,
    /// Last modification, microseconds since the epoch.
    pub modified_micros: i64,
    /// Its owner's user id.
    pub uid: u32,
    /// A disk's facts.
    pub disk: Option<DiskFacts>,
    /// A `.vmx`'s config.version.
    pub config_version: Option<i32>,
}

/// The entries found in one folder.
#[derive(Debug)]
pub struct FolderResult {
    /// The folder.
    pub folder: DatastorePath,
    /// What matched in it, in the spec's order.
    pub files: Vec<Found>,
}

/// Searches `start` (and, with `recurse`, every folder beneath it, parents before children);
/// `disk_users` maps the host path of each registered VM's disk files to its use.
pub fn search(
    datastores: &[DatastoreDir],
    start: &DatastorePath,
    spec: &Spec,
    recurse: bool,
    disk_users: &HashMap<PathBuf, DiskUser>,
) -> Result<Vec<FolderResult>, SearchError> {
    let mut results = Vec::new();
    let mut pending = vec![start.clone()];
    let mut listed = 0usize;
    while let Some(folder) = pending.pop() {
        let entries = files::read_folder(datastores, &folder)?;
        listed += entries.len();
        if listed > MAX_ENTRIES {
            return Err(SearchError::TooMany);
        }
        let host_dir = folder_host_path(datastores, &folder)?;
        let mut found = Vec::new();
        let mut subfolders = Vec::new();
        for (name, kind, stat) in entries {
            if !matches!(kind, EntryKind::File | EntryKind::Folder) || files::is_partial(&name) {
                continue;
            }
            if kind == EntryKind::Folder && recurse {
                subfolders.push(folder.join(&name));
            }
            if !spec.name_matches(&name) {
                continue;
            }
            let entry = describe(
                datastores, &folder, &host_dir, name, kind, &stat, disk_users,
            );
            if let Some(entry) = spec.select(entry) {
                found.push(entry);
            }
        }
        spec.order(&mut found);
        results.push(FolderResult {
            folder,
            files: found,
        });
        pending.extend(subfolders.into_iter().rev());
    }
    Ok(results)
}

fn folder_host_path(
    datastores: &[DatastoreDir],
    folder: &DatastorePath,
) -> Result<PathBuf, FileError> {
    let io = |source| FileError::Io {
        path: folder.to_string(),
        source,
    };
    let handle = folder.open(datastores, Access::Directory)?;
    beneath::host_path(&handle).map_err(io)
}

impl Spec {
    fn name_matches(&self, name: &str) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let fold = |s: &str| {
            if self.case_insensitive {
                s.to_lowercase()
            } else {
                s.to_string()
            }
        };
        let name: Vec<char> = fold(name).chars().collect();
        self.patterns.iter().any(|p| {
            let pattern: Vec<char> = fold(p).chars().collect();
            glob(&pattern, &name)
        })
    }

    /// The entry with the first query matching it; `None` when none does.
    fn select(&self, mut entry: Found) -> Option<Found> {
        if self.queries.is_empty() {
            return Some(entry);
        }
        entry.matched_by = Some(self.queries.iter().position(|q| q.matches(&entry))?);
        Some(entry)
    }

    fn order(&self, found: &mut [Found]) {
        found.sort_by(|a, b| {
            let folder_rank = |f: &Found| u8::from(f.file_type != FileType::Folder);
            let by_kind = if self.folders_first {
                folder_rank(a).cmp(&folder_rank(b))
            } else {
                std::cmp::Ordering::Equal
            };
            by_kind.then_with(|| a.name.cmp(&b.name))
        });
    }
}

/// Whether `name` matches `pattern` (`*` any run, `?` any one character).
fn glob(pattern: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match backtrack {
                Some((star, at)) => {
                    p = star + 1;
                    n = at + 1;
                    backtrack = Some((star, at + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

fn describe(
    datastores: &[DatastoreDir],
    folder: &DatastorePath,
    host_dir: &Path,
    name: String,
    kind: EntryKind,
    stat: &FileStat,
    disk_users: &HashMap<PathBuf, DiskUser>,
) -> Found {
    let file_type = FileType::of(&name, kind);
    let path = folder.join(&name);
    let disk = (file_type == FileType::Disk).then(|| {
        let user = disk_users.get(&host_dir.join(&name)).cloned();
        disk_facts(datastores, &path, stat, user)
    });
    let config_version = (file_type == FileType::Config)
        .then(|| config_version(datastores, &path))
        .flatten();
    Found {
        name,
        file_type,
        matched_by: None,
        size: stat.st_size,
        modified_micros: stat.st_mtime * 1_000_000 + stat.st_mtime_nsec / 1000,
        uid: stat.st_uid,
        disk,
        config_version,
    }
}

/// Reads at most `limit` bytes of the file at `path` (opened through the resolver).
fn read_head(datastores: &[DatastoreDir], path: &DatastorePath, limit: u64) -> Option<Vec<u8>> {
    let file = path.open(datastores, Access::Read).ok()?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// A disk's capacity and provisioning from its header: qcow2 (virtual size at byte 24),
/// sparse VMDK (`KDMV`, capacity in sectors at byte 12); any other file is a raw disk, as
/// large as it is. A header that cannot be read leaves the capacity unknown.
fn disk_facts(
    datastores: &[DatastoreDir],
    path: &DatastorePath,
    stat: &FileStat,
    user: Option<DiskUser>,
) -> DiskFacts {
    let head = read_head(datastores, path, HEADER_BYTES).unwrap_or_default();
    let field = |at: usize| {
        head.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
    };
    let (capacity, thin) = match head.get(..4) {
        Some(b"QFI\xfb") => (field(24).map(u64::from_be_bytes), true),
        Some(b"KDMV") => (field(12).map(|s| u64::from_le_bytes(s) * 512), true),
        Some(b"# Di") => (None, false),
        _ => (Some(stat.st_size as u64), false),
    };
    DiskFacts {
        capacity,
        thin,
        user,
    }
}

/// The `config.version` a `.vmx` holds.
fn config_version(datastores: &[DatastoreDir], path: &DatastorePath) -> Option<i32> {
    let bytes = read_head(datastores, path, MAX_VMX_BYTES)?;
    let vmx = VmxFile::parse(&String::from_utf8_lossy(&bytes));
    vmx.get("config.version")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let n: Vec<char> = name.chars().collect();
        glob(&p, &n)
    }

    #[test]
    fn globs_match_stars_and_single_characters() {
        assert!(matches("*.iso", "boot.iso"));
        assert!(matches("*", ""));
        assert!(matches("vm?.vmx", "vm1.vmx"));
        assert!(!matches("vm?.vmx", "vm10.vmx"));
        assert!(matches("*a*b*", "xxaxxbxx"));
        assert!(!matches("*.iso", "boot.iso.part"));
        assert!(matches("**x", "x"));
    }

    #[test]
    fn types_follow_extensions() {
        assert_eq!(FileType::of("a.qcow2", EntryKind::File), FileType::Disk);
        assert_eq!(FileType::of("A.VMX", EntryKind::File), FileType::Config);
        assert_eq!(FileType::of("serial.log.3", EntryKind::File), FileType::Log);
        assert_eq!(FileType::of("x.iso", EntryKind::Folder), FileType::Folder);
        assert_eq!(FileType::of("notes.txt", EntryKind::File), FileType::Other);
        assert_eq!(FileType::of("x.3", EntryKind::File), FileType::Other);
    }
}
