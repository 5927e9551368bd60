//! The filter every thread of the VMM runs under, installed on the main thread before any
//! other thread exists (threads inherit it): what the host-driven threads (main, control
//! socket, signals, console input, disk I/O) need, with `ioctl` limited to the KVM, TAP and
//! terminal requests the VMM makes, no executable memory (`mmap`/`mprotect` with PROT_EXEC),
//! `clone` only with the flags of a new thread (`clone3`, whose flags the filter cannot read,
//! answers ENOSYS so glibc falls back to `clone`), `prctl` only for thread names and
//! no-new-privileges, sockets only in AF_UNIX, and signals only to the VMM's own threads. Guest-facing threads add a narrower filter
//! on top (see the parent module).

use std::collections::BTreeMap;
use std::ffi::c_int;

use nix::errno::Errno;
use nix::sys::mman::ProtFlags;
use nix::sys::socket::AddressFamily;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Calls allowed whatever their arguments, besides the lists shared with the guest-facing
/// threads' filter.
const ALLOWED: &[i64] = &[
    libc::SYS_copy_file_range,
    libc::SYS_flock,
    libc::SYS_fstatfs,
    // Files inside the jail's view (disk images, saved state, the serial log).
    libc::SYS_openat,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlink,
    libc::SYS_getdents64,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_fchmod,
    libc::SYS_chmod,
    // The control and tools sockets (socket() itself is limited below).
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept4,
    libc::SYS_getsockopt,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    // Memory (mmap and mprotect are limited below).
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_futex,
    // Threads (clone is limited below).
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sigaltstack,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_prlimit64,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_seccomp,
    // Dropping to the jail's user (glibc repeats these on every thread); without capabilities
    // they cannot gain anything back.
    libc::SYS_setgroups,
    libc::SYS_setresgid,
    libc::SYS_setresuid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    // Signals: termination signals, vCPU kicks, SIGSYS reports (tgkill is limited below).
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigtimedwait,
    // Time.
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
];

/// The ioctl requests the VMM makes: KVM (system, VM and vCPU), TAP, and the terminal.
const IOCTLS: &[(&str, u32)] = &[
    ("KVM_GET_API_VERSION", 0xae00),
    ("KVM_CREATE_VM", 0xae01),
    ("KVM_GET_MSR_INDEX_LIST", 0xc004_ae02),
    ("KVM_CHECK_EXTENSION", 0xae03),
    ("KVM_GET_VCPU_MMAP_SIZE", 0xae04),
    ("KVM_GET_SUPPORTED_CPUID", 0xc008_ae05),
    ("KVM_CREATE_VCPU", 0xae41),
    ("KVM_GET_DIRTY_LOG", 0x4010_ae42),
    ("KVM_SET_USER_MEMORY_REGION", 0x4020_ae46),
    ("KVM_SET_TSS_ADDR", 0xae47),
    ("KVM_SET_IDENTITY_MAP_ADDR", 0x4008_ae48),
    ("KVM_CREATE_IRQCHIP", 0xae60),
    ("KVM_IRQ_LINE", 0x4008_ae61),
    ("KVM_GET_IRQCHIP", 0xc208_ae62),
    ("KVM_SET_IRQCHIP", 0x8208_ae63),
    ("KVM_SET_GSI_ROUTING", 0x4008_ae6a),
    ("KVM_IRQFD", 0x4020_ae76),
    ("KVM_CREATE_PIT2", 0x4040_ae77),
    ("KVM_IOEVENTFD", 0x4040_ae79),
    ("KVM_SET_CLOCK", 0x4030_ae7b),
    ("KVM_GET_CLOCK", 0x8030_ae7c),
    ("KVM_RUN", 0xae80),
    ("KVM_GET_REGS", 0x8090_ae81),
    ("KVM_SET_REGS", 0x4090_ae82),
    ("KVM_GET_SREGS", 0x8138_ae83),
    ("KVM_SET_SREGS", 0x4138_ae84),
    ("KVM_GET_MSRS", 0xc008_ae88),
    ("KVM_SET_MSRS", 0x4008_ae89),
    ("KVM_SET_CPUID2", 0x4008_ae90),
    ("KVM_GET_CPUID2", 0xc008_ae91),
    ("KVM_GET_FPU", 0x81a0_ae8c),
    ("KVM_SET_FPU", 0x41a0_ae8d),
    ("KVM_GET_LAPIC", 0x8400_ae8e),
    ("KVM_SET_LAPIC", 0x4400_ae8f),
    ("KVM_GET_MP_STATE", 0x8004_ae98),
    ("KVM_SET_MP_STATE", 0x4004_ae99),
    ("KVM_GET_PIT2", 0x8070_ae9f),
    ("KVM_SET_PIT2", 0x4070_aea0),
    ("KVM_GET_VCPU_EVENTS", 0x8040_ae9f),
    ("KVM_SET_VCPU_EVENTS", 0x4040_aea0),
    ("KVM_SET_GUEST_DEBUG", 0x4048_ae9b),
    ("KVM_GET_DEBUGREGS", 0x8080_aea1),
    ("KVM_SET_DEBUGREGS", 0x4080_aea2),
    ("KVM_SET_TSC_KHZ", 0xaea2),
    ("KVM_GET_TSC_KHZ", 0xaea3),
    ("KVM_ENABLE_CAP", 0x4068_aea3),
    ("KVM_GET_XSAVE", 0x9000_aea4),
    ("KVM_SET_XSAVE", 0x5000_aea5),
    ("KVM_SIGNAL_MSI", 0x4020_aea5),
    ("KVM_GET_XCRS", 0x8188_aea6),
    ("KVM_SET_XCRS", 0x4188_aea7),
    ("KVM_KVMCLOCK_CTRL", 0xaead),
    ("TUNSETIFF", 0x4004_54ca),
    ("TUNSETOFFLOAD", 0x4004_54d0),
    ("TUNSETVNETHDRSZ", 0x4004_54d8),
    ("TCGETS", 0x5401),
    ("TCSETS", 0x5402),
    ("FIONBIO", 0x5421),
    ("FIOCLEX", 0x5451),
];

