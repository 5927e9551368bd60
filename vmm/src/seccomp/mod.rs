//! System-call filters. Every thread runs under the process filter (`process`), installed on
//! the main thread before any other thread starts. The threads a guest can drive — vCPUs (port
//! and MMIO emulation, device activation) and device workers (queues, disk and TAP I/O, the
//! tools socket) — add a narrower one: open descriptors, memory and threads, but never open a
//! path, create a socket, connect, execute or trace anything. A forbidden call ends the VMM as
//! "crashed" with the call's number in its exit record.

mod process;

use std::ffi::{c_int, c_void};
use std::os::fd::AsFd;
use std::sync::{Once, OnceLock};

// The SIGSYS handler's signature (vmm-sys-util's handler type) names libc's siginfo_t.
use libc::siginfo_t;
use nix::sys::signal::Signal;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Why a thread could not be filtered.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter could not be compiled.
    #[error("cannot build the system-call filter: {0}")]
    Build(String),
    /// The kernel refused the filter.
    #[error("cannot apply the system-call filter: {0}")]
    Apply(#[from] seccompiler::Error),
    /// The SIGSYS reporter could not be installed.
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(#[from] vmm_sys_util::errno::Error),
}

/// Calls on descriptors that both filters allow whatever their arguments: reads, writes,
/// syncs, sizes and metadata of descriptors already open.
const DESCRIPTOR_IO: &[i64] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_preadv2,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_ftruncate,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_dup,
];

/// Waiting for and signalling wake-ups, allowed by both filters.
const WAKE_UPS: &[i64] = &[
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_poll,
    libc::SYS_ppoll,
];

/// `extra` and the calls both filters share, each allowed whatever its arguments.
fn unconditional(extra: &'static [i64]) -> impl Iterator<Item = (i64, Vec<SeccompRule>)> {
    DESCRIPTOR_IO
        .iter()
        .chain(WAKE_UPS)
        .chain(extra)
        .map(|&call| (call, Vec::new()))
}

/// io_uring for the block devices (`devices::virtio::block::uring`), allowed by both filters:
/// setting a ring up, submitting and waiting, and of the registrations only the three the
/// device makes while the ring is still disabled (completion eventfd, restrictions, enabling).
/// The ring's operations bypass these filters, so the ring itself is restricted to READV and
/// WRITEV on the descriptors the thread could already read and write.
fn io_uring_rules() -> Result<Vec<(i64, Vec<SeccompRule>)>, seccompiler::BackendError> {
    /// IORING_REGISTER_EVENTFD, IORING_REGISTER_RESTRICTIONS, IORING_REGISTER_ENABLE_RINGS
    /// (the io-uring crate keeps its constants private).
    const REGISTER_OPS: [u64; 3] = [4, 11, 12];
    let register = REGISTER_OPS
        .iter()
        .map(|&op| {
            let opcode = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, op)?;
            SeccompRule::new(vec![opcode])
        })
        .collect::<Result<_, _>>()?;
    Ok(vec![
        (libc::SYS_io_uring_setup, Vec::new()),
        (libc::SYS_io_uring_enter, Vec::new()),
        (libc::SYS_io_uring_register, register),
    ])
}

/// What guest-facing threads may call besides the shared lists.
const ALLOWED: &[i64] = &[
    // Descriptors handed to us: KVM, eventfds, disk images, the TAP, the serial log.
    libc::SYS_ioctl,
    // The tools socket's accepted client (the listener was bound by the main thread).
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    // Memory and locks.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_futex,
    // Threads: device workers start when the guest activates a device, on a vCPU thread.
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sigaltstack,
    libc::SYS_prctl,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // A worker started by a filtered vCPU adds the filter again (filters only ever narrow).
    libc::SYS_seccomp,
    // glibc's broadcast when the VMM drops to the jail's user (workers of a restored VM
    // already run then); without capabilities these cannot gain anything.
    libc::SYS_setgroups,
    libc::SYS_setresgid,
    libc::SYS_setresuid,
    // Signals: vCPU kicks, and the kicks' handler returning.
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_tgkill,
    // Time (vDSO fallbacks).
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
];

/// The compiled filter, built once.
fn program() -> Result<&'static BpfProgram, SeccompError> {
    static PROGRAM: OnceLock<Result<BpfProgram, String>> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let mut rules: std::collections::BTreeMap<_, _> = unconditional(ALLOWED).collect();
            rules.extend(io_uring_rules().map_err(|e| e.to_string())?);
            SeccompFilter::new(
                rules,
                SeccompAction::Trap,
                SeccompAction::Allow,
                TargetArch::x86_64,
            )
            .and_then(BpfProgram::try_from)
            .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| SeccompError::Build(e.clone()))
}

/// Restricts the calling thread (and threads it starts later) to the guest-facing set.
pub fn filter_this_thread() -> Result<(), SeccompError> {
    let program = program()?;
    install_reporter()?;
    limit_malloc_arenas();
    seccompiler::apply_filter(program)?;
    Ok(())
}

/// Restricts the whole process: sets no-new-privileges and installs the process filter on the
/// calling thread. Call it on the main thread before any other thread starts, so that every
/// thread inherits it.
pub fn filter_process() -> Result<(), SeccompError> {
    static PROGRAMS: OnceLock<Result<Vec<BpfProgram>, String>> = OnceLock::new();
    let programs = PROGRAMS
        .get_or_init(process::programs)
        .as_ref()
        .map_err(|e| SeccompError::Build(e.clone()))?;
    install_reporter()?;
    limit_malloc_arenas();
    nix::sys::prctl::set_no_new_privs().map_err(|e| SeccompError::Build(e.to_string()))?;
    for program in programs {
        seccompiler::apply_filter(program)?;
    }
    Ok(())
}

