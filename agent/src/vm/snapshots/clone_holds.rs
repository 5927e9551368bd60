//! Linked clones' holds on another VM's disk layers: a linked clone's disk is a child of a
//! frozen layer of the source's disk tree, so that tree keeps the layer under a second name,
//! `linked-clone-<clone instanceUuid>`, which snapshot removal and consolidation leave alone
//! until the clone is destroyed or its disks are unlinked (PromoteDisks).

use std::path::{Path, PathBuf};

use vireo_api::Fault;
use vireo_disk::chain::backing_files;
use vireo_disk::tree::{DiskTree, TreeState, SIDECAR_SUFFIX};

use super::super::disks::trees::{base_paths, each, open_all, tree_snapshot_name};
use super::super::disks::{disk_fault, refresh};
use super::super::{Vm, VmState};
use crate::host::Host;

const PREFIX: &str = "linked-clone-";

/// The name of the holds a clone keeps.
pub(crate) fn hold_name(clone_instance_uuid: &str) -> String {
    format!("{PREFIX}{clone_instance_uuid}")
}

/// Holds every disk's layer of the source's snapshot `uid` for the clone; returns those
/// layer files in disk order (the parents of the clone's disks).
pub fn hold(
    host: &Host,
    source: &Vm,
    state: &VmState,
    uid: u32,
    clone_instance_uuid: &str,
) -> Result<Vec<PathBuf>, Fault> {
    let name = hold_name(clone_instance_uuid);
    let snapshot = tree_snapshot_name(uid);
    let mut trees =
        open_all(source, &state.spec, &host.datastores()).map_err(|e| disk_fault(host, e))?;
    let mut layers = Vec::new();
    let held = each(&mut trees, |tree| {
        let layer = tree.hold(&name, &snapshot)?;
        layers.push(tree.layer_path(layer));
        Ok(())
    });
    if let Err(error) = held {
        for tree in trees.iter_mut().take(layers.len()) {
            if let Err(error) = tree.forget(&name) {
                tracing::error!(vm = source.id, "cannot undo a linked clone's hold: {error}");
            }
        }
        return Err(disk_fault(host, error));
    }
    Ok(layers)
}

/// The layer each base file is a child of (when it is one), in order.
pub fn parents_of(bases: &[PathBuf]) -> Vec<PathBuf> {
    bases
        .iter()
        .filter_map(|base| backing_files(base).ok()?.into_iter().next())
        .collect()
}

/// Releases the holds the clone keeps on `parents` (the layers its disks are children of):
/// each in the tree that has that layer, the source's state locked while its trees change.
/// Failures are logged: a hold left behind only keeps a layer longer.
pub fn release(host: &Host, parents: &[PathBuf], clone_instance_uuid: &str) {
    let name = hold_name(clone_instance_uuid);
    for parent in parents {
        let folder = parent.parent().unwrap_or(Path::new("/")).to_path_buf();
        let file = parent.file_name().map(|f| f.to_string_lossy().into_owned());
        let source = host
            .vms
            .all()
            .into_iter()
            .find(|vm| same_dir(&vm.dir, &folder));
        let mut source_state = source.as_ref().map(|vm| vm.edit(host));
        for sidecar in sidecars(&folder) {
            let forgotten = DiskTree::open(&sidecar).and_then(|mut tree| {
                let has_layer = tree
                    .state()
                    .layers
                    .iter()
                    .any(|l| Some(&l.file) == file.as_ref());
                if has_layer && tree.snapshot_layer(&name).is_ok() {
                    tree.forget(&name)?;
                }
                Ok(())
            });
            if let Err(error) = forgotten {
                tracing::warn!(sidecar = %sidecar.display(), "cannot release a linked clone's hold: {error}");
            }
        }
        if let (Some(vm), Some(state)) = (&source, source_state.as_mut()) {
            refresh(host, vm, state);
        }
    }
}

/// The clones (their instanceUuids) holding layers of this VM's disks.
pub fn holders(host: &Host, vm: &Vm, state: &VmState) -> Vec<String> {
    let mut found: Vec<String> = base_paths(vm, &state.spec, &host.datastores())
        .unwrap_or_default()
        .iter()
        .filter_map(|base| {
            let mut sidecar = base.as_os_str().to_owned();
            sidecar.push(SIDECAR_SUFFIX);
            TreeState::load(Path::new(&sidecar)).ok()
        })
        .flat_map(|tree| tree.snapshots)
        .filter_map(|s| s.name.strip_prefix(PREFIX).map(str::to_string))
        .collect();
    found.sort();
    found.dedup();
    found
}

fn same_dir(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canonical(a) == canonical(b)
}

/// The tree sidecars in a folder.
fn sidecars(folder: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.to_str().is_some_and(|p| p.ends_with(SIDECAR_SUFFIX)))
                .collect()
        })
        .unwrap_or_default()
}
