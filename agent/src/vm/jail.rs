//! How vireod confines each `vireo-vmm` (the VMM side is `vireo_vmm::jail`): the user it runs
//! as — a uid of its own per VM, from the range `vmm_uid` .. `vmm_uid + vmm_uid_count`, reserved
//! for the VM on this host for every vireod (files in [`UID_RESERVATIONS`]) — and the group
//! (`vmm_gid`, shared: it only grants search on folders), the directories its mount namespace
//! shows (its run directory only: every file it needs on a datastore is handed to it open),
//! and the layers of a disk chain it reopens, which are also given to the jail's user. A vireod that is not root cannot change
//! users or make namespaces: its VMMs then run as its own user, unjailed.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{chown, geteuid, Gid, Uid};
use vireo_vmm_protocol::VmmArgs;

use crate::config::Config;

/// Where the uids of jailed VMMs are reserved, one file per uid naming its VM, shared by every
/// vireod on the host (so two never give one uid to two VMs).
pub const UID_RESERVATIONS: &str = "/run/vireo/vmm-uids";

/// The jail of one VM's VMM.
#[derive(Debug, Clone, Copy)]
pub struct VmmJail {
    uid: u32,
    gid: u32,
}

impl VmmJail {
    /// Whether VMMs are jailed: only a vireod running as root can.
    pub fn enabled() -> bool {
        geteuid().is_root()
    }

    /// The jail of VM `vm_id` — its own uid, reserved at its first use and kept while this host
    /// runs — or none when vireod does not run as root.
    pub fn of(config: &Config, vm_id: u32) -> std::io::Result<Option<VmmJail>> {
        if !VmmJail::enabled() {
            return Ok(None);
        }
        let data_dir = std::fs::canonicalize(&config.data_dir)?;
        let owner = format!("{}\n{vm_id}\n", data_dir.display());
        let range = (config.vmm_uid, config.vmm_uid_count);
        let uid = reserve_uid(Path::new(UID_RESERVATIONS), range, &owner)?;
        Ok(Some(VmmJail {
            uid,
            gid: config.vmm_gid,
        }))
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
}

/// The uid in `reservations` whose file names `owner`, or the first free one of `(first,
/// count)`, reserved for it by creating its file (atomically: a uid taken by another vireod
/// meanwhile is skipped).
fn reserve_uid(
    reservations: &Path,
    (first, count): (u32, u32),
    owner: &str,
) -> std::io::Result<u32> {
    ensure_private_dir(reservations)?;
    for entry in std::fs::read_dir(reservations)?.filter_map(Result::ok) {
        let uid = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok());
        let Ok(held_by) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if held_by == owner {
            if let Some(uid) = uid {
                return Ok(uid);
            }
        }
        // The VM of a data dir that is gone (a removed vireod) no longer needs its uid.
        let data_dir = held_by.lines().next().unwrap_or_default();
        if !data_dir.is_empty() && !Path::new(data_dir).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for uid in (0..count).filter_map(|offset| first.checked_add(offset)) {
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(reservations.join(uid.to_string()));
        match created {
            Ok(mut file) => {
                file.write_all(owner.as_bytes())?;
                return Ok(uid);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "every uid of the VMM range {first}+{count} is reserved"
    )))
}

/// Makes sure `dir` (and its parents) exists, with mode 0700 whatever the umask.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vm_gets_a_uid_of_its_own_and_keeps_it() {
        let dir = std::env::temp_dir().join(format!("vireo-uids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let reservations = dir.join("reservations");
        let (ours, other) = (dir.join("data"), dir.join("other-data"));
        std::fs::create_dir_all(&ours).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let owner = |data: &Path, vm: u32| format!("{}\n{vm}\n", data.display());
        let range = (5000, 3);
        let a = reserve_uid(&reservations, range, &owner(&ours, 1)).unwrap();
        let b = reserve_uid(&reservations, range, &owner(&ours, 2)).unwrap();
        let c = reserve_uid(&reservations, range, &owner(&other, 1)).unwrap();
        let mut uids = vec![a, b, c];
        uids.sort();
        assert_eq!(uids, [5000, 5001, 5002], "distinct uids from the range");
        assert_eq!(
            reserve_uid(&reservations, range, &owner(&ours, 2)).unwrap(),
            b,
            "a VM keeps its uid"
        );
        assert!(
            reserve_uid(&reservations, range, &owner(&ours, 3)).is_err(),
            "a full range is an error, never a shared uid"
        );
        std::fs::remove_dir_all(&other).unwrap();
        assert_eq!(
            reserve_uid(&reservations, range, &owner(&ours, 3)).unwrap(),
            c,
            "the uid of a VM whose data dir is gone is taken back"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
