//! Whether the VM runs, is paused, or is ending (and why). Shared by the vCPU threads, the
//! devices that end a VM (ACPI S5, reset), the control socket and the main thread.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::persist::vcpu::VcpuState;

pub use vireo_vmm_protocol::VmExit;

/// What the VM is doing now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// vCPUs run.
    Running,
    /// vCPUs are held outside KVM_RUN.
    Paused,
    /// The VM is ending; vCPUs leave.
    Exiting(VmExit),
}

struct Inner {
    phase: Phase,
    /// vCPU threads currently parked (paused or gone).
    parked: usize,
    boot_marker: Option<Duration>,
    /// Bumped to ask parked vCPUs to save their state.
    save_generation: u64,
    /// What each vCPU saved for the current generation.
    saved: Vec<Option<Result<VcpuState, String>>>,
    /// The ending VM has let go of its host resources (disks, TAPs, control socket).
    released: bool,
    /// Control clients waiting to answer once it has.
    release_waiters: usize,
}

/// The shared run state of one VM.
pub struct RunState {
    inner: Mutex<Inner>,
    changed: Condvar,
    started: Instant,
}

impl Default for RunState {
    fn default() -> Self {
        RunState {
            inner: Mutex::new(Inner {
                phase: Phase::Running,
                parked: 0,
                boot_marker: None,
                save_generation: 0,
                saved: Vec::new(),
                released: false,
                release_waiters: 0,
            }),
            changed: Condvar::new(),
            started: Instant::now(),
        }
    }
}

