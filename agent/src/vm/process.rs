//! One `vireo-vmm` process: started in its own session (so it outlives vireod, as a VM on ESXi
//! outlives hostd) with stderr appended to the VM folder's `vireo-vmm.log`, recorded in a pid
//! file, re-adopted after a vireod restart, and waited for through a pidfd. How it ended comes
//! from its exit record (`vireo-vmm: exit {...}`, its last log line) or, failing that, its status.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use vireo_vmm_protocol::exit::{ExitRecord, VmExit, EXIT_RECORD_PREFIX, EXIT_START_FAILED};

use super::paced_delete::{AfterExit, Maps};

/// How a VMM process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmExit {
    /// Powered off; `by_guest` when the guest did it (S5), else the host asked.
    PoweredOff {
        /// Whether the guest powered itself off.
        by_guest: bool,
    },
    /// Reset (the caller restarts the VM); `by_guest` for a guest reboot or triple fault.
    Reset {
        /// Whether the guest caused it.
        by_guest: bool,
    },
    /// Anything else: crashed, killed, failed to start. The text says what happened.
    Failed(String),
}

/// A running (or just ended) VMM.
pub struct VmmProcess {
    /// Its process id.
    pub pid: i32,
    pidfd: Arc<OwnedFd>,
    /// Started by this vireod (so it is reaped here for its status), not re-adopted.
    our_child: bool,
    log: PathBuf,
    log_offset: u64,
    /// The saved-state folders to delete once it has exited.
    pub after_exit: AfterExit,
}

/// The pid file: pid and the process's start time (so a reused pid is not mistaken for it).
fn pid_file(run_dir: &Path) -> PathBuf {
    run_dir.join("vmm.pid")
}

/// Replaces the pid file atomically (a reader sees the old or the new one) but without syncing:
/// it only matters while the process runs, which a host crash ends.
fn write_pid_file(run_dir: &Path, text: &str) -> std::io::Result<()> {
    let partial = pid_file(run_dir).with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, pid_file(run_dir))
}

