//! The VM's disk set: every virtual disk's files (base, layer chain, parents), its tree of
//! layers ([`trees`]), its change tracking (`ctkEnabled`), its guest-visible size, and the
//! boot files a fresh boot reads. Power-on, clone, destroy and snapshots all go through here.

pub mod redo;
pub mod trees;

use std::path::PathBuf;

use vireo_api::Fault;
use vireo_disk::open::{open_disk_as, probe_format, ImageFormat};
use vireo_disk::tree::DiskTree;
use vireo_vmm_protocol::DiskFormat;

use super::spec::{DiskMode, VmSpec};
use super::{Vm, VmState};
use crate::faults;
use crate::host::Host;
use trees::{base_paths, open_all, DiskTreeError, DiskView};

/// extraConfig key holding whether changed-block tracking is configured (as on ESXi).
pub const CTK_ENABLED: &str = "ctkEnabled";

/// Whether the VM is configured for changed-block tracking.
pub fn tracking_configured(state: &VmState) -> bool {
    state
        .spec
        .extra(CTK_ENABLED)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Re-reads what the VM shows of its disks (after any change to their trees).
pub fn refresh(host: &Host, vm: &Vm, state: &mut VmState) {
    state.disk_views = trees::views(vm, &state.spec, &host.datastores());
}

/// Reads each disk's guest-visible size from its image, opened as its pinned format.
pub fn capacities(host: &Host, vm: &Vm, spec: &VmSpec) -> Vec<u64> {
    spec.disks
        .iter()
        .map(|d| {
            let format = d.format.unwrap_or(ImageFormat::Qcow2);
            vm.disk_path(&d.file_name, &host.datastores())
                .ok()
                .and_then(|p| open_disk_as(&p, format, true).ok())
                .map(|disk| disk.capacity())
                .unwrap_or(0)
        })
        .collect()
}

/// Pins the format of every disk whose `.vmx` does not record one yet (a VM from an older
/// host): probed once, now, and written into the `.vmx` (`diskN.format`).
pub fn pin_formats(host: &Host, vm: &Vm, spec: &mut VmSpec) {
    let mut pinned = false;
    for disk in spec.disks.iter_mut().filter(|d| d.format.is_none()) {
        let probed = vm
            .disk_path(&disk.file_name, &host.datastores())
            .map_err(|e| e.to_string())
            .and_then(|p| probe_format(&p).map_err(|e| e.to_string()));
        match probed {
            Ok(format) => {
                disk.format = Some(format);
                pinned = true;
            }
            Err(error) => {
                tracing::warn!(vm = vm.id, disk = %disk.file_name, "cannot pin the format: {error}")
            }
        }
    }
    if pinned {
        if let Err(error) = spec.to_vmx().write(&vm.vmx_file) {
            tracing::warn!(vm = vm.id, "cannot record the disks' formats: {error}");
        }
    }
}

/// The file each disk is opened from now (the top of its active chain, or a nonpersistent
/// disk's redo overlay while it has one) and that file's format: the pinned one while the
/// disk is its base file alone, qcow2 for a tree's layer or an overlay.
pub fn writable_layers(
    host: &Host,
    vm: &Vm,
    spec: &VmSpec,
    views: &[DiskView],
) -> Result<Vec<(PathBuf, ImageFormat)>, DiskTreeError> {
    let bases = base_paths(vm, spec, &host.datastores())?;
    Ok(bases
        .iter()
        .zip(&spec.disks)
        .zip(views)
        .filter_map(|((base, disk), view)| {
            let top = view.active.chain.first()?;
            let overlay = redo::overlay_of(base);
            if disk.mode == DiskMode::IndependentNonpersistent && overlay.is_file() {
                return Some((overlay, ImageFormat::Qcow2));
            }
            let format = match disk.format {
                Some(format) if top == base => format,
                _ => ImageFormat::Qcow2,
            };
            Some((top.clone(), format))
        })
        .collect())
}

/// The VMM's name for an image format.
pub fn vmm_format(format: ImageFormat) -> DiskFormat {
    match format {
        ImageFormat::Raw => DiskFormat::Raw,
        ImageFormat::Qcow2 => DiskFormat::Qcow2,
    }
}

/// Before a VMM starts (boot, resume, revert): applies the configured change tracking and
/// returns the file each disk must be opened from (its writable layer) with its format, each
/// checked to open with its whole backing chain inside the datastore.
pub fn prepare_launch(
    host: &Host,
    vm: &Vm,
    state: &mut VmState,
) -> Result<Vec<(PathBuf, ImageFormat)>, Fault> {
    base_paths(vm, &state.spec, &host.datastores()).map_err(|e| disk_fault(host, e))?;
    let tracking = tracking_configured(state);
    let has_trees = state
        .disk_views
        .iter()
        .any(|v| v.active.chain.len() > 1 || v.active.change_id.is_some());
    if tracking || has_trees {
        let mut trees =
            open_all(vm, &state.spec, &host.datastores()).map_err(|e| disk_fault(host, e))?;
        apply_tracking(host, &mut trees, tracking)?;
    }
    refresh(host, vm, state);
    let layers = writable_layers(host, vm, &state.spec, &state.disk_views)
        .map_err(|e| disk_fault(host, e))?;
    for (path, format) in &layers {
        open_disk_as(path, *format, true).map_err(|e| {
            faults::file_fault(
                host.schema,
                &path.display().to_string(),
                format!("cannot open the disk: {e}"),
            )
        })?;
    }
    Ok(layers)
}

/// Turns change tracking on or off in every tree (only the VMM's next open sees it).
pub fn apply_tracking(host: &Host, trees: &mut [DiskTree], enabled: bool) -> Result<(), Fault> {
    for tree in trees {
        let result = if enabled {
            tree.enable_tracking().map(drop)
        } else if tree.current_change_id().is_ok() {
            tree.disable_tracking()
        } else {
            Ok(())
        };
        result.map_err(|e| {
            faults::file_fault(
                host.schema,
                &tree.sidecar_path().display().to_string(),
                format!("cannot set up change tracking: {e}"),
            )
        })?;
    }
    Ok(())
}

/// A disk-tree failure as the API reports it.
pub fn disk_fault(host: &Host, error: DiskTreeError) -> Fault {
    let file = match &error {
        DiskTreeError::Location { file, .. } => file.clone(),
        DiskTreeError::Tree { path, .. } => path.display().to_string(),
    };
    faults::file_fault(host.schema, &file, error)
}

/// A boot file a fresh boot reads (the kernel or initrd named by extraConfig `key`): a
/// datastore path that must name an existing file.
pub fn boot_file(host: &Host, vm: &Vm, key: &str, value: &str) -> Result<PathBuf, Fault> {
    let schema = host.schema;
    let path = super::datastore_path::DatastorePath::parse(value)
        .and_then(|p| p.resolve(&host.datastores()))
        .map_err(|e| faults::invalid_vm_config(schema, key, format!("{key}: {e}")))?;
    if !path.is_file() {
        return Err(faults::file_not_found(
            schema,
            value,
            format!("{value} ({key} of {}) does not exist", vm.vmx_path),
        ));
    }
    Ok(path)
}
