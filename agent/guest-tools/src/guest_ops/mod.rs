//! Guest operations (vSphere's GuestOperationsManager, served in the guest): [`wire`] is what
//! travels, [`auth`] checks credentials, [`identity`] acts as the user, [`processes`] and
//! [`files`] do the work. [`SystemGuestOps`] is the real guest's implementation of
//! [`GuestOperations`], which the daemon calls for each `guest-op` request.

pub mod auth;
pub mod files;
pub mod identity;
pub mod processes;
pub mod wire;

use serde::Serialize;
use serde_json::Value;

use auth::{Account, Accounts};
use identity::run_as;
use processes::{default_environment, Programs};
use wire::{
    EnvironmentResult, GuestAuth, GuestFault, GuestOp, GuestOpError, GuestOpsOffer, PathResult,
    PidResult, ProcessList, TicketResult, MAX_PATH_BYTES, TOOLS_CHUNK_BYTES,
};

/// What serves guest operations in the daemon; tests substitute their own.
pub trait GuestOperations: Send {
    /// What the hello offers.
    fn offer(&self) -> GuestOpsOffer;
    /// Checks `auth` and carries out `op`, returning its result.
    fn run(&mut self, auth: &GuestAuth, op: GuestOp) -> Result<Option<Value>, GuestOpError>;
}

/// One set of guest operations shared by successive connections (the daemon reopens its
/// device when the host end goes away): programs started and tickets handed out outlive a
/// reconnect.
impl<T: GuestOperations> GuestOperations for std::sync::Arc<std::sync::Mutex<T>> {
    fn offer(&self) -> GuestOpsOffer {
        self.lock().unwrap_or_else(|p| p.into_inner()).offer()
    }

    fn run(&mut self, auth: &GuestAuth, op: GuestOp) -> Result<Option<Value>, GuestOpError> {
        self.lock().unwrap_or_else(|p| p.into_inner()).run(auth, op)
    }
}

/// The real guest: the system's accounts, processes and files.
pub struct SystemGuestOps {
    accounts: Accounts,
    programs: Programs,
}

impl SystemGuestOps {
    /// Guest operations checking credentials against `accounts`.
    pub fn new(accounts: Accounts) -> SystemGuestOps {
        SystemGuestOps {
            accounts,
            programs: Programs::default(),
        }
    }
}

fn result(value: impl Serialize) -> Result<Option<Value>, GuestOpError> {
    serde_json::to_value(value)
        .map(Some)
        .map_err(|e| GuestOpError::new(GuestFault::Failed, e.to_string()))
}

impl GuestOperations for SystemGuestOps {
    fn offer(&self) -> GuestOpsOffer {
        GuestOpsOffer {
            chunk_bytes: TOOLS_CHUNK_BYTES,
        }
    }

    fn run(&mut self, auth: &GuestAuth, op: GuestOp) -> Result<Option<Value>, GuestOpError> {
        if op.paths().iter().any(|p| p.len() > MAX_PATH_BYTES) {
            return Err(GuestOpError::new(
                GuestFault::BadRequest,
                "a path is too long",
            ));
        }
        let account = self.accounts.authenticate(auth)?;
        match op {
            GuestOp::ValidateCredentials => Ok(None),
            GuestOp::AcquireTicket => result(TicketResult {
                ticket: self.accounts.acquire_ticket(&account)?,
            }),
            GuestOp::ReleaseTicket => {
                self.accounts.release(auth);
                Ok(None)
            }
            GuestOp::StartProgram {
                path,
                args,
                cwd,
                env,
            } => result(PidResult {
                pid: self
                    .programs
                    .start(&account, &path, &args, cwd.as_deref(), &env)?,
            }),
            GuestOp::ListProcesses { pids } => result(ProcessList {
                processes: self.programs.list(&pids),
            }),
            GuestOp::TerminateProcess { pid } => {
                self.programs.terminate(&account, pid).map(|()| None)
            }
            GuestOp::ReadEnvironment { names } => result(EnvironmentResult {
                vars: environment(&account, &names),
            }),
            file_op => run_as(&account, || file_operation(file_op)),
        }
    }
}

/// The default environment's variables named in `names` (all when empty).
fn environment(account: &Account, names: &[String]) -> Vec<String> {
    default_environment(account)
        .into_iter()
        .filter(|pair| {
            let name = pair.split_once('=').map_or(pair.as_str(), |(n, _)| n);
            names.is_empty() || names.iter().any(|n| n == name)
        })
        .collect()
}

/// The file operations, run as the user.
fn file_operation(op: GuestOp) -> Result<Option<Value>, GuestOpError> {
    match op {
        GuestOp::MakeDirectory { path, parents } => {
            files::make_directory(&path, parents).map(|()| None)
        }
        GuestOp::DeleteFile { path } => files::delete_file(&path).map(|()| None),
        GuestOp::DeleteDirectory { path, recursive } => {
            files::delete_directory(&path, recursive).map(|()| None)
        }
        GuestOp::MoveFile {
            from,
            to,
            overwrite,
        } => files::move_file(&from, &to, overwrite).map(|()| None),
        GuestOp::MoveDirectory { from, to } => files::move_directory(&from, &to).map(|()| None),
        GuestOp::CreateTemporary {
            prefix,
            suffix,
            dir,
            directory,
        } => result(PathResult {
            path: files::create_temporary(&prefix, &suffix, dir.as_deref(), directory)?,
        }),
        GuestOp::ListFiles {
            path,
            index,
            max,
            pattern,
        } => result(files::list(&path, index, max, pattern.as_deref())?),
        GuestOp::StatFile { path } => result(files::stat(&path)?),
        GuestOp::ChangeAttributes {
            path,
            mode,
            uid,
            gid,
            mtime,
            atime,
        } => files::change_attributes(&path, mode, (uid, gid), (mtime, atime)).map(|()| None),
        GuestOp::ReadFile {
            path,
            offset,
            length,
        } => result(files::read_chunk(
            &path,
            offset,
            length.min(TOOLS_CHUNK_BYTES),
        )?),
        GuestOp::WriteFile {
            path,
            offset,
            data,
            overwrite,
        } => files::write_chunk(&path, offset, &data, overwrite).map(|()| None),
        other => Err(GuestOpError::new(
            GuestFault::Unsupported,
            format!("{other:?} is not a file operation"),
        )),
    }
}