/// glibc's malloc reads /sys/devices/system/cpu/online when a thread first needs an arena of its
/// own, unless the arena limit is set; setting it keeps filtered threads from opening that file.
fn limit_malloc_arenas() {
    static LIMITED: Once = Once::new();
    // nix has no wrapper for glibc's mallopt.
    // SAFETY: mallopt only adjusts malloc's tunables.
    LIMITED.call_once(|| unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    });
}

/// Malloc arenas for the whole process (glibc's default is 8 per core).
const MALLOC_ARENAS: c_int = 8;

/// Installs, once, the SIGSYS handler that reports a forbidden call and ends the process.
fn install_reporter() -> Result<(), SeccompError> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            vmm_sys_util::signal::register_signal_handler(
                Signal::SIGSYS as c_int,
                report_forbidden_call,
            )
            .map_err(|e| e.errno())
        })
        .map_err(|errno| SeccompError::Handler(vmm_sys_util::errno::Error::new(errno)))
}

/// SIGSYS handler: writes the exit record vireod reads and exits as crashed (code 4). Only
/// async-signal-safe work: no allocation, prctl for the thread's name, one write, _exit.
extern "C" fn report_forbidden_call(_signal: c_int, info: *mut siginfo_t, _context: *mut c_void) {
    // SAFETY: the kernel hands a valid siginfo_t; for SIGSYS its union holds
    // {void *call_addr; int syscall; unsigned arch} from byte 16 on x86_64, so the call is at 24.
    let call = unsafe { *(info.cast::<u8>().add(24).cast::<i32>()) };
    let mut name = [0u8; 16];
    // Not nix's prctl::get_name: it allocates, which a signal handler must not.
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL-terminated, into `name`.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    let name_len = name.iter().position(|b| *b == 0).unwrap_or(0);
    let mut line = [0u8; RECORD_BYTES];
    let len = exit_record(call, &name[..name_len], &mut line);
    let _ = nix::unistd::write(std::io::stderr().as_fd(), &line[..len]);
    // nix has no _exit, and the process must end without running exit handlers.
    // SAFETY: ends the process at once, without unwinding.
    unsafe { libc::_exit(4) }
}

/// Room for the exit record: fixed text, a call number, a 15-byte thread name.
const RECORD_BYTES: usize = 160;

/// Formats `vireo-vmm: exit {"reason":"crashed",...}` for system call `call` made by thread
/// `thread` (a kernel task name: no quotes or backslashes are expected, others are dropped).
fn exit_record(call: i32, thread: &[u8], out: &mut [u8; RECORD_BYTES]) -> usize {
    let mut len = 0;
    let mut push = |bytes: &[u8]| {
        for &byte in bytes {
            out[len] = byte;
            len += 1;
        }
    };
    push(b"vireo-vmm: exit {\"reason\":\"crashed\",\"detail\":\"forbidden system call ");
    let mut digits = [0u8; 10];
    let mut value = call.unsigned_abs();
    let mut count = 0;
    loop {
        digits[digits.len() - 1 - count] = b'0' + (value % 10) as u8;
        count += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    push(&digits[digits.len() - count..]);
    push(b" on thread ");
    for &byte in thread.iter().take(15) {
        if byte.is_ascii_graphic() && byte != b'"' && byte != b'\\' {
            push(&[byte]);
        }
    }
    push(b" (seccomp)\"}\n");
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_record_is_the_json_vireod_reads() {
        let mut line = [0u8; RECORD_BYTES];
        let len = exit_record(257, b"vcpu\"0", &mut line);
        let text = std::str::from_utf8(&line[..len]).unwrap();
        let json = text.strip_prefix("vireo-vmm: exit ").unwrap();
        let record: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(record["reason"], "crashed");
        assert_eq!(
            record["detail"], "forbidden system call 257 on thread vcpu0 (seccomp)",
            "{text}"
        );
    }

    #[test]
    fn a_filtered_thread_that_opens_a_file_ends_the_process_as_crashed() {
        // In a child process: the filter ends whoever trips it.
        program().unwrap();
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, getpid, ForkResult};
        // libc: nix has no _exit, and the child must end without running exit handlers.
        // SAFETY: _exit ends the process at once; nothing runs after it.
        let _exit = |code| unsafe { libc::_exit(code) };
        // SAFETY: the child only applies the prebuilt filter and makes system calls that do not
        // allocate (the path is a C literal), so no lock another thread held can hang it.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                if filter_this_thread().is_err() {
                    _exit(90);
                }
                // Allowed calls still work...
                if getpid().as_raw() <= 0 {
                    _exit(91);
                }
                // ...and opening a path does not.
                let opened = nix::fcntl::open(
                    c"/etc/hostname",
                    nix::fcntl::OFlag::O_RDONLY,
                    nix::sys::stat::Mode::empty(),
                );
                drop(opened);
                _exit(92);
            }
            ForkResult::Parent { child } => {
                assert_eq!(waitpid(child, None), Ok(WaitStatus::Exited(child, 4)));
            }
        }
    }
}
