//! Independent-nonpersistent disks: from power-on, the guest writes into a redo overlay beside
//! the disk (`<disk file>-redo.qcow2`, a qcow2 child of the disk's file in its pinned format);
//! the overlay lives on through a suspend and is thrown away when the VM powers off, resets or
//! reverts to a snapshot, so that the disk reads as it did before the VM ran.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use vireo_api::Fault;
use vireo_disk::open::{open_disk_as, ImageFormat};
use vireo_disk::qcow2::{create as create_qcow2, BackingSpec, CreateOptions};

use super::super::jail::VmmJail;
use super::super::spec::{DiskMode, VmSpec};
use super::super::Vm;
use crate::faults;
use crate::host::Host;

/// The redo overlay of the disk whose file is `base`.
pub fn overlay_of(base: &Path) -> PathBuf {
    let mut name = OsString::from(base.as_os_str());
    name.push("-redo.qcow2");
    PathBuf::from(name)
}

/// The files of `spec`'s nonpersistent disks (the ones the datastore resolver accepts).
fn nonpersistent(host: &Host, vm: &Vm, spec: &VmSpec) -> Vec<(PathBuf, ImageFormat)> {
    spec.disks
        .iter()
        .filter(|d| d.mode == DiskMode::IndependentNonpersistent)
        .filter_map(|d| {
            let path = vm.disk_path(&d.file_name, &host.datastores()).ok()?;
            Some((path, d.format.unwrap_or(ImageFormat::Qcow2)))
        })
        .collect()
}

/// Before a VMM starts: a fresh boot (`fresh`) gets new, empty overlays; a resume keeps the
/// ones it ran on (made when missing). Each is given to the VMM's jail, which reopens it after
/// a live snapshot closed the disks.
pub fn prepare(host: &Host, vm: &Vm, spec: &VmSpec, fresh: bool) -> Result<(), Fault> {
    let schema = host.schema;
    for (base, format) in nonpersistent(host, vm, spec) {
        let overlay = overlay_of(&base);
        if fresh {
            remove(&overlay);
        } else if overlay.is_file() {
            continue;
        }
        let file = overlay.display().to_string();
        let fault = |e: String| faults::file_fault(schema, &file, e);
        let capacity = open_disk_as(&base, format, true)
            .map_err(|e| fault(format!("cannot read the disk: {e}")))?
            .capacity();
        let mut options = CreateOptions::new(capacity);
        options.backing = Some(BackingSpec {
            name: base
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            format,
        });
        create_qcow2(&overlay, &options)
            .map_err(|e| fault(format!("cannot create the redo overlay: {e}")))?;
        let jail = VmmJail::of(&host.config, vm.id)
            .map_err(|e| fault(format!("cannot reserve the VM's user: {e}")))?;
        if let Some(jail) = jail {
            jail.grant(&overlay)
                .map_err(|e| fault(format!("cannot give the overlay to the VM: {e}")))?;
        }
    }
    Ok(())
}

/// Once the VM is off: the guest's writes to its nonpersistent disks are gone.
pub fn discard(host: &Host, vm: &Vm, spec: &VmSpec) {
    for (base, _) in nonpersistent(host, vm, spec) {
        remove(&overlay_of(&base));
    }
}

fn remove(file: &Path) {
    if let Err(error) = std::fs::remove_file(file) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove {}: {error}", file.display());
        }
    }
}