/// The flags glibc's pthread_create passes to clone: a thread, never a process. (libc's:
/// nix's CloneFlags lacks CLONE_SETTLS, CLONE_PARENT_SETTID and CLONE_CHILD_CLEARTID.)
const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_SETTLS
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_CLEARTID) as u64;

/// prctl options: thread names (set and read) and no-new-privileges (seccompiler sets it).
/// (libc's: nix names no prctl options.)
const PRCTL_OPTIONS: &[c_int] = &[
    libc::PR_SET_NAME,
    libc::PR_GET_NAME,
    libc::PR_SET_NO_NEW_PRIVS,
];

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(conditions)
}

fn condition(
    arg: u8,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
}

/// Rules with argument conditions: ioctl, mmap, mprotect, clone, prctl, socket, tgkill.
fn conditional_rules() -> Result<Rules, seccompiler::BackendError> {
    let no_exec = || {
        condition(
            2,
            SeccompCmpOp::MaskedEq(ProtFlags::PROT_EXEC.bits() as u64),
            0,
        )
    };
    let ioctls = IOCTLS
        .iter()
        .map(|&(_, request)| {
            let request = SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                request.into(),
            )?;
            rule(vec![request])
        })
        .collect::<Result<_, _>>()?;
    let prctls = PRCTL_OPTIONS
        .iter()
        .map(|&option| rule(vec![condition(0, SeccompCmpOp::Eq, option as u64)?]))
        .collect::<Result<_, _>>()?;
    let mut rules = Rules::new();
    rules.insert(libc::SYS_ioctl, ioctls);
    rules.insert(libc::SYS_mmap, vec![rule(vec![no_exec()?])?]);
    rules.insert(libc::SYS_mprotect, vec![rule(vec![no_exec()?])?]);
    let clone = condition(0, SeccompCmpOp::Eq, THREAD_FLAGS)?;
    rules.insert(libc::SYS_clone, vec![rule(vec![clone])?]);
    rules.insert(libc::SYS_prctl, prctls);
    let unix = condition(0, SeccompCmpOp::Eq, AddressFamily::Unix as u64)?;
    rules.insert(libc::SYS_socket, vec![rule(vec![unix])?]);
    // Signals to our own threads only (vCPU kicks, glibc's set*id broadcast), never to
    // another process, not even one of the same user.
    let ours = condition(0, SeccompCmpOp::Eq, u64::from(std::process::id()))?;
    rules.insert(libc::SYS_tgkill, vec![rule(vec![ours])?]);
    Ok(rules)
}

/// The two programs, in the order they are installed: the allow-list (anything else traps),
/// then `clone3` → ENOSYS (the stricter answer wins when both filters match).
pub(super) fn programs() -> Result<Vec<BpfProgram>, String> {
    let mut rules = conditional_rules().map_err(|e| e.to_string())?;
    rules.extend(super::unconditional(ALLOWED));
    rules.extend(super::io_uring_rules().map_err(|e| e.to_string())?);
    rules.insert(libc::SYS_clone3, Vec::new());
    let allow = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    );
    let no_clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(Errno::ENOSYS as u32),
        TargetArch::x86_64,
    );
    [allow, no_clone3]
        .into_iter()
        .map(|filter| {
            filter
                .and_then(BpfProgram::try_from)
                .map_err(|e| e.to_string())
        })
        .collect()
}
