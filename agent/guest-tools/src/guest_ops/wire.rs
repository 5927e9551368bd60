//! The guest-operation messages of the tools protocol (version 2, docs/tools-protocol.md): the
//! host's `guest-op` request (credentials and one operation, flat fields so that a guest with
//! a flat JSON reader can serve it), the guest's `guest-op-reply`, and the results each
//! operation returns. Both ends link this module.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Raw bytes per file-transfer chunk vireo-tools offers (base64 keeps a chunk's line under
/// [`crate::protocol::MAX_LINE_BYTES`]).
pub const TOOLS_CHUNK_BYTES: u32 = 32 * 1024;
/// Longest path either side accepts in a guest operation.
pub const MAX_PATH_BYTES: usize = 4096;

/// What a guest offers for guest operations, in its hello (absent: it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestOpsOffer {
    /// Most raw bytes a `read-file` answers or a `write-file` carries.
    pub chunk_bytes: u32,
}

/// Credentials a guest operation runs with; the guest checks them, the host only forwards them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GuestAuth {
    /// A guest account's name and password.
    Password {
        /// The account name.
        user: String,
        /// Its password.
        password: String,
    },
    /// A ticket from `acquire-ticket`.
    Ticket {
        /// The ticket.
        ticket: String,
    },
}

impl fmt::Debug for GuestAuth {
    /// Never shows the password or ticket.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestAuth::Password { user, .. } => write!(f, "Password {{ user: {user:?}, .. }}"),
            GuestAuth::Ticket { .. } => f.write_str("Ticket { .. }"),
        }
    }
}

/// One guest operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum GuestOp {
    /// Only checks the credentials.
    ValidateCredentials,
    /// Checks the credentials and returns a ticket standing for them ([`TicketResult`]).
    AcquireTicket,
    /// Forgets the ticket the request authenticates with.
    ReleaseTicket,
    /// Starts `path args` (through `/bin/sh -c`, as VMware Tools does) ([`PidResult`]).
    StartProgram {
        /// The program.
        path: String,
        /// Its arguments, one command-line string.
        #[serde(default)]
        args: String,
        /// Working directory (default: the user's home).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        /// The complete environment, `NAME=value` (empty: the guest's default).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        env: Vec<String>,
    },
    /// Processes, with the exit codes of finished programs started here ([`ProcessList`]).
    ListProcesses {
        /// Only these (empty: all).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pids: Vec<u64>,
    },
    /// Kills a process.
    TerminateProcess {
        /// Its id.
        pid: u64,
    },
    /// The environment programs start with ([`EnvironmentResult`]).
    ReadEnvironment {
        /// Only these names (empty: all).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        names: Vec<String>,
    },
    /// Makes a directory.
    MakeDirectory {
        /// The directory.
        path: String,
        /// Also make missing parents.
        #[serde(default)]
        parents: bool,
    },
    /// Deletes a file (not a directory).
    DeleteFile {
        /// The file.
        path: String,
    },
    /// Deletes a directory.
    DeleteDirectory {
        /// The directory.
        path: String,
        /// With everything in it.
        #[serde(default)]
        recursive: bool,
    },
    /// Renames a file.
    MoveFile {
        /// From.
        from: String,
        /// To.
        to: String,
        /// Replace an existing file at `to`.
        #[serde(default)]
        overwrite: bool,
    },
    /// Renames a directory.
    MoveDirectory {
        /// From.
        from: String,
        /// To (must not exist).
        to: String,
    },
    /// Creates a new empty file or directory with a unique name ([`PathResult`]).
    CreateTemporary {
        /// Name prefix.
        #[serde(default)]
        prefix: String,
        /// Name suffix.
        #[serde(default)]
        suffix: String,
        /// Where (default: the guest's temporary directory).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir: Option<String>,
        /// A directory rather than a file.
        #[serde(default)]
        directory: bool,
    },
    /// A directory's entries (or one file's) ([`FileList`]).
    ListFiles {
        /// The directory or file.
        path: String,
        /// Entries to skip.
        #[serde(default)]
        index: u32,
        /// Most entries to return.
        #[serde(default)]
        max: u32,
        /// Only names matching this (`*` and `?` wildcards).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pattern: Option<String>,
    },
    /// One file's facts ([`FileEntry`], its `name` the path given).
    StatFile {
        /// The file.
        path: String,
    },
    /// Changes a file's attributes; unset ones stay.
    ChangeAttributes {
        /// The file.
        path: String,
        /// Permission bits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
        /// Owner.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        /// Group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gid: Option<u32>,
        /// Modification time, seconds since the epoch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtime: Option<i64>,
        /// Access time, seconds since the epoch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        atime: Option<i64>,
    },
    /// Reads up to `length` bytes at `offset` of a regular file ([`ChunkResult`]).
    ReadFile {
        /// The file.
        path: String,
        /// Where.
        offset: u64,
        /// At most this many (capped by the offer's chunk size).
        length: u32,
    },
    /// Writes a chunk: offset 0 creates (or, with `overwrite`, truncates) the file; a later
    /// chunk must start at its current end.
    WriteFile {
        /// The file.
        path: String,
        /// Where (0 or the file's size).
        offset: u64,
        /// The bytes, base64.
        data: String,
        /// Replace an existing file (offset 0 only).
        #[serde(default)]
        overwrite: bool,
    },
}

