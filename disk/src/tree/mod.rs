//! The snapshot tree of one virtual disk: layer files chained by backing files, snapshots
//! that hold frozen layers, one writable active leaf, and merges that keep every remaining
//! snapshot reading as before. The tree is described by a sidecar (`sidecar.rs`); merges are
//! journalled there so that a killed process leaves a tree that reads as before.
//!
//! Callers must keep the layer files closed (no VMM writing the active layer) while they
//! call mutating methods; the VMM reopens `active_path()` afterwards.

pub mod cbt;
mod estimate;
mod plan;
pub mod sidecar;

use std::path::{Path, PathBuf};

use crate::block::BlockError;
use crate::chain::{self, MergeError, Progress};
use crate::open::{probe_format, ImageFormat, OpenError};
use crate::qcow2::check::{self, CheckError};
use crate::qcow2::{create, BackingSpec, CreateError, CreateOptions, Qcow2Image, Qcow2Options};

pub use estimate::{ConsolidationEstimate, MergeEstimate};
pub use plan::Step;
use sidecar::SidecarError;
pub use sidecar::{LayerId, LayerRecord, MergePhase, PendingMerge, SnapshotRecord, TreeState};

/// File name suffix of tree sidecars (`disk.qcow2` → `disk.qcow2.vtree`).
pub const SIDECAR_SUFFIX: &str = ".vtree";

