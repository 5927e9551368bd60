//! The VMM's jail (Firecracker's jailer is the model). Run with `--jail-uid`, the process first
//! moves into its own mount namespace whose root is an empty tmpfs holding only bind mounts of
//! what the VM needs at the same paths (the directories vireod names with `--jail-dir`,
//! /dev/kvm, /dev/net/tun for NICs); the old root is detached, so no other host path exists.
//! It then opens its files as root inside that view and, before the guest runs, drops to the
//! unprivileged uid/gid with no supplementary groups, which clears every capability. The
//! system-call filter (`seccomp`) comes in between and covers every thread.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{chdir, pivot_root, setgroups, setresgid, setresuid, Gid, Uid};

/// Where the new root's tmpfs is mounted while it is being filled (any existing directory
/// works: the sources are opened before it is covered, and the root is moved away from it).
const STAGING: &str = "/tmp";

/// Why the jail could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A path to expose is not absolute.
    #[error("jail path {0} is not absolute")]
    Relative(PathBuf),
    /// A path to expose could not be opened.
    #[error("cannot open {path} for the jail: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        source: nix::Error,
    },
    /// A namespace, mount or credential step failed.
    #[error("cannot build the jail ({step}): {source}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// Why it failed.
        source: nix::Error,
    },
}

fn step(step: &'static str) -> impl FnOnce(nix::Error) -> JailError {
    move |source| JailError::Step { step, source }
}

/// One host path to expose at the same path in the jail.
struct Exposed {
    path: PathBuf,
    source: OwnedFd,
    is_dir: bool,
}

fn open_exposed(path: &Path) -> Result<Exposed, JailError> {
    if !path.is_absolute() {
        return Err(JailError::Relative(path.to_owned()));
    }
    let source = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(|source| {
        JailError::Open {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(Exposed {
        path: path.to_owned(),
        is_dir: path.is_dir(),
        source,
    })
}

/// Replaces the process's view of the file system with `dirs` and `devices` only (same paths).
/// Must run before any thread is started (a mount namespace is not shared with threads).
pub fn enter_view(dirs: &[PathBuf], devices: &[&Path]) -> Result<(), JailError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(step("unshare the mount namespace"))?;
    let none = None::<&str>;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(step("make the mounts private"))?;
    // Opened in the new namespace (a bind source must be one of its mounts), before the
    // staging root covers any of them.
    let exposed = dirs
        .iter()
        .map(PathBuf::as_path)
        .chain(devices.iter().copied())
        .map(open_exposed)
        .collect::<Result<Vec<_>, _>>()?;
    // The mount points must be searchable by the jail's user whatever umask we inherited.
    umask(Mode::from_bits_truncate(0o022));
    let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        STAGING,
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=0755,size=1m"),
    )
    .map_err(step("mount the new root"))?;
    for item in &exposed {
        bind(item)?;
    }
    chdir(STAGING).map_err(step("enter the new root"))?;
    pivot_root(".", ".").map_err(step("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("detach the old root"))?;
    chdir("/").map_err(step("chdir /"))?;
    Ok(())
}

/// Bind-mounts `item` at its own path under the staging root.
fn bind(item: &Exposed) -> Result<(), JailError> {
    let target = Path::new(STAGING).join(item.path.strip_prefix("/").unwrap_or(&item.path));
    let made = if item.is_dir {
        std::fs::create_dir_all(&target)
    } else {
        target
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::File::create(&target).map(drop))
    };
    made.map_err(|e| JailError::Step {
        step: "make a mount point",
        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)),
    })?;
    let source = format!("/proc/self/fd/{}", item.source.as_raw_fd());
    let none = None::<&str>;
    mount(Some(source.as_str()), &target, none, MsFlags::MS_BIND, none)
        .map_err(step("bind-mount a path into the jail"))
}

/// Becomes `uid`/`gid` with no supplementary groups on every thread; leaving uid 0 clears the
/// permitted and effective capabilities.
pub fn drop_privileges(uid: u32, gid: u32) -> Result<(), JailError> {
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    setgroups(&[]).map_err(step("clear the supplementary groups"))?;
    setresgid(gid, gid, gid).map_err(step("setresgid"))?;
    setresuid(uid, uid, uid).map_err(step("setresuid"))?;
    Ok(())
}
