//! The running machine's shared parts that the control server and the live operations (save,
//! disk swaps) act on (`VmHandle`), and the kicker that brings vCPU threads out of KVM_RUN to
//! pause them (`VcpuKicker`).

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_ioctls::VmFd;
// The kick handler's signature (vmm-sys-util's handler type) names libc's siginfo_t.
use libc::siginfo_t;
use nix::sys::pthread::Pthread;
use vm_memory::GuestMemoryMmap;

use crate::config::VmConfig;
use crate::devices::bus::Buses;
use crate::devices::framebuffer::FramebufferInfo;
use crate::devices::legacy::pit::Pit;
use crate::devices::legacy::pm::PowerManagement;
use crate::devices::legacy::rtc::Cmos;
use crate::devices::legacy::serial::SerialPort;
use crate::devices::virtio::block::DiskSlot;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::NicLink;
use crate::io_stall::IoStalls;
use crate::run_state::RunState;

/// How long a pause waits for every vCPU to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval between kicks of vCPUs that have not yet left KVM_RUN.
pub(crate) const KICK_INTERVAL: Duration = Duration::from_millis(1);

/// What the control server can act on: the running machine's shared parts.
pub struct VmHandle {
    /// The VM's run state.
    pub run_state: Arc<RunState>,
    /// The PM1 registers (power button).
    pub pm: Arc<Mutex<PowerManagement>>,
    /// COM1 (saved with the VM).
    pub serial: Arc<Mutex<SerialPort>>,
    /// The CMOS (saved with the VM).
    pub cmos: Arc<Mutex<Cmos>>,
    /// The PIT (saved with the VM).
    pub pit: Arc<Mutex<Pit>>,
    /// Kicks vCPUs out of KVM_RUN (pause).
    pub kicker: Arc<VcpuKicker>,
    /// The buses (statistics).
    pub buses: Arc<Buses>,
    /// The virtio transports (quiesced and saved with the VM).
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
    /// Guest memory (the framebuffer lives in it).
    pub memory: GuestMemoryMmap,
    /// Where the framebuffer is.
    pub framebuffer: FramebufferInfo,
    /// The KVM VM.
    pub vm_fd: Arc<VmFd>,
    /// Image slots of the disks (disk `i` is behind `transports[i]`).
    pub disk_slots: Vec<DiskSlot>,
    /// Links of the NICs (NIC `i` is behind `transports[transports.len() - nics + i]`).
    pub nic_links: Vec<NicLink>,
    /// The disks' requests held for lack of space.
    pub stalls: Arc<IoStalls>,
    /// What the VM runs with now (disk paths change when disks are re-attached).
    pub config: Arc<Mutex<VmConfig>>,
    /// Instructions completed for kvm-pvm, per kind.
    pub completed: Arc<crate::arch::emulate::Counts>,
    /// Set while a save is under way (`status` reports it).
    pub saving: SaveUnderWay,
}

/// Whether a save is under way; [`SaveUnderWay::during`] keeps it set for one save.
#[derive(Default)]
pub struct SaveUnderWay(AtomicBool);

impl SaveUnderWay {
    /// Runs `save` with the flag set (cleared when it ends, even by a panic).
    pub fn during<T>(&self, save: impl FnOnce() -> T) -> T {
        struct Clear<'a>(&'a AtomicBool);
        impl Drop for Clear<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        self.0.store(true, Ordering::SeqCst);
        let _clear = Clear(&self.0);
        save()
    }

    /// Whether a save is under way.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Signal used to kick vCPU threads out of KVM_RUN.
pub(crate) fn kick_signal() -> c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

pub(crate) extern "C" fn ignore_kick(_: c_int, _: *mut siginfo_t, _: *mut c_void) {}

/// Interrupts vCPU threads so that they return from KVM_RUN and look at the run state.
pub struct VcpuKicker {
    threads: Vec<Pthread>,
}

impl VcpuKicker {
    /// A kicker for the threads running the vCPUs.
    pub fn new(threads: Vec<Pthread>) -> Self {
        VcpuKicker { threads }
    }

    /// Sends the kick signal to every vCPU thread.
    pub fn kick(&self) {
        for thread in &self.threads {
            // Not nix's pthread_kill: its Signal has no real-time signals.
            // SAFETY: the threads are joined only after the last kick (see `Machine::run`).
            unsafe { libc::pthread_kill(*thread, kick_signal()) };
        }
    }

    /// Number of vCPU threads.
    pub fn count(&self) -> usize {
        self.threads.len()
    }

    /// Parks every vCPU: true once all are outside KVM_RUN, false on timeout or if the VM ends.
    pub fn pause(&self, run_state: &RunState) -> bool {
        if !run_state.request_pause() {
            return false;
        }
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        while run_state.parked_vcpus() < self.count() {
            if Instant::now() > deadline || run_state.phase() != crate::run_state::Phase::Paused {
                return false;
            }
            self.kick();
            run_state.wait_change(KICK_INTERVAL);
        }
        true
    }
}