impl RunState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.lock().phase.clone()
    }

    /// Ends the VM for `exit`; the first reason recorded wins.
    pub fn request_exit(&self, exit: VmExit) {
        let mut inner = self.lock();
        self.exit_locked(&mut inner, exit);
    }

    fn exit_locked(&self, inner: &mut Inner, exit: VmExit) {
        if !matches!(inner.phase, Phase::Exiting(_)) {
            inner.phase = Phase::Exiting(exit);
            self.changed.notify_all();
        }
    }

    /// Asks the vCPUs to park. Returns false if the VM is ending.
    pub fn request_pause(&self) -> bool {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Exiting(_) => false,
            _ => {
                inner.phase = Phase::Paused;
                true
            }
        }
    }

    /// Lets parked vCPUs run again. Returns false if the VM is ending.
    pub fn resume(&self) -> bool {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Exiting(_) => false,
            _ => {
                inner.phase = Phase::Running;
                self.changed.notify_all();
                true
            }
        }
    }

    /// Called by vCPU thread `index` between runs: blocks while paused, running `save` when
    /// asked to (see `collect_vcpu_states`); returns the exit when the VM is ending.
    pub fn vcpu_checkpoint(
        &self,
        index: usize,
        save: &mut dyn FnMut() -> Result<VcpuState, String>,
    ) -> Option<VmExit> {
        let mut inner = self.lock();
        loop {
            match &inner.phase {
                Phase::Running => return None,
                Phase::Exiting(exit) => {
                    // The thread leaves its run loop: counted as parked for good.
                    let exit = exit.clone();
                    inner.parked += 1;
                    self.changed.notify_all();
                    return Some(exit);
                }
                Phase::Paused => {
                    inner.parked += 1;
                    let mut seen = inner.save_generation;
                    self.changed.notify_all();
                    while inner.phase == Phase::Paused {
                        if inner.save_generation != seen {
                            seen = inner.save_generation;
                            drop(inner);
                            let state = save();
                            inner = self.lock();
                            if let Some(slot) = inner.saved.get_mut(index) {
                                *slot = Some(state);
                            }
                            self.changed.notify_all();
                            continue;
                        }
                        inner = self.changed.wait(inner).unwrap_or_else(|p| p.into_inner());
                    }
                    inner.parked -= 1;
                }
            }
        }
    }

    /// Asks every parked vCPU (the VM must be paused) to save its state and waits for all
    /// `count` of them, up to `timeout`.
    pub fn collect_vcpu_states(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<VcpuState>, String> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        if inner.phase != Phase::Paused || inner.parked < count {
            return Err("the VM must be paused to save vCPU state".into());
        }
        inner.saved = (0..count).map(|_| None).collect();
        inner.save_generation += 1;
        self.changed.notify_all();
        while inner.saved.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("vCPUs did not save their state in time".into());
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        std::mem::take(&mut inner.saved)
            .into_iter()
            .map(|slot| slot.unwrap_or_else(|| Err("missing".into())))
            .collect()
    }

    /// Number of vCPU threads parked right now.
    pub fn parked_vcpus(&self) -> usize {
        self.lock().parked
    }

    /// Blocks the caller until the VM ends.
    pub fn wait_for_exit(&self) -> VmExit {
        let mut inner = self.lock();
        loop {
            if let Phase::Exiting(exit) = &inner.phase {
                return exit.clone();
            }
            inner = self.changed.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Records that the ending VM has let go of its host resources, then gives the clients
    /// waiting for that (see [`RunState::exit_answering_on_release`]) up to `timeout` to answer
    /// before the process goes on to end.
    pub fn mark_released(&self, timeout: Duration) {
        let mut inner = self.lock();
        inner.released = true;
        self.changed.notify_all();
        drop(self.wait_until(inner, timeout, |inner| inner.release_waiters == 0));
    }

    /// Ends the VM for `exit` (see [`RunState::request_exit`]), waits up to `timeout` for it to
    /// let go of its host resources, then calls `answer` with whether it did; the process does
    /// not end while `answer` runs (within the time [`RunState::mark_released`] gives).
    pub fn exit_answering_on_release<T>(
        &self,
        exit: VmExit,
        timeout: Duration,
        answer: impl FnOnce(bool) -> T,
    ) -> T {
        let mut inner = self.lock();
        // Counted before the exit is asked for: the release cannot pass unanswered.
        inner.release_waiters += 1;
        self.exit_locked(&mut inner, exit);
        let inner = self.wait_until(inner, timeout, |inner| inner.released);
        let released = inner.released;
        drop(inner);
        let answered = answer(released);
        self.lock().release_waiters -= 1;
        self.changed.notify_all();
        answered
    }

    /// Waits up to `timeout` for `done` to hold (it may not, when the time is up).
    fn wait_until<'a>(
        &self,
        inner: MutexGuard<'a, Inner>,
        timeout: Duration,
        done: impl Fn(&Inner) -> bool,
    ) -> MutexGuard<'a, Inner> {
        self.changed
            .wait_timeout_while(inner, timeout, |inner| !done(inner))
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// Waits up to `timeout` for all `count` vCPU threads to have left their run loops (the VM
    /// ending); true if they have.
    pub fn wait_vcpus_left(&self, count: usize, timeout: Duration) -> bool {
        let left =
            |inner: &Inner| matches!(inner.phase, Phase::Exiting(_)) && inner.parked >= count;
        left(&self.wait_until(self.lock(), timeout, left))
    }

    /// Waits up to `timeout` for the phase to change; used while kicking vCPUs.
    pub fn wait_change(&self, timeout: Duration) {
        let inner = self.lock();
        let _ = self.changed.wait_timeout(inner, timeout);
    }

    /// Records the guest's "booted" marker (first write wins).
    pub fn mark_booted(&self) {
        let mut inner = self.lock();
        if inner.boot_marker.is_none() {
            inner.boot_marker = Some(self.started.elapsed());
        }
    }

    /// Time from VMM start to the guest's boot marker.
    pub fn boot_marker(&self) -> Option<Duration> {
        self.lock().boot_marker
    }

    /// Time since the VMM started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_exit_reason_wins_and_ends_pause() {
        let state = Arc::new(RunState::default());
        assert!(state.request_pause());
        let vcpu = {
            let state = state.clone();
            std::thread::spawn(move || {
                state.vcpu_checkpoint(0, &mut || Err("not in this test".into()))
            })
        };
        while state.parked_vcpus() == 0 {
            state.wait_change(Duration::from_millis(1));
        }
        state.request_exit(VmExit::GuestPowerOff);
        state.request_exit(VmExit::HostReset);
        assert_eq!(vcpu.join().unwrap(), Some(VmExit::GuestPowerOff));
        assert_eq!(state.wait_for_exit().exit_code(), 0);
        assert!(!state.resume());
    }

    #[test]
    fn a_release_is_answered_before_the_process_may_end() {
        let state = Arc::new(RunState::default());
        assert!(state.request_pause());
        let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waiter = {
            let (state, answered) = (state.clone(), answered.clone());
            std::thread::spawn(move || {
                let wait = Duration::from_secs(10);
                state.exit_answering_on_release(VmExit::HostPowerOff, wait, |released| {
                    std::thread::sleep(Duration::from_millis(50));
                    answered.store(true, std::sync::atomic::Ordering::SeqCst);
                    released
                })
            })
        };
        // The main thread of an ending VM: nothing left to stop, it lets go at once.
        assert_eq!(state.wait_for_exit(), VmExit::HostPowerOff);
        state.mark_released(Duration::from_secs(10));
        assert!(answered.load(std::sync::atomic::Ordering::SeqCst));
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn a_release_that_does_not_come_is_answered_after_the_wait() {
        let state = RunState::default();
        let wait = Duration::from_millis(5);
        assert!(!state.exit_answering_on_release(VmExit::HostPowerOff, wait, |released| released));
    }
}
