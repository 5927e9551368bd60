//! Processes for guest operations: programs started as the authenticated user (through
//! `/bin/sh -c`, as VMware Tools runs them, with the given working directory and complete
//! environment, stdio on /dev/null), the processes of /proc listed with the exit codes and end
//! times of the programs started here that finished, and SIGKILL for termination.

use std::collections::VecDeque;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use super::auth::Account;
use super::identity::{acting_as_other_user, become_user, groups_of};
use super::wire::{GuestFault, GuestOpError, ProcessInfo};

/// Finished programs remembered for `list-processes` (the oldest are forgotten first).
const MAX_FINISHED: usize = 256;
/// Programs started here and still running, at most.
const MAX_RUNNING: usize = 256;

/// A program started by a guest operation.
struct Started {
    child: Child,
    info: ProcessInfo,
}

/// The programs started by guest operations.
#[derive(Default)]
pub struct Programs {
    running: Vec<Started>,
    finished: VecDeque<ProcessInfo>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Single-quotes `text` for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The environment programs get when the request gives none: the login basics.
pub fn default_environment(account: &Account) -> Vec<String> {
    vec![
        format!("HOME={}", account.home),
        format!("USER={}", account.name),
        format!("LOGNAME={}", account.name),
        format!("SHELL={}", account.shell),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    ]
}

fn failed(what: &str, error: std::io::Error) -> GuestOpError {
    let fault = match error.kind() {
        std::io::ErrorKind::NotFound => GuestFault::NotFound,
        std::io::ErrorKind::PermissionDenied => GuestFault::PermissionDenied,
        _ => GuestFault::Failed,
    };
    GuestOpError::new(fault, format!("{what}: {error}"))
}

impl Programs {
    /// Starts `path args` as `account` in `cwd` (default: home) with `env` (default:
    /// [`default_environment`]); returns its pid.
    pub fn start(
        &mut self,
        account: &Account,
        path: &str,
        args: &str,
        cwd: Option<&str>,
        env: &[String],
    ) -> Result<u64, GuestOpError> {
        self.reap();
        if self.running.len() >= MAX_RUNNING {
            return Err(GuestOpError::new(
                GuestFault::Failed,
                format!("{MAX_RUNNING} programs started by guest operations are still running"),
            ));
        }
        let program = std::fs::metadata(path).map_err(|e| failed(path, e))?;
        if !program.is_file() {
            return Err(GuestOpError::new(
                GuestFault::NotAFile,
                format!("{path} is not a file"),
            ));
        }
        let cwd = cwd.unwrap_or(&account.home);
        if !std::path::Path::new(cwd).is_dir() {
            return Err(GuestOpError::new(
                GuestFault::NotFound,
                format!("no directory {cwd}"),
            ));
        }
        let cmd_line = if args.is_empty() {
            shell_quote(path)
        } else {
            format!("{} {args}", shell_quote(path))
        };
        let env = if env.is_empty() {
            default_environment(account)
        } else {
            env.to_vec()
        };
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&cmd_line)
            .current_dir(cwd)
            .env_clear()
            .envs(env.iter().filter_map(|pair| pair.split_once('=')))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if acting_as_other_user(account)? {
            let (uid, gid, groups) = (account.uid, account.gid, groups_of(account));
            // SAFETY: the closure runs in the forked child before exec and only makes raw
            // system calls (no allocation, no locks).
            unsafe {
                command.pre_exec(move || become_user(uid, gid, &groups));
            }
        }
        let child = command
            .spawn()
            .map_err(|e| failed("cannot start /bin/sh", e))?;
        let pid = u64::from(child.id());
        self.running.push(Started {
            child,
            info: ProcessInfo {
                pid,
                name: path.rsplit('/').next().unwrap_or(path).to_string(),
                owner: account.name.clone(),
                cmd_line: format!("{path} {args}").trim_end().to_string(),
                start_ms: now_ms(),
                end_ms: None,
                exit_code: None,
            },
        });
        Ok(pid)
    }

    /// Collects the exit status of programs that finished.
    fn reap(&mut self) {
        let mut index = 0;
        while index < self.running.len() {
            let status = self.running[index].child.try_wait();
            let Ok(Some(status)) = status else {
                index += 1;
                continue;
            };
            let mut info = self.running.swap_remove(index).info;
            info.end_ms = Some(now_ms());
            // Killed by a signal: the shell convention, 128 + signal.
            info.exit_code = status.code().or(status.signal().map(|s| 128 + s));
            if self.finished.len() >= MAX_FINISHED {
                self.finished.pop_front();
            }
            self.finished.push_back(info);
        }
    }

    /// The guest's processes (`pids` only, when given): finished programs started here with
    /// their exit codes, then every process in /proc.
    pub fn list(&mut self, pids: &[u64]) -> Vec<ProcessInfo> {
        self.reap();
        let wanted = |pid: u64| pids.is_empty() || pids.contains(&pid);
        let mut listed: Vec<ProcessInfo> = self
            .finished
            .iter()
            .filter(|p| wanted(p.pid))
            .cloned()
            .collect();
        let started: Vec<&ProcessInfo> = self.running.iter().map(|s| &s.info).collect();
        for pid in proc_pids().into_iter().filter(|&pid| wanted(pid)) {
            match started.iter().find(|s| s.pid == pid) {
                Some(info) => listed.push((*info).clone()),
                None => listed.extend(proc_process(pid)),
            }
        }
        listed
    }

    /// Kills process `pid` (SIGKILL), which `account` must own unless it is root.
    pub fn terminate(&mut self, account: &Account, pid: u64) -> Result<(), GuestOpError> {
        let not_found =
            || GuestOpError::new(GuestFault::ProcessNotFound, format!("no process {pid}"));
        let pid = i32::try_from(pid).map_err(|_| not_found())?;
        let owner = proc_owner(pid).ok_or_else(not_found)?;
        if account.uid != 0 && owner != account.uid {
            return Err(GuestOpError::new(
                GuestFault::PermissionDenied,
                format!("process {pid} belongs to another user"),
            ));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| match e {
            nix::errno::Errno::ESRCH => not_found(),
            e => GuestOpError::new(GuestFault::PermissionDenied, format!("kill {pid}: {e}")),
        })
    }
}

/// The numeric entries of /proc.
fn proc_pids() -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u64> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

fn proc_owner(pid: i32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// A /proc process as `list-processes` reports it.
fn proc_process(pid: u64) -> Option<ProcessInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..." — comm may hold spaces and parentheses.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let start_ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let cmd_line = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|part| !part.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let uid = proc_owner(i32::try_from(pid).ok()?)?;
    Some(ProcessInfo {
        pid,
        name,
        owner: user_name(uid),
        cmd_line,
        start_ms: boot_ms() + (start_ticks * 1000 / clock_ticks()) as i64,
        end_ms: None,
        exit_code: None,
    })
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |t| t.max(1) as u64)
}

/// When the guest booted, milliseconds since the epoch (/proc/stat's btime).
fn boot_ms() -> i64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            stat.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok())
        })
        .map_or(0, |secs| secs * 1000)
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}
