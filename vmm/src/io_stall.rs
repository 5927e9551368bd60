//! Disks whose writes the host cannot store (ENOSPC, EDQUOT). As on ESXi the guest is not told:
//! the block device leaves the request unanswered and stops taking new ones, the VM is paused,
//! and vireod hears of it through `watch-stalls` (and asks its user). `resume` lets the vCPUs
//! run and restarts each held device, which takes the unanswered requests off its queue again
//! (a restarted device starts at the used index) and retries them; if the space is still
//! missing they are held again and the VM pauses again.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use vireo_vmm_protocol::control::{DiskStall, IoStalls as StallReport, StallCause};

use crate::handle::VcpuKicker;
use crate::run_state::RunState;

/// What pauses the VM when a disk stalls (known once the vCPUs run).
struct Pauser {
    run_state: Arc<RunState>,
    kicker: Arc<VcpuKicker>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    disks: BTreeMap<usize, StallCause>,
}

/// The held disks of one VM, shared by its block devices and the control server.
#[derive(Default)]
pub struct IoStalls {
    inner: Mutex<Inner>,
    changed: Condvar,
    pauser: OnceLock<Pauser>,
}

impl IoStalls {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets later stalls pause the VM through `kicker` (called once the vCPUs run).
    pub fn arm(&self, run_state: Arc<RunState>, kicker: Arc<VcpuKicker>) {
        let _ = self.pauser.set(Pauser { run_state, kicker });
    }

    /// Records that disk `disk` holds a request for `cause`, and pauses the VM.
    pub fn report(&self, disk: usize, cause: StallCause) {
        {
            let mut inner = self.lock();
            if inner.disks.insert(disk, cause) != Some(cause) {
                inner.generation += 1;
                self.changed.notify_all();
            }
        }
        // Not eprintln!: the log may be on the very file system that is full.
        let _ = writeln!(
            std::io::stderr(),
            "vireo-vmm: disk {disk}: writes held ({cause:?}); the VM is paused"
        );
        if let Some(pauser) = self.pauser.get() {
            pauser.kicker.pause(&pauser.run_state);
        }
    }

    /// Forgets every held disk (their requests are about to be retried) and says which.
    pub fn take(&self) -> Vec<usize> {
        let mut inner = self.lock();
        if inner.disks.is_empty() {
            return Vec::new();
        }
        inner.generation += 1;
        self.changed.notify_all();
        std::mem::take(&mut inner.disks).into_keys().collect()
    }

    /// The held disks once the generation is not `seen` (at once when it is not), or after
    /// `timeout` as they are.
    pub fn watch(&self, seen: Option<u64>, timeout: Duration) -> StallReport {
        let (inner, _) = self
            .changed
            .wait_timeout_while(self.lock(), timeout, |inner| seen == Some(inner.generation))
            .unwrap_or_else(|p| p.into_inner());
        StallReport {
            generation: inner.generation,
            disks: inner
                .disks
                .iter()
                .map(|(&disk, &cause)| DiskStall { disk, cause })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_are_reported_to_watchers_and_taken_once() {
        let stalls = Arc::new(IoStalls::default());
        let first = stalls.watch(None, Duration::ZERO);
        assert_eq!(first, StallReport::default());
        let watcher = {
            let stalls = stalls.clone();
            std::thread::spawn(move || stalls.watch(Some(0), Duration::from_secs(60)))
        };
        stalls.report(1, StallCause::NoSpace);
        let seen = watcher.join().unwrap();
        assert_eq!(seen.generation, 1);
        assert_eq!(
            seen.disks,
            [DiskStall {
                disk: 1,
                cause: StallCause::NoSpace
            }]
        );
        // The same stall again changes nothing.
        stalls.report(1, StallCause::NoSpace);
        assert_eq!(stalls.watch(Some(1), Duration::ZERO).generation, 1);
        assert_eq!(stalls.take(), [1]);
        assert_eq!(stalls.take(), Vec::<usize>::new());
        let cleared = stalls.watch(Some(1), Duration::ZERO);
        assert_eq!((cleared.generation, cleared.disks.len()), (2, 0));
    }
}