/// posix_spawn (no fork of vireod) of `binary args...` in a session of its own (so signals
/// aimed at vireod's process group — Ctrl-C, service stop — do not reach it), with stdin and
/// stdout on `null`, stderr on `stderr` and the descriptors `inherit` at their own numbers: a
/// dup2 onto itself clears close-on-exec in the child alone, so no other child inherits them.
fn spawn_detached(
    binary: &Path,
    args: &[std::ffi::OsString],
    inherit: &[RawFd],
    null: BorrowedFd,
    stderr: BorrowedFd,
) -> std::io::Result<i32> {
    let c_string = |text: &std::ffi::OsStr| {
        CString::new(text.as_bytes()).map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, e))
    };
    let argv = std::iter::once(binary.as_os_str())
        .chain(args.iter().map(|a| a.as_os_str()))
        .map(c_string)
        .collect::<std::io::Result<Vec<_>>>()?;
    let envp = std::env::vars_os()
        .map(|(key, value)| {
            let mut pair = key;
            pair.push("=");
            pair.push(value);
            c_string(&pair)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut actions = PosixSpawnFileActions::init()?;
    actions.add_dup2(null.as_raw_fd(), 0)?;
    actions.add_dup2(null.as_raw_fd(), 1)?;
    actions.add_dup2(stderr.as_raw_fd(), 2)?;
    for &fd in inherit {
        actions.add_dup2(fd, fd)?;
    }
    let mut attr = PosixSpawnAttr::init()?;
    // glibc's POSIX_SPAWN_SETSID (nix names only the POSIX flags); SIGPIPE, which Rust
    // ignores in vireod, back to its default, and no signal blocked.
    let setsid = PosixSpawnFlags::from_bits_retain(libc::POSIX_SPAWN_SETSID.into());
    attr.set_flags(
        setsid | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK,
    )?;
    let mut sigpipe = SigSet::empty();
    sigpipe.add(Signal::SIGPIPE);
    attr.set_sigdefault(&sigpipe)?;
    attr.set_sigmask(&SigSet::empty())?;
    Ok(posix_spawn(binary, &actions, &attr, &argv, &envp)?.as_raw())
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // nix has no pidfd_open, so this is the raw system call.
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Field 22 of /proc/<pid>/stat: start time in clock ticks since boot.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

impl VmmProcess {
    /// Starts `binary args...` detached from vireod, logging to `log`, with the descriptors
    /// `inherit` open at the same numbers; records it in `run_dir`.
    pub fn spawn(
        binary: &Path,
        args: &[std::ffi::OsString],
        inherit: &[RawFd],
        run_dir: &Path,
        log: &Path,
    ) -> std::io::Result<VmmProcess> {
        let process = VmmProcess::spawn_unrecorded(binary, args, inherit, log)?;
        process.record(run_dir)?;
        Ok(process)
    }

    /// As [`VmmProcess::spawn`] without the pid file: a standby VMM, which [`VmmProcess::record`]
    /// records once it becomes the VM's VMM.
    pub fn spawn_unrecorded(
        binary: &Path,
        args: &[std::ffi::OsString],
        inherit: &[RawFd],
        log: &Path,
    ) -> std::io::Result<VmmProcess> {
        let log_offset = log_len(log);
        // Both above 2 (a duplicate takes the lowest free number from 3), so the spawn's dup2
        // onto 0, 1 and 2 cannot overwrite one with the other.
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(log)?
            .try_clone()?;
        let null = std::fs::File::open("/dev/null")?.try_clone()?;
        let pid = spawn_detached(binary, args, inherit, null.as_fd(), stderr.as_fd())?;
        let pidfd = pidfd_open(pid)?;
        Ok(VmmProcess {
            pid,
            pidfd: Arc::new(pidfd),
            our_child: true,
            log: log.to_owned(),
            log_offset,
            after_exit: AfterExit::new(Maps::Nothing),
        })
    }

    /// Records the process in `run_dir`'s pid file (so a restarted vireod adopts it).
    pub fn record(&self, run_dir: &Path) -> std::io::Result<()> {
        let started = start_time(self.pid).unwrap_or(0);
        write_pid_file(run_dir, &format!("{} {started}\n", self.pid))
    }

    /// The VMM recorded in `run_dir`, if that very process is still running.
    pub fn adopt(run_dir: &Path, log: &Path) -> Option<VmmProcess> {
        let text = std::fs::read_to_string(pid_file(run_dir)).ok()?;
        let mut fields = text.split_whitespace();
        let pid: i32 = fields.next()?.parse().ok()?;
        let started: u64 = fields.next()?.parse().ok()?;
        let pidfd = pidfd_open(pid).ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = String::from_utf8_lossy(&cmdline).contains(&*run_dir.to_string_lossy());
        if start_time(pid) != Some(started) || !ours {
            return None;
        }
        Some(VmmProcess {
            pid,
            pidfd: Arc::new(pidfd),
            our_child: false,
            log: log.to_owned(),
            log_offset: log_len(log),
            after_exit: AfterExit::new(Maps::Unknown),
        })
    }

    /// A handle that can kill the process while another thread waits for it.
    pub fn killer(&self) -> VmmKiller {
        VmmKiller {
            pidfd: self.pidfd.clone(),
        }
    }

    /// Puts every thread of the process under SCHED_IDLE: it runs only on CPU time nothing
    /// else wants (a VMM that let go of its VM frees its memory without slowing the next one).
    pub fn run_when_idle(&self) {
        // The pidfd pins nothing by number: look only while it says the process lives.
        if self.has_exited() {
            return;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return;
        };
        let param = libc::sched_param { sched_priority: 0 };
        for tid in tasks.filter_map(|t| t.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
            // SAFETY: sched_setscheduler reads `param`, which outlives the call; a thread that
            // ended meanwhile gives ESRCH, which changes nothing.
            unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) };
        }
    }

    /// Waits up to `timeout` for the pidfd to say the process ended.
    fn poll_exit(&self, timeout: PollTimeout) -> nix::Result<bool> {
        let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, timeout).map(|ready| ready == 1)
    }

    /// Whether the process has ended (without reaping it).
    pub fn has_exited(&self) -> bool {
        self.poll_exit(PollTimeout::ZERO).unwrap_or(false)
    }

    /// Blocks until the process ends and says how.
    pub fn wait(&self) -> VmmExit {
        while self.poll_exit(PollTimeout::NONE).is_err() {}
        let status = self.our_child.then(|| self.reap()).flatten();
        let record = self.exit_record();
        classify(record.as_ref(), status, &self.log_tail())
    }

    /// Collects the ended child's status (once: later calls get None).
    fn reap(&self) -> Option<std::process::ExitStatus> {
        let raw = match waitid(Id::PIDFd(self.pidfd.as_fd()), WaitPidFlag::WEXITED).ok()? {
            WaitStatus::Exited(_, code) => code << 8,
            WaitStatus::Signaled(_, signal, _) => signal as i32,
            _ => return None,
        };
        Some(std::process::ExitStatus::from_raw(raw))
    }

    fn new_log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            if file.seek(SeekFrom::Start(self.log_offset)).is_ok() {
                let _ = file.take(1 << 20).read_to_string(&mut text);
            }
        }
        text
    }

    /// The exit record this run wrote, if any.
    fn exit_record(&self) -> Option<ExitRecord> {
        self.new_log_text()
            .lines()
            .rev()
            .find_map(ExitRecord::from_line)
    }

    /// The last non-record line this run logged (why it could not start, usually).
    fn log_tail(&self) -> String {
        self.new_log_text()
            .lines()
            .rev()
            .find(|l| !l.starts_with(EXIT_RECORD_PREFIX) && !l.trim().is_empty())
            .unwrap_or_default()
            .to_string()
    }
}

