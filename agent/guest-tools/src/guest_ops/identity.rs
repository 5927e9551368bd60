//! Acting as the authenticated guest user. A daemon running as root switches to the user for
//! each operation: programs switch in the forked child before exec, file operations on a
//! short-lived thread of their own. The switch uses the raw setgroups/setresgid/setresuid
//! system calls, which change only the calling thread (glibc's wrappers would change every
//! thread of the daemon). A daemon not running as root acts only for its own user.

use super::auth::Account;
use super::wire::{GuestFault, GuestOpError};

/// Whether acting as `account` needs a switch of identity; PermissionDenied if it needs one
/// this daemon cannot make.
pub fn acting_as_other_user(account: &Account) -> Result<bool, GuestOpError> {
    let me = nix::unistd::geteuid().as_raw();
    match me {
        _ if me == account.uid => Ok(false),
        0 => Ok(true),
        _ => Err(GuestOpError::new(
            GuestFault::PermissionDenied,
            format!(
                "vireo-tools runs as uid {me} and cannot act as {} (uid {})",
                account.name, account.uid
            ),
        )),
    }
}

/// The groups `account` belongs to (its primary group at least).
pub fn groups_of(account: &Account) -> Vec<u32> {
    let name = std::ffi::CString::new(account.name.as_str()).unwrap_or_default();
    nix::unistd::getgrouplist(&name, account.gid.into())
        .map(|groups| groups.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![account.gid])
}

/// Makes the calling thread `uid`/`gid` with `groups`, for good (real, effective and saved).
pub fn become_user(uid: u32, gid: u32, groups: &[u32]) -> std::io::Result<()> {
    let check = |result: libc::c_long| {
        if result == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // Raw system calls, not nix's setgroups/setresgid/setresuid: those are glibc's, which
    // change every thread of the process, and only this thread runs as the user.
    // SAFETY: plain system calls on this thread's credentials with valid arguments; `groups`
    // outlives the call.
    unsafe {
        check(libc::syscall(
            libc::SYS_setgroups,
            groups.len(),
            groups.as_ptr(),
        ))?;
        check(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
        check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))
    }
}

/// Runs `operation` as `account`: on this thread when no switch is needed, else on a thread
/// that becomes the user first.
pub fn run_as<T: Send>(
    account: &Account,
    operation: impl FnOnce() -> Result<T, GuestOpError> + Send,
) -> Result<T, GuestOpError> {
    if !acting_as_other_user(account)? {
        return operation();
    }
    let groups = groups_of(account);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                become_user(account.uid, account.gid, &groups).map_err(|e| {
                    GuestOpError::new(
                        GuestFault::PermissionDenied,
                        format!("cannot act as {}: {e}", account.name),
                    )
                })?;
                operation()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(GuestOpError::new(
                    GuestFault::Failed,
                    "the operation panicked",
                ))
            })
    })
}
