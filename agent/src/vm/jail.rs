//! How vireod confines each `vireo-vmm` (the VMM side is `vireo_vmm::jail`): the user it runs
//! as (`vmm_uid`/`vmm_gid` in the config), the directories its mount namespace shows (the VM
//! folder, its run directory, the folders of its disk chains and boot files), and access to
//! the files vireod makes for it while it runs (a save directory, the layers of a disk chain
//! it reopens), which are given to the jail's user. A vireod that is not root cannot change
//! users or make namespaces: its VMMs then run as its own user, unjailed.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{chown, geteuid, Gid, Uid};
use vireo_vmm_protocol::VmmArgs;

use crate::config::Config;

/// The jail every VMM of this vireod runs in.
#[derive(Debug, Clone, Copy)]
pub struct VmmJail {
    uid: u32,
    gid: u32,
}

impl VmmJail {
    /// The configured jail, or none when vireod does not run as root.
    pub fn of(config: &Config) -> Option<VmmJail> {
        geteuid().is_root().then_some(VmmJail {
            uid: config.vmm_uid,
            gid: config.vmm_gid,
        })
    }

    /// Makes `args` start the VMM jailed, seeing `dirs` (each made searchable by the jail's
    /// group, nothing more).
    pub fn confine(
        &self,
        args: &mut VmmArgs,
        dirs: impl IntoIterator<Item = PathBuf>,
    ) -> std::io::Result<()> {
        let dirs: BTreeSet<PathBuf> = dirs.into_iter().collect();
        for dir in &dirs {
            self.let_search(dir)?;
        }
        args.jail_uid = Some(self.uid);
        args.jail_gid = Some(self.gid);
        args.jail_dirs = dirs.into_iter().collect();
        Ok(())
    }

    /// Gives `dir` to the jail's group with search permission when others may not search it,
    /// so that the jailed VMM can reach the files granted to it inside.
    fn let_search(&self, dir: &Path) -> std::io::Result<()> {
        let mode = std::fs::metadata(dir)?.mode();
        if mode & 0o001 != 0 {
            return Ok(());
        }
        chown(dir, None, Some(Gid::from_raw(self.gid)))?;
        std::fs::set_permissions(
            dir,
            std::fs::Permissions::from_mode((mode & 0o7777) | 0o010),
        )
    }

    /// Lets the jailed VMM open `path` (read and write) by giving it to the jail's user.
    pub fn grant(&self, path: &Path) -> std::io::Result<()> {
        chown(
            path,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
        )?;
        Ok(())
    }

    /// Makes `dir` (mode 0700) for the jailed VMM to write in.
    pub fn make_dir(&self, dir: &Path) -> std::io::Result<()> {
        ensure_private_dir(dir)?;
        self.grant(dir)
    }
}

/// Makes sure `dir` (and its parents) exists, with mode 0700 whatever the umask.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Makes `dir` for a VMM to save into: the jail's user's when there is a jail.
pub fn make_save_dir(jail: Option<VmmJail>, dir: &Path) -> std::io::Result<()> {
    match jail {
        Some(jail) => jail.make_dir(dir),
        None => ensure_private_dir(dir),
    }
}

/// Gives every file of `chains` to the jail's user (no-op without a jail).
pub fn grant_chains<'a>(
    jail: Option<VmmJail>,
    chains: impl IntoIterator<Item = &'a PathBuf>,
) -> std::io::Result<()> {
    let Some(jail) = jail else {
        return Ok(());
    };
    chains.into_iter().try_for_each(|file| jail.grant(file))
}