/// Why a tree operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The sidecar could not be read, parsed or written
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    /// A layer image could not be opened
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A new layer could not be created
    #[error(transparent)]
    Create(#[from] CreateError),
    /// A merge failed (or was cancelled; the tree then reads as before)
    #[error(transparent)]
    Merge(#[from] MergeError),
    /// Reading or writing a layer failed
    #[error(transparent)]
    Block(#[from] BlockError),
    /// A snapshot with this name already exists
    #[error("snapshot {0:?} already exists")]
    SnapshotExists(String),
    /// No snapshot has this name
    #[error("no snapshot named {0:?}")]
    NoSnapshot(String),
    /// A layer's backing file is not the layer the sidecar says
    #[error("{layer} ({file}) is backed by {found:?}, not by its parent in the tree")]
    Mismatch {
        /// The layer.
        layer: LayerId,
        /// Its file.
        file: PathBuf,
        /// The backing file its header names.
        found: Option<PathBuf>,
    },
    /// A layer could not be checked for leaked clusters
    #[error(transparent)]
    Check(#[from] CheckError),
    /// A layer file could not be removed
    #[error("cannot remove {path}: {source}")]
    Remove {
        /// The layer file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A disk's snapshot tree, opened from its sidecar.
pub struct DiskTree {
    sidecar: PathBuf,
    folder: PathBuf,
    state: TreeState,
}

impl DiskTree {
    /// Opens the tree of the disk whose root layer is `path` (or the sidecar `path` itself),
    /// creating a one-layer tree when the disk has none yet, and finishes or undoes a merge
    /// that an earlier process left half done.
    pub fn open(path: &Path) -> Result<Self, TreeError> {
        let is_sidecar = path.to_str().is_some_and(|p| p.ends_with(SIDECAR_SUFFIX));
        let sidecar = if is_sidecar {
            path.to_path_buf()
        } else {
            let mut name = path.as_os_str().to_owned();
            name.push(SIDECAR_SUFFIX);
            PathBuf::from(name)
        };
        let folder = sidecar
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let state = if is_sidecar || sidecar.exists() {
            TreeState::load(&sidecar)?
        } else {
            probe_format(path)?;
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            let state = TreeState::single(&file);
            state.validate().map_err(|reason| SidecarError::Invalid {
                path: sidecar.clone(),
                reason,
            })?;
            state.save(&sidecar)?;
            state
        };
        let mut tree = Self {
            sidecar,
            folder,
            state,
        };
        tree.recover()?;
        Ok(tree)
    }

    /// The sidecar file describing the tree.
    pub fn sidecar_path(&self) -> &Path {
        &self.sidecar
    }

    /// The tree as recorded (layers, snapshots, active layer).
    pub fn state(&self) -> &TreeState {
        &self.state
    }

    /// The writable leaf the virtual machine should open.
    pub fn active_path(&self) -> PathBuf {
        self.layer_path(self.state.active)
    }

    /// The file of layer `id`.
    pub fn layer_path(&self, id: LayerId) -> PathBuf {
        let file = self.state.layer(id).map_or("", |l| l.file.as_str());
        self.folder.join(file)
    }

    /// The layer held by snapshot `name`.
    pub fn snapshot_layer(&self, name: &str) -> Result<LayerId, TreeError> {
        self.state
            .snapshots
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.layer)
            .ok_or_else(|| TreeError::NoSnapshot(name.to_string()))
    }

    /// The files whose chain is snapshot `name`'s view of the disk, top first.
    pub fn chain_of(&self, name: &str) -> Result<Vec<PathBuf>, TreeError> {
        let layer = self.snapshot_layer(name)?;
        Ok(self.paths(&self.state.chain(layer)))
    }

    /// The files of the active chain, top first.
    pub fn active_chain(&self) -> Vec<PathBuf> {
        self.paths(&self.state.chain(self.state.active))
    }

    fn paths(&self, ids: &[LayerId]) -> Vec<PathBuf> {
        ids.iter().map(|&id| self.layer_path(id)).collect()
    }

    fn save(&self) -> Result<(), TreeError> {
        Ok(self.state.save(&self.sidecar)?)
    }

    /// The recorded state, for the change-tracking hooks (saved by `save_state`).
    pub(crate) fn state_mut(&mut self) -> &mut TreeState {
        &mut self.state
    }

    /// Writes the sidecar.
    pub(crate) fn save_state(&self) -> Result<(), TreeError> {
        self.save()
    }

    /// Freezes the active layer under snapshot `name` and starts a new active child of it.
    /// Returns the frozen layer. On failure (a full file system, say) the tree is as before.
    pub fn create_snapshot(&mut self, name: &str) -> Result<LayerId, TreeError> {
        if self.state.snapshots.iter().any(|s| s.name == name) {
            return Err(TreeError::SnapshotExists(name.to_string()));
        }
        self.all_or_nothing(|tree| {
            let frozen = tree.state.active;
            let live = cbt::take_live(tree, frozen)?;
            let child = tree.new_child(frozen)?;
            let change_id = cbt::record_snapshot(tree, live, child)?;
            tree.state.active = child;
            tree.state.snapshots.push(SnapshotRecord {
                name: name.to_string(),
                layer: frozen,
                change_id,
            });
            tree.save()?;
            Ok(frozen)
        })
    }

    /// Makes the disk read as snapshot `name` again: a new active child of its layer. The
    /// old active layer is dropped (no snapshot can hold it). Returns the new active layer.
    /// On failure before the new state is saved the tree is as before.
    pub fn revert(&mut self, name: &str) -> Result<LayerId, TreeError> {
        let target = self.snapshot_layer(name)?;
        let old = self.state.active;
        let old_path = self.layer_path(old);
        let child = self.all_or_nothing(|tree| {
            let child = tree.new_child(target)?;
            let record = tree.state.snapshots.iter().find(|s| s.name == name);
            let change_id = record.and_then(|s| s.change_id.clone());
            cbt::record_revert(tree, change_id.as_deref(), child)?;
            tree.state.layers.retain(|l| l.id != old);
            tree.state.active = child;
            tree.save()?;
            Ok(child)
        })?;
        remove_file(&old_path)?;
        Ok(child)
    }

    /// Runs `change`; when it fails the tree's state is restored and the layer files it made
    /// are removed, so that nothing half-made is left.
    fn all_or_nothing<T>(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<T, TreeError>,
    ) -> Result<T, TreeError> {
        let before = self.state.clone();
        let result = change(self);
        if result.is_err() {
            let made: Vec<PathBuf> = self
                .state
                .layers
                .iter()
                .filter(|l| !before.layers.iter().any(|b| b.id == l.id))
                .map(|l| self.folder.join(&l.file))
                .collect();
            self.state = before;
            for path in made {
                let _ = std::fs::remove_file(path);
            }
        }
        result
    }

    /// Deletes snapshot `name` and merges the layers nobody needs any more, so that every
    /// remaining snapshot and the active layer read exactly as before.
    pub fn delete(&mut self, name: &str, progress: Progress) -> Result<(), TreeError> {
        self.forget(name)?;
        self.consolidate(progress)
    }

    /// Deletes every snapshot and merges the active chain down into the root layer.
    pub fn delete_all(&mut self, progress: Progress) -> Result<(), TreeError> {
        self.forget_all()?;
        self.consolidate(progress)
    }

    /// Deletes snapshot `name` but leaves its layers in place (a removal without
    /// consolidation): every view reads as before, `needs_consolidation` tells whether
    /// `consolidate` has work to do. Touches only the sidecar, never a layer file.
    pub fn forget(&mut self, name: &str) -> Result<(), TreeError> {
        self.snapshot_layer(name)?;
        self.state.snapshots.retain(|s| s.name != name);
        self.save()
    }

    /// Holds the layer of snapshot `snapshot` under a second name `name` (a record without
    /// a changeId), e.g. for a linked clone whose disk is a child of that layer: merges and
    /// removals leave it untouched until `forget(name)`. Touches only the sidecar.
    pub fn hold(&mut self, name: &str, snapshot: &str) -> Result<LayerId, TreeError> {
        if self.state.snapshots.iter().any(|s| s.name == name) {
            return Err(TreeError::SnapshotExists(name.to_string()));
        }
        let layer = self.snapshot_layer(snapshot)?;
        self.state.snapshots.push(SnapshotRecord {
            name: name.to_string(),
            layer,
            change_id: None,
        });
        self.save()?;
        Ok(layer)
    }

    /// Deletes every snapshot, leaving the layers in place (see `forget`).
    pub fn forget_all(&mut self) -> Result<(), TreeError> {
        self.state.snapshots.clear();
        self.save()
    }

    /// Whether `consolidate` would remove or merge a layer (or finish a merge).
    pub fn needs_consolidation(&self) -> bool {
        self.state.next_step().is_some() || self.state.pending.is_some()
    }

    /// Removes dead layers and merges every layer that no snapshot holds and that has a
    /// single child. Progress is reported in bytes copied over the whole consolidation.
    pub fn consolidate(&mut self, progress: Progress) -> Result<(), TreeError> {
        let total = self.estimate_consolidation_space()?.bytes_to_copy;
        let mut before = 0;
        while let Some(step) = self.state.next_step() {
            match step {
                Step::RemoveLeaf(id) => {
                    let path = self.layer_path(id);
                    self.state.apply(step);
                    self.save()?;
                    remove_file(&path)?;
                }
                Step::Merge { child, parent } => {
                    let mut within =
                        |done: u64, _| progress(before + done, total.max(before + done));
                    before += self.merge(child, parent, &mut within)?;
                }
            }
        }
        Ok(())
    }

    /// Makes the root layer independent of the files below it (a linked clone's shared
    /// parent disks): copies into it what they provide, then drops its backing file. Every
    /// view reads as before at every moment; the parents are only read. Returns the bytes
    /// copied (0 when the root has no backing file).
    pub fn unlink_root(&mut self, progress: Progress) -> Result<u64, TreeError> {
        let root = self
            .state
            .layers
            .iter()
            .find(|l| l.parent.is_none())
            .map(|l| self.layer_path(l.id))
            .expect("a tree has a root layer");
        if chain::backing_files(&root)?.is_empty() {
            return Ok(0);
        }
        Ok(chain::rebase(&root, None, progress)?)
    }

    /// Space a consolidation would need and free, from the layers' L2 tables.
    pub fn estimate_consolidation_space(&self) -> Result<ConsolidationEstimate, TreeError> {
        estimate::estimate(&self.state, &self.folder)
    }

    /// Creates a new qcow2 layer backed by `parent` (same cluster size when it is qcow2) and
    /// records it (unsaved). Returns its id.
    fn new_child(&mut self, parent: LayerId) -> Result<LayerId, TreeError> {
        let parent_path = self.layer_path(parent);
        let format = probe_format(&parent_path)?;
        let disk = crate::open_disk(&parent_path, true)?;
        let mut options = CreateOptions::new(disk.capacity());
        if format == ImageFormat::Qcow2 {
            options.cluster_bits = open_read_only(&parent_path)?.header().cluster_bits;
        }
        let parent_file = self
            .state
            .layer(parent)
            .expect("parent exists")
            .file
            .clone();
        options.backing = Some(BackingSpec {
            name: parent_file.clone(),
            format,
        });
        let id = LayerId(self.state.next_layer);
        let root = self.state.layers.iter().find(|l| l.parent.is_none());
        let file = layer_file_name(&root.map_or(parent_file, |l| l.file.clone()), id);
        let path = self.folder.join(&file);
        let _ = std::fs::remove_file(&path); // a leftover of a process killed before saving
        if let Err(error) = create(&path, &options) {
            let _ = std::fs::remove_file(&path);
            return Err(error.into());
        }
        self.state.next_layer += 1;
        self.state.layers.push(LayerRecord {
            id,
            file,
            parent: Some(parent),
        });
        Ok(id)
    }

    /// Merges `child` into `parent`, journalled: returns the bytes copied.
    fn merge(
        &mut self,
        child: LayerId,
        parent: LayerId,
        progress: Progress,
    ) -> Result<u64, TreeError> {
        let child_path = self.layer_path(child);
        self.expect_backing(child, parent)?;
        self.state.pending = Some(PendingMerge {
            child,
            parent,
            phase: MergePhase::Copying,
        });
        self.save()?;
        let copied = match chain::commit(&child_path, false, progress) {
            Ok(copied) => copied,
            Err(e) => {
                // the parent's own view was not needed: the tree still reads as before, once
                // what the copy allocated there (a full file system, say) is given back
                self.release_leaked_clusters(parent)?;
                self.state.pending = None;
                self.save()?;
                return Err(e.into());
            }
        };
        if child == self.state.active {
            cbt::move_live(self, child, parent)?;
        }
        self.state.pending = Some(PendingMerge {
            child,
            parent,
            phase: MergePhase::Copied,
        });
        self.save()?;
        self.finish_merge(child, parent)?;
        Ok(copied)
    }

    /// Second half of a merge (also run by recovery): points the child's children at the
    /// parent, records the new shape, removes the child's file.
    fn finish_merge(&mut self, child: LayerId, parent: LayerId) -> Result<(), TreeError> {
        let parent_file = self
            .state
            .layer(parent)
            .expect("parent exists")
            .file
            .clone();
        let spec = BackingSpec {
            format: probe_format(&self.layer_path(parent))?,
            name: parent_file,
        };
        for grandchild in self.state.children(child) {
            let path = self.layer_path(grandchild);
            let mut image =
                Qcow2Image::open(&path, &Qcow2Options::default()).map_err(OpenError::from)?;
            image.set_backing(Some(&spec))?;
            image.close()?;
        }
        let child_path = self.layer_path(child);
        self.state.apply(Step::Merge { child, parent });
        self.state.pending = None;
        self.save()?;
        remove_file(&child_path)
    }

    /// Finishes a merge that reached the copied phase; forgets one that did not (the tree
    /// then reads as before and the merge can simply be run again).
    fn recover(&mut self) -> Result<(), TreeError> {
        if let Some(pending) = self.state.pending {
            self.release_leaked_clusters(pending.parent)?;
        }
        match self.state.pending {
            None => Ok(()),
            Some(PendingMerge {
                child,
                parent,
                phase: MergePhase::Copied,
            }) => self.finish_merge(child, parent),
            Some(PendingMerge {
                phase: MergePhase::Copying,
                ..
            }) => {
                self.state.pending = None;
                self.save()
            }
        }
    }

    /// Gives back the clusters of layer `id` that a merge cut short allocated and never mapped
    /// (refcounts written, tables not): a qcow2 check with repair of that layer. Images the
    /// checker does not walk (raw, internal snapshots) are left as they are.
    fn release_leaked_clusters(&self, id: LayerId) -> Result<(), TreeError> {
        let path = self.layer_path(id);
        if probe_format(&path)? != ImageFormat::Qcow2 {
            return Ok(());
        }
        match check::check(&path, true) {
            Ok(_) | Err(CheckError::Unsupported(..)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Removes the layer file a process killed between creating a layer and saving the
    /// sidecar left behind (the file the next layer would get). Only for a caller that knows
    /// no other process is creating a layer in this tree (e.g. at start, before any task).
    pub fn remove_leftover_layer(&self) -> Result<bool, TreeError> {
        let Some(root) = self.state.layers.iter().find(|l| l.parent.is_none()) else {
            return Ok(false);
        };
        let path = self
            .folder
            .join(layer_file_name(&root.file, LayerId(self.state.next_layer)));
        let found = path.exists();
        remove_file(&path)?;
        Ok(found)
    }

    /// Checks that layer `id`'s header names `parent`'s file as its backing file.
    fn expect_backing(&self, id: LayerId, parent: LayerId) -> Result<(), TreeError> {
        let path = self.layer_path(id);
        let image = open_read_only(&path)?;
        let found = image.backing_path().map(Path::to_path_buf);
        let same = |p: &Path| std::fs::canonicalize(p).ok();
        if found.as_deref().and_then(same) != same(&self.layer_path(parent)) {
            return Err(TreeError::Mismatch {
                layer: id,
                file: path,
                found,
            });
        }
        Ok(())
    }
}

/// `disk.qcow2` → `disk-000007.qcow2` for layer 7.
fn layer_file_name(root_file: &str, id: LayerId) -> String {
    let stem = Path::new(root_file)
        .file_stem()
        .map_or("disk".into(), |s| s.to_string_lossy().into_owned());
    format!("{stem}-{:06}.qcow2", id.0)
}

fn open_read_only(path: &Path) -> Result<Qcow2Image, TreeError> {
    let options = Qcow2Options {
        read_only: true,
        ..Qcow2Options::default()
    };
    Ok(Qcow2Image::open(path, &options).map_err(OpenError::from)?)
}

/// Removes a layer file; one already gone (an interrupted earlier attempt) is fine.
fn remove_file(path: &Path) -> Result<(), TreeError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(TreeError::Remove {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}