/// Kills a VMM by its pidfd (no pid-reuse race).
#[derive(Clone)]
pub struct VmmKiller {
    pidfd: Arc<OwnedFd>,
}

impl VmmKiller {
    /// Sends `signal` (SIGKILL for TerminateVM).
    pub fn signal(&self, signal: Signal) {
        // nix has no pidfd_send_signal, so this is the raw system call.
        // SAFETY: pidfd_send_signal with a valid pidfd, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal as i32,
                std::ptr::null::<std::ffi::c_void>(),
                0,
            );
        }
    }
}

/// Reads the exit record (preferred) or the process status into a [`VmmExit`].
fn classify(
    record: Option<&ExitRecord>,
    status: Option<std::process::ExitStatus>,
    log_tail: &str,
) -> VmmExit {
    if let Some(record) = record {
        return match &record.exit {
            VmExit::GuestPowerOff => VmmExit::PoweredOff { by_guest: true },
            VmExit::HostPowerOff => VmmExit::PoweredOff { by_guest: false },
            VmExit::GuestReset { .. } => VmmExit::Reset { by_guest: true },
            VmExit::HostReset => VmmExit::Reset { by_guest: false },
            VmExit::Killed { signal } => {
                VmmExit::Failed(format!("the VM's process was stopped by signal {signal}"))
            }
            VmExit::Crashed { detail } => {
                VmmExit::Failed(format!("the virtual machine crashed: {detail}"))
            }
        };
    }
    match status {
        Some(s) if s.code() == Some(EXIT_START_FAILED.into()) => {
            VmmExit::Failed(format!("the VMM could not start: {log_tail}"))
        }
        Some(s) if s.signal().is_some() => VmmExit::Failed(format!(
            "the VM's process was killed by signal {}",
            s.signal().unwrap_or(0)
        )),
        Some(s) => VmmExit::Failed(format!(
            "the VM's process exited with status {} without an exit record",
            s.code().unwrap_or(-1)
        )),
        None => VmmExit::Failed(
            "the VM's process ended without an exit record (killed or crashed)".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_records_and_statuses_classify() {
        let record = |exit| ExitRecord {
            exit,
            boot_marker_ms: None,
        };
        assert_eq!(
            classify(Some(&record(VmExit::GuestPowerOff)), None, ""),
            VmmExit::PoweredOff { by_guest: true }
        );
        assert_eq!(
            classify(Some(&record(VmExit::HostReset)), None, ""),
            VmmExit::Reset { by_guest: false }
        );
        let crash = VmExit::Crashed {
            detail: "triple fault".into(),
        };
        assert!(matches!(
            classify(Some(&record(crash)), None, ""),
            VmmExit::Failed(m) if m.contains("crashed: triple fault")
        ));
        let killed = std::process::ExitStatus::from_raw(9);
        assert!(matches!(
            classify(None, Some(killed), ""),
            VmmExit::Failed(m) if m.contains("signal 9")
        ));
        let no_start = std::process::ExitStatus::from_raw(1 << 8);
        assert!(matches!(
            classify(None, Some(no_start), "vireo-vmm: no such kernel"),
            VmmExit::Failed(m) if m.contains("no such kernel")
        ));
    }

    #[test]
    fn a_spawned_process_is_adopted_and_its_end_seen() {
        let dir = std::env::temp_dir().join(format!("vireo-vmm-process-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        // The run dir on the command line (as `$0`) marks the process as ours.
        let shell = |script: &str| -> Vec<std::ffi::OsString> {
            vec!["-c".into(), script.into(), dir.clone().into()]
        };
        let sh = Path::new("/bin/sh");
        let process = VmmProcess::spawn(sh, &shell("sleep 600; exit 0"), &[], &dir, &log).unwrap();
        // posix_spawn may return while the exec is still under way (its command line not yet
        // set); a vireod adopts VMMs long after that.
        let cmdline = format!("/proc/{}/cmdline", process.pid);
        while std::fs::read(&cmdline).unwrap().is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let adopted = VmmProcess::adopt(&dir, &log).expect("still running");
        assert_eq!(adopted.pid, process.pid);
        assert!(!adopted.has_exited());
        adopted.killer().signal(Signal::SIGKILL);
        assert!(matches!(process.wait(), VmmExit::Failed(m) if m.contains("signal 9")));
        assert!(adopted.has_exited());
        assert!(VmmProcess::adopt(&dir, &log).is_none());

        let failing = shell("echo cannot start >&2; exit 1");
        let process = VmmProcess::spawn(sh, &failing, &[], &dir, &log).unwrap();
        assert!(matches!(process.wait(), VmmExit::Failed(m) if m.contains("cannot start")));

        // A handed file arrives at its own number (close-on-exec cleared in the child alone).
        std::fs::write(dir.join("handed"), "from vireod").unwrap();
        let handed = std::fs::File::open(dir.join("handed")).unwrap();
        let fd = handed.as_raw_fd();
        let reading = shell(&format!("echo \"read: $(cat <&{fd})\" >&2; exit 1"));
        let process = VmmProcess::spawn(sh, &reading, &[fd], &dir, &log).unwrap();
        assert!(matches!(process.wait(), VmmExit::Failed(m) if m.contains("read: from vireod")));
        let reading = shell(&format!("cat <&{fd} >&2 || echo not handed >&2; exit 1"));
        let process = VmmProcess::spawn(sh, &reading, &[], &dir, &log).unwrap();
        assert!(matches!(process.wait(), VmmExit::Failed(m) if m.contains("not handed")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_process_let_go_of_runs_only_when_the_cpu_is_idle() {
        let dir = std::env::temp_dir().join(format!("vireo-vmm-idle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let args: Vec<std::ffi::OsString> = vec!["-c".into(), "sleep 600".into()];
        let sh = Path::new("/bin/sh");
        let process = VmmProcess::spawn(sh, &args, &[], &dir, &dir.join("log")).unwrap();
        // The scheduling policy is field 41 of /proc/<pid>/stat (after the parenthesised name).
        let policy = || -> String {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", process.pid)).unwrap();
            stat.rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .nth(38)
                .unwrap()
                .to_string()
        };
        assert_eq!(policy(), "0", "SCHED_OTHER at start");
        process.run_when_idle();
        assert_eq!(policy(), libc::SCHED_IDLE.to_string());
        process.killer().signal(Signal::SIGKILL);
        process.wait();
        process.run_when_idle();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
