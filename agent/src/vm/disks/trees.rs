//! The VM's disk trees: one `vireo_disk::tree::DiskTree` per virtual disk (its sidecar
//! `<base>.vtree` beside the disk's base file), VM snapshot `uid` ↔ tree snapshot
//! `vm-snapshot-<uid>`, and what the VM shows of each disk (the chain it runs on, each
//! snapshot's chain, its changeId). The `.vmx` keeps naming the base file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vireo_disk::chain::backing_files;
use vireo_disk::open::ImageFormat;
use vireo_disk::tree::{ConsolidationEstimate, DiskTree, TreeError, SIDECAR_SUFFIX};

use super::super::datastore_path::DatastorePathError;
use super::super::spec::VmSpec;
use super::super::Vm;
use crate::inventory::esxi::DatastoreDir;

/// One view of a disk: the VM's now, or a snapshot's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskState {
    /// The files read, the top layer first, down to the base and the base's own parents.
    pub chain: Vec<PathBuf>,
    /// backing.changeId: the changeId of this state (change tracking on).
    pub change_id: Option<String>,
}

/// What the VM shows of one disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskView {
    /// The VM's disk now (the writable layer on top).
    pub active: DiskState,
    /// Each VM snapshot's view of this disk, by snapshot uid.
    pub snapshots: BTreeMap<u32, DiskState>,
    /// Whether layers could be merged or removed (runtime.consolidationNeeded).
    pub consolidation_needed: bool,
}

/// Why a disk's tree could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskTreeError {
    /// The `.vmx` names a disk the datastore resolver refuses (outside, a symlink, missing).
    #[error("disk {file}: {source}")]
    Location {
        /// The file name as the `.vmx` has it.
        file: String,
        /// Why it was refused.
        source: DatastorePathError,
    },
    /// The tree failed.
    #[error("disk {path}: {source}")]
    Tree {
        /// The disk's base file.
        path: PathBuf,
        /// What failed.
        source: TreeError,
    },
}

/// The name a VM snapshot has in each disk tree.
pub fn tree_snapshot_name(uid: u32) -> String {
    format!("vm-snapshot-{uid}")
}

/// The VM snapshot uid a tree snapshot name stands for (other names: linked clones' holds).
pub fn uid_of(tree_name: &str) -> Option<u32> {
    tree_name.strip_prefix("vm-snapshot-")?.parse().ok()
}

/// The base file of every disk, in device order.
pub fn base_paths(
    vm: &Vm,
    spec: &VmSpec,
    datastores: &[DatastoreDir],
) -> Result<Vec<PathBuf>, DiskTreeError> {
    spec.disks
        .iter()
        .map(|d| {
            vm.disk_path(&d.file_name, datastores)
                .map_err(|source| DiskTreeError::Location {
                    file: d.file_name.clone(),
                    source,
                })
        })
        .collect()
}

/// Opens (creating when new) the tree of every disk, in device order.
pub fn open_all(
    vm: &Vm,
    spec: &VmSpec,
    datastores: &[DatastoreDir],
) -> Result<Vec<DiskTree>, DiskTreeError> {
    base_paths(vm, spec, datastores)?
        .into_iter()
        .map(|path| DiskTree::open(&path).map_err(|source| DiskTreeError::Tree { path, source }))
        .collect()
}

/// Opens (creating when new) the tree of every disk snapshots include, in device order:
/// independent disks are left out of snapshots, as on ESXi.
pub fn open_snapshotted(
    vm: &Vm,
    spec: &VmSpec,
    datastores: &[DatastoreDir],
) -> Result<Vec<DiskTree>, DiskTreeError> {
    base_paths(vm, spec, datastores)?
        .into_iter()
        .zip(&spec.disks)
        .filter(|(_, disk)| !disk.mode.is_independent())
        .map(|(path, _)| {
            DiskTree::open(&path).map_err(|source| DiskTreeError::Tree { path, source })
        })
        .collect()
}

