//! A VM's logs in its folder — `serial.log` (its console, written by the VMM) and
//! `vireo-vmm.log` (the VMM's own messages) — rotated and kept as ESXi keeps `vmware.log`:
//! at a size cap the text moves to `serial-1.log` (`-1` to `-2`, ...), and only so many older
//! files are kept, so a guest cannot fill the host's disk through its console. The cap and the
//! count are the VM's `.vmx` keys `log.rotateSize` and `log.keepOld`, else the host-wide
//! defaults (the advanced settings `vmx.log.rotateSize` / `vmx.log.keepOld`).
//!
//! vireod opens the serial log and its older files beneath the datastore and hands them to the
//! VMM open, which rotates by copying between them (a jailed VMM does not see the VM folder);
//! vireod rotates `vireo-vmm.log` itself before each VMM start, when it has reached the cap
//! (a VMM writes a few lines per run: why it could not start, held disks, its exit record).

use std::path::{Path, PathBuf};

use vireo_vmm_protocol::{log_rotation, LogRotation};

use super::beneath::Access;
use super::handoff::{Handoff, HandoffError};
use super::spec::VmSpec;
use super::Vm;
use crate::host::Host;
use crate::inventory::esxi::DatastoreDir;

/// The guest's console log.
pub const SERIAL_LOG: &str = "serial.log";
/// The VMM's own log (its stderr).
pub const VMM_LOG: &str = "vireo-vmm.log";
/// The `.vmx` key of the size (bytes) at which the VM's logs rotate.
pub const ROTATE_SIZE_KEY: &str = "log.rotateSize";
/// The `.vmx` key of how many older files of each log the VM keeps.
pub const KEEP_OLD_KEY: &str = "log.keepOld";

/// How the logs of the VM of `spec` rotate: its `.vmx` keys (clamped to the allowed range;
/// a `log.rotateSize` of 0, which on ESXi means never, or a value that is not a number takes
/// the host's default), else the host's defaults.
pub fn rotation(host: &Host, spec: &VmSpec) -> LogRotation {
    let defaults = crate::settings::vm_log_rotation(host);
    let number = |key| spec.extra(key).and_then(|v| v.trim().parse::<u64>().ok());
    let size = number(ROTATE_SIZE_KEY)
        .filter(|size| *size > 0)
        .map_or(defaults.size, |size| {
            size.clamp(LogRotation::MIN_SIZE, LogRotation::MAX_SIZE)
        });
    let keep = number(KEEP_OLD_KEY).map_or(defaults.keep, |keep| {
        keep.min(LogRotation::MAX_KEEP as u64) as usize
    });
    LogRotation { size, keep }
}

/// Opens the serial log at `path` (for appending) and its `rotation.keep` older files beneath
/// their datastore, created 0600 when missing, into `handoff`; returns the log's host path.
pub fn hand_serial_log(
    handoff: &mut Handoff,
    datastores: &[DatastoreDir],
    path: &Path,
    rotation: LogRotation,
) -> Result<PathBuf, HandoffError> {
    let live = handoff.add_opened(datastores, path, Access::Append)?;
    for n in 1..=rotation.keep {
        handoff.add_opened(datastores, &log_rotation(&live, n), Access::Update)?;
    }
    Ok(live)
}

/// Rotates the log at `path` once it holds `rotation.size` bytes or more: each older file
/// moves one place older (the oldest kept one is replaced) and the log becomes `-1`.
pub fn rotate_when_full(path: &Path, rotation: LogRotation) -> std::io::Result<()> {
    let len = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => meta.len(),
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if len < rotation.size {
        return Ok(());
    }
    if rotation.keep == 0 {
        return std::fs::remove_file(path);
    }
    for n in (1..rotation.keep).rev() {
        let older = log_rotation(path, n);
        if older.exists() {
            std::fs::rename(&older, log_rotation(path, n + 1))?;
        }
    }
    std::fs::rename(path, log_rotation(path, 1))
}

/// The older files of the VM's logs in its folder (`serial-N.log`, `vireo-vmm-N.log`), whatever
/// `log.keepOld` was when they were written.
pub fn rotations(vm: &Vm) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(&vm.dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| is_rotation(name))
        .map(|name| vm.file(&name))
        .collect();
    found.sort();
    found
}

/// Whether `name` is an older file of one of a VM's logs.
fn is_rotation(name: &str) -> bool {
    [SERIAL_LOG, VMM_LOG].iter().any(|log| {
        let stem = log.trim_end_matches(".log");
        name.strip_prefix(stem)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.strip_suffix(".log"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_log_moves_down_the_rotations_and_the_oldest_goes() {
        let dir = std::env::temp_dir().join(format!("vireo-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(VMM_LOG);
        let rotation = LogRotation { size: 8, keep: 2 };
        let read = |n: usize| std::fs::read_to_string(log_rotation(&log, n)).ok();
        for text in ["first run", "second run", "third run"] {
            rotate_when_full(&log, rotation).unwrap();
            std::fs::write(&log, text).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "third run");
        assert_eq!(read(1).as_deref(), Some("second run"));
        assert_eq!(read(2).as_deref(), Some("first run"));
        rotate_when_full(&log, rotation).unwrap();
        assert!(!log.exists());
        assert_eq!(read(1).as_deref(), Some("third run"));
        assert_eq!(read(2).as_deref(), Some("second run"));
        assert_eq!(read(3), None, "only keepOld older files");
        // A log under the cap stays.
        std::fs::write(&log, "short").unwrap();
        rotate_when_full(&log, rotation).unwrap();
        assert!(log.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotations_are_told_from_other_files() {
        for name in ["serial-1.log", "serial-42.log", "vireo-vmm-3.log"] {
            assert!(is_rotation(name), "{name}");
        }
        for name in [
            "serial.log",
            "serial-.log",
            "serial-1a.log",
            "web-1.log",
            "serial-1.png",
        ] {
            assert!(!is_rotation(name), "{name}");
        }
    }
}
