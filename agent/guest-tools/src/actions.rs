//! Carrying out the host's requests in the guest: power operations run configurable commands
//! (`poweroff`, `reboot`, and writing `mem` to /sys/power/state); freeze/thaw use the FIFREEZE
//! and FITHAW ioctls on every writable local filesystem in /proc/mounts.

use std::os::fd::AsRawFd;
use std::process::Command;

use crate::upgrade::Installer;

/// What the daemon can ask the guest to do; tests substitute their own.
pub trait GuestActions: Send {
    /// Starts an orderly power-off.
    fn shutdown(&mut self) -> Result<(), String>;
    /// Starts an orderly reboot.
    fn reboot(&mut self) -> Result<(), String>;
    /// Gets the guest ready for the host to suspend the VM (runs to completion).
    fn standby(&mut self) -> Result<(), String>;
    /// Freezes filesystems for a quiesced snapshot.
    fn freeze(&mut self) -> Result<(), String>;
    /// Thaws what `freeze` froze.
    fn thaw(&mut self) -> Result<(), String>;
    /// Whether [`GuestActions::upgrade_tools`] can install tools (offered in the hello).
    fn upgrades(&self) -> bool {
        false
    }
    /// Installs the tools from the installer CD; the daemon restarts once it has replied.
    fn upgrade_tools(&mut self) -> Result<(), String> {
        Err("this guest does not install tools upgrades".into())
    }
}

/// The real guest: shell commands for power, ioctls for freeze.
pub struct SystemActions {
    /// Command line for shutdown (run with `sh -c`).
    pub shutdown_command: String,
    /// Command line for reboot.
    pub reboot_command: String,
    /// Command line run (and waited for) before the host suspends the VM on a standby.
    pub standby_command: String,
    /// Where tools upgrades come from and what they replace (none: no upgrades).
    pub installer: Option<Installer>,
    frozen: Vec<String>,
}

impl SystemActions {
    /// Actions with the given commands.
    pub fn new(shutdown: &str, reboot: &str, standby: &str) -> SystemActions {
        SystemActions {
            shutdown_command: shutdown.into(),
            reboot_command: reboot.into(),
            standby_command: standby.into(),
            installer: None,
            frozen: Vec::new(),
        }
    }

    /// These actions, installing tools upgrades with `installer` (none: no upgrades).
    pub fn with_installer(self, installer: Option<Installer>) -> SystemActions {
        SystemActions { installer, ..self }
    }
}

/// Starts `command` with `sh -c` without waiting (a power-off never returns).
fn spawn_shell(command: &str) -> Result<(), String> {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot run {command:?}: {e}"))
}

/// Runs `command` with `/bin/sh -c` and waits for it; an error unless it exits with 0.
fn run_shell(command: &str) -> Result<(), String> {
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}"))
    }
}

/// Mount points of writable, disk-backed filesystems, deepest first.
fn freezable_mounts(mounts: &str) -> Vec<String> {
    const VIRTUAL: &[&str] = &[
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "tmpfs",
        "cgroup",
        "cgroup2",
        "securityfs",
        "debugfs",
        "tracefs",
        "pstore",
        "bpf",
        "mqueue",
        "hugetlbfs",
        "configfs",
        "fusectl",
        "autofs",
        "rootfs",
        "ramfs",
        "overlay",
        "nsfs",
        "efivarfs",
        "binfmt_misc",
    ];
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (point, fs, options) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
            let writable = options.split(',').any(|o| o == "rw");
            (writable && !VIRTUAL.contains(fs)).then(|| point.replace("\\040", " "))
        })
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    points
}

nix::ioctl_readwrite!(
    /// FIFREEZE (linux/fs.h: `_IOWR('X', 119, int)`): freezes the filesystem.
    fifreeze,
    b'X',
    119,
    libc::c_int
);
nix::ioctl_readwrite!(
    /// FITHAW (linux/fs.h: `_IOWR('X', 120, int)`): thaws it.
    fithaw,
    b'X',
    120,
    libc::c_int
);

/// One of the freeze ioctls.
type FsIoctl = unsafe fn(libc::c_int, *mut libc::c_int) -> nix::Result<libc::c_int>;

fn fs_ioctl(point: &str, request: FsIoctl) -> Result<(), String> {
    let dir = std::fs::File::open(point).map_err(|e| format!("{point}: {e}"))?;
    let mut unused: libc::c_int = 0;
    // SAFETY: FIFREEZE/FITHAW take an int argument the kernel ignores; `dir` is open.
    unsafe { request(dir.as_raw_fd(), &mut unused) }
        .map_err(|e| format!("{point}: {}", std::io::Error::from(e)))?;
    Ok(())
}

impl GuestActions for SystemActions {
    fn shutdown(&mut self) -> Result<(), String> {
        spawn_shell(&self.shutdown_command)
    }

    fn reboot(&mut self) -> Result<(), String> {
        spawn_shell(&self.reboot_command)
    }

    fn standby(&mut self) -> Result<(), String> {
        run_shell(&self.standby_command)
    }

    fn upgrades(&self) -> bool {
        self.installer.is_some()
    }

    fn upgrade_tools(&mut self) -> Result<(), String> {
        let installer = self.installer.as_ref().ok_or("tools upgrades are off")?;
        installer.install().map(drop).map_err(|e| e.to_string())
    }

    fn freeze(&mut self) -> Result<(), String> {
        if !self.frozen.is_empty() {
            return Err("filesystems are already frozen".into());
        }
        let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| e.to_string())?;
        for point in freezable_mounts(&mounts) {
            if let Err(error) = fs_ioctl(&point, fifreeze) {
                self.thaw()?;
                return Err(error);
            }
            self.frozen.push(point);
        }
        Ok(())
    }

    fn thaw(&mut self) -> Result<(), String> {
        let mut first_error = None;
        while let Some(point) = self.frozen.pop() {
            if let Err(error) = fs_ioctl(&point, fithaw) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writable_disk_filesystems_are_frozen_deepest_first() {
        let mounts = "/dev/vda1 / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n\
                      /dev/vdb1 /srv/data xfs rw 0 0\n/dev/vdc /mnt/ro ext4 ro 0 0\n\
                      tmpfs /run tmpfs rw 0 0\n";
        assert_eq!(freezable_mounts(mounts), vec!["/srv/data", "/"]);
    }
}