/// Applies `change` to every tree in turn; the first failure stops it.
pub fn each(
    trees: &mut [DiskTree],
    mut change: impl FnMut(&mut DiskTree) -> Result<(), TreeError>,
) -> Result<(), DiskTreeError> {
    for tree in trees {
        change(tree).map_err(|source| DiskTreeError::Tree {
            path: tree.sidecar_path().to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// The tree sidecar of the disk whose base file is `base`.
pub fn sidecar_of(base: &Path) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    PathBuf::from(name)
}

/// What the VM shows of each disk; a disk without a tree (never snapshotted) is its base
/// file alone, one whose tree cannot be read too (logged). Every chain ends with the files
/// below the base (a linked clone's parent disks).
pub fn views(vm: &Vm, spec: &VmSpec, datastores: &[DatastoreDir]) -> Vec<DiskView> {
    let Ok(bases) = base_paths(vm, spec, datastores) else {
        return Vec::new();
    };
    bases
        .into_iter()
        .zip(&spec.disks)
        .map(|(base, disk)| {
            let parents = if disk.format == Some(ImageFormat::Raw) {
                // A raw disk has no parents, whatever header its guest wrote into it.
                Ok(Vec::new())
            } else {
                backing_files(&base)
            };
            let parents = parents.unwrap_or_else(|error| {
                tracing::warn!(vm = vm.id, disk = %base.display(), "cannot read the disk's parents: {error}");
                Vec::new()
            });
            let mut view = if !sidecar_of(&base).exists() {
                base_only(base)
            } else {
                match DiskTree::open(&base) {
                    Ok(tree) => view_of(&tree),
                    Err(error) => {
                        tracing::warn!(vm = vm.id, disk = %base.display(), "cannot read the disk tree: {error}");
                        base_only(base)
                    }
                }
            };
            for state in std::iter::once(&mut view.active).chain(view.snapshots.values_mut()) {
                state.chain.extend(parents.iter().cloned());
            }
            view
        })
        .collect()
}

fn base_only(base: PathBuf) -> DiskView {
    DiskView {
        active: DiskState {
            chain: vec![base],
            change_id: None,
        },
        ..DiskView::default()
    }
}

/// The view of one opened tree.
pub fn view_of(tree: &DiskTree) -> DiskView {
    let state = tree.state();
    let snapshots = state
        .snapshots
        .iter()
        .filter_map(|s| {
            let uid = uid_of(&s.name)?;
            let disk = DiskState {
                chain: tree.chain_of(&s.name).ok()?,
                change_id: s.change_id.clone(),
            };
            Some((uid, disk))
        })
        .collect();
    DiskView {
        active: DiskState {
            chain: tree.active_chain(),
            change_id: tree.current_change_id().ok().map(|id| id.to_string()),
        },
        snapshots,
        consolidation_needed: tree.needs_consolidation(),
    }
}

/// Space removing every snapshot of this disk would need: the estimate of the tree with its
/// VM snapshots dropped (linked clones' holds stay), computed from a scratch sidecar beside it
/// (the layers are only read).
pub fn estimate_without_snapshots(tree: &DiskTree) -> Result<ConsolidationEstimate, DiskTreeError> {
    let sidecar = tree.sidecar_path();
    let failed = |source| DiskTreeError::Tree {
        path: sidecar.to_path_buf(),
        source,
    };
    let mut state = tree.state().clone();
    if state.pending.is_some() {
        // A merge is half done: the estimate is that of the tree as it stands.
        return tree.estimate_consolidation_space().map_err(failed);
    }
    state.snapshots.retain(|s| uid_of(&s.name).is_none());
    let mut scratch = sidecar.as_os_str().to_owned();
    scratch.push(format!(".estimate-{}{SIDECAR_SUFFIX}", std::process::id()));
    let scratch = PathBuf::from(scratch);
    let estimate = state
        .save(&scratch)
        .map_err(TreeError::from)
        .and_then(|()| DiskTree::open(&scratch))
        .and_then(|copy| copy.estimate_consolidation_space());
    let _ = std::fs::remove_file(&scratch);
    estimate.map_err(failed)
}