impl GuestOp {
    /// The paths the operation names (each is bounded by [`MAX_PATH_BYTES`]).
    pub fn paths(&self) -> Vec<&str> {
        match self {
            GuestOp::StartProgram { path, cwd, .. } => {
                let mut paths = vec![path.as_str()];
                paths.extend(cwd.as_deref());
                paths
            }
            GuestOp::MakeDirectory { path, .. }
            | GuestOp::DeleteFile { path }
            | GuestOp::DeleteDirectory { path, .. }
            | GuestOp::ListFiles { path, .. }
            | GuestOp::StatFile { path }
            | GuestOp::ChangeAttributes { path, .. }
            | GuestOp::ReadFile { path, .. }
            | GuestOp::WriteFile { path, .. } => vec![path],
            GuestOp::MoveFile { from, to, .. } | GuestOp::MoveDirectory { from, to } => {
                vec![from, to]
            }
            GuestOp::CreateTemporary { dir, .. } => dir.as_deref().into_iter().collect(),
            _ => Vec::new(),
        }
    }
}

/// Why a guest operation failed, as the vSphere fault it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestFault {
    /// Wrong user, password or ticket (InvalidGuestLogin).
    InvalidLogin,
    /// The user may not do this (GuestPermissionDenied).
    PermissionDenied,
    /// No such file or directory (FileNotFound).
    NotFound,
    /// The target exists (FileAlreadyExists).
    AlreadyExists,
    /// A path component or the target is not a directory (NotADirectory).
    NotADirectory,
    /// The target is not a regular file (NotAFile).
    NotAFile,
    /// The directory is not empty (DirectoryNotEmpty).
    DirectoryNotEmpty,
    /// No such process (GuestProcessNotFound).
    ProcessNotFound,
    /// The guest has no room (NoDiskSpace).
    NoSpace,
    /// The request is malformed or out of bounds (InvalidArgument).
    BadRequest,
    /// This guest cannot do it (OperationNotSupportedByGuest).
    Unsupported,
    /// Anything else (SystemError); unknown kinds read as this.
    #[serde(other)]
    Failed,
}

/// The guest's answer to a `guest-op`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestOpReply {
    /// The request's id.
    pub id: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// Why not (when `ok` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<GuestFault>,
    /// A message for the user (when `ok` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The operation's result (when it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

/// A failed guest operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestOpError {
    /// What kind of failure.
    pub fault: GuestFault,
    /// Its message.
    pub message: String,
}

impl GuestOpError {
    /// A failure of `fault` kind.
    pub fn new(fault: GuestFault, message: impl Into<String>) -> GuestOpError {
        GuestOpError {
            fault,
            message: message.into(),
        }
    }
}

impl GuestOpReply {
    /// The reply to request `id` carrying `outcome`.
    pub fn of(id: u64, outcome: Result<Option<serde_json::Value>, GuestOpError>) -> GuestOpReply {
        match outcome {
            Ok(result) => GuestOpReply {
                id,
                ok: true,
                fault: None,
                error: None,
                result,
            },
            Err(error) => GuestOpReply {
                id,
                ok: false,
                fault: Some(error.fault),
                error: Some(error.message),
                result: None,
            },
        }
    }
}

/// `acquire-ticket`'s result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketResult {
    /// The ticket.
    pub ticket: String,
}

/// `start-program`'s result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidResult {
    /// The new process's id.
    pub pid: u64,
}

/// `create-temporary`'s result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathResult {
    /// The path made.
    pub path: String,
}

/// `read-environment`'s result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentResult {
    /// `NAME=value` strings.
    pub vars: Vec<String>,
}

/// One process of `list-processes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u64,
    /// Program name.
    pub name: String,
    /// Owner's user name.
    pub owner: String,
    /// Full command line.
    pub cmd_line: String,
    /// When it started, milliseconds since the epoch.
    pub start_ms: i64,
    /// When it ended (finished programs started by guest operations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<i64>,
    /// Its exit code (same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// `list-processes`' result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessList {
    /// The processes.
    pub processes: Vec<ProcessInfo>,
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// A regular file (or anything that is not a directory or symlink).
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
}

/// One entry of `list-files`, or `stat-file`'s result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The entry's name (`stat-file`: the path asked about).
    pub name: String,
    /// What it is.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    /// Access time, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atime: Option<i64>,
    /// Permission bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Owner id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `list-files`' result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    /// The entries from `index` on, at most `max`.
    pub files: Vec<FileEntry>,
    /// Entries left after these.
    pub remaining: u64,
}

/// `read-file`'s result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkResult {
    /// The bytes read, base64.
    pub data: String,
    /// The file's size now.
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{read_message, write_message, GuestMessage, HostMessage};

    #[test]
    fn guest_op_requests_are_flat_lines() {
        let request = HostMessage::GuestOp {
            id: 3,
            auth: GuestAuth::Password {
                user: "ann".into(),
                password: "s3cret".into(),
            },
            op: GuestOp::MakeDirectory {
                path: "/tmp/a".into(),
                parents: true,
            },
        };
        let mut wire = Vec::new();
        write_message(&mut wire, &request).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&wire),
            "{\"msg\":\"guest-op\",\"id\":3,\"user\":\"ann\",\"password\":\"s3cret\",\
             \"op\":\"make-directory\",\"path\":\"/tmp/a\",\"parents\":true}\n"
        );
        let read: HostMessage = read_message(&mut &wire[..]).unwrap().unwrap();
        assert_eq!(read, request);
        assert!(!format!("{read:?}").contains("s3cret"));
    }

    #[test]
    fn unknown_fault_kinds_read_as_failed() {
        let line = b"{\"msg\":\"guest-op-reply\",\"id\":1,\"ok\":false,\"fault\":\"new-kind\"}\n";
        let read: GuestMessage = read_message(&mut &line[..]).unwrap().unwrap();
        let GuestMessage::GuestOpReply(reply) = read else {
            panic!("a guest-op-reply")
        };
        assert_eq!(reply.fault, Some(GuestFault::Failed));
    }
}
