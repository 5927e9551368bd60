//! Standby VMMs (`vireo-vmm --standby`, docs/memory.md): a VMM started for a VM ahead of its
//! restore — after a suspend, or while a revert powers the old VMM off — that jails itself,
//! makes its KVM VM and memory slots and waits on a socket pair for the restore's command line
//! and files. A resume then only sends them instead of starting a process. The standby binds
//! nothing and writes no pid file until it is used; when the [`Standby`] is dropped, or vireod
//! ends, its end of the pair closes and the VMM exits, so no standby outlives its vireod.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use vireo_vmm_protocol::VmmArgs;

use super::jail::{self, VmmJail};
use super::process::VmmProcess;
use super::{logs, Vm};
use crate::host::Host;

/// Why a standby could not be started or handed its restore.
#[derive(Debug, thiserror::Error)]
pub enum StandbyError {
    /// The socket pair, jail or process could not be set up.
    #[error("cannot start a standby VMM: {0}")]
    Start(std::io::Error),
    /// The restore could not be sent.
    #[error("cannot hand the restore to the standby VMM: {0}")]
    Send(std::io::Error),
    /// The VM's memory size is not a size a VMM takes.
    #[error("memory size {0} MB out of range")]
    Memory(i64),
}

/// A standby VMM waiting for its restore.
pub struct Standby {
    process: Option<VmmProcess>,
    channel: Option<UnixStream>,
    memory_mb: i64,
}

impl Standby {
    /// Starts a standby VMM for `vm` with `memory_mb` of RAM, jailed as its VMM would be.
    pub fn start(host: &Host, vm: &Vm, memory_mb: i64) -> Result<Standby, StandbyError> {
        let memory_mib = u64::try_from(memory_mb).map_err(|_| StandbyError::Memory(memory_mb))?;
        let (ours, theirs) = UnixStream::pair().map_err(StandbyError::Start)?;
        jail::ensure_private_dir(&vm.run_dir).map_err(StandbyError::Start)?;
        let mut args = VmmArgs {
            standby: Some(theirs.as_raw_fd()),
            memory_mib,
            // Named so that the process is known as this VM's (see `VmmProcess::adopt`).
            control: Some(vm.run_dir.join("control.sock")),
            ..VmmArgs::default()
        };
        if let Some(jail) = VmmJail::of(&host.config, vm.id).map_err(StandbyError::Start)? {
            jail.confine(&mut args, super::lifecycle::jail_dirs(vm))
                .map_err(StandbyError::Start)?;
        }
        let process = VmmProcess::spawn_unrecorded(
            &super::lifecycle::vmm_binary(),
            &args.to_argv(),
            &[theirs.as_raw_fd()],
            &vm.file(logs::VMM_LOG),
        )
        .map_err(StandbyError::Start)?;
        Ok(Standby {
            process: Some(process),
            channel: Some(ours),
            memory_mb,
        })
    }

    /// Whether it can restore a VM of `memory_mb` (made for that size, still waiting).
    pub fn fits(&self, memory_mb: i64) -> bool {
        self.memory_mb == memory_mb && self.process.as_ref().is_some_and(|p| !p.has_exited())
    }

    /// Hands the standby the restore `args` with the files `fds` (in the order of its `--file`
    /// options) and records it in `run_dir`; returns the VMM, now restoring.
    pub fn restore(
        mut self,
        args: &VmmArgs,
        fds: &[RawFd],
        run_dir: &Path,
    ) -> Result<VmmProcess, StandbyError> {
        let argv = args
            .to_argv()
            .into_iter()
            .map(|arg| arg.into_string())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| StandbyError::Send(std::io::ErrorKind::InvalidInput.into()))?;
        let line = serde_json::to_string(&argv).map_err(|e| StandbyError::Send(e.into()))? + "\n";
        let (Some(mut channel), Some(process)) = (self.channel.take(), self.process.take()) else {
            return Err(StandbyError::Send(std::io::ErrorKind::NotConnected.into()));
        };
        let sent = super::control::send_line(&mut channel, line.as_bytes(), fds)
            .and_then(|()| channel.flush())
            .and_then(|()| process.record(run_dir));
        if let Err(error) = sent {
            self.process = Some(process);
            return Err(StandbyError::Send(error));
        }
        Ok(process)
    }
}

impl Drop for Standby {
    /// Ends an unused standby: its channel closes (the VMM exits) and it is reaped off the way.
    fn drop(&mut self) {
        drop(self.channel.take());
        if let Some(process) = self.process.take() {
            let _ = std::thread::Builder::new()
                .name("standby-end".into())
                .spawn(move || process.wait());
        }
    }
}
