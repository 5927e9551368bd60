//! The snapshot-tree sidecar (`<root disk>.vtree`, JSON): which layer files exist, how they
//! chain, which snapshot holds which layer, the active layer, a merge in progress and the
//! change-tracking state. Loading validates everything; saving is atomic (temp, fsync, rename).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Format marker stored in every sidecar.
const FORMAT: &str = "vireo-disk-tree";
/// Sidecar layout version this code reads and writes.
const VERSION: u64 = 1;

/// Identifies one layer (one image file) of a disk tree; never reused within a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LayerId(pub u64);

impl std::fmt::Display for LayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "layer {}", self.0)
    }
}

/// One image file of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    /// The layer's identity.
    pub id: LayerId,
    /// File name inside the sidecar's folder.
    pub file: String,
    /// The layer it is an overlay of (its backing file); `None` for the root.
    pub parent: Option<LayerId>,
}

/// A named snapshot: the frozen layer whose chain is the disk as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Caller-chosen unique name.
    pub name: String,
    /// The frozen layer.
    pub layer: LayerId,
    /// The changeId of the disk at the snapshot, when change tracking was on.
    pub change_id: Option<String>,
}

/// How far a merge of `child` into `parent` got (see FORMAT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergePhase {
    /// Copying the child's clusters into the parent; the tree reads as before.
    Copying,
    /// The parent holds the child's view; the child's users are being moved to the parent.
    Copied,
}

/// A merge recorded before it starts, so that an interrupted one can be finished or undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingMerge {
    /// The layer whose contents move down.
    pub child: LayerId,
    /// The layer receiving them (no snapshot holds it, and `child` is its only child).
    pub parent: LayerId,
    /// Progress.
    pub phase: MergePhase,
}

/// Everything the sidecar holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeState {
    /// The next unused layer number.
    pub next_layer: u64,
    /// Every layer, root first is not required.
    pub layers: Vec<LayerRecord>,
    /// The writable leaf the virtual machine uses.
    pub active: LayerId,
    /// Snapshots in creation order.
    pub snapshots: Vec<SnapshotRecord>,
    /// A merge that was started and not finished.
    pub pending: Option<PendingMerge>,
    /// Change-tracking state, owned by the cbt module (opaque here).
    pub tracking: Option<Value>,
}

/// Why a sidecar could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The file could not be read or written
    #[error("{path}: {source}")]
    Io {
        /// The sidecar file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid tree description
    #[error("{path}: invalid disk tree: {reason}")]
    Invalid {
        /// The sidecar file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl TreeState {
    /// A tree with one layer, `file`, which is active.
    pub fn single(file: &str) -> Self {
        Self {
            next_layer: 2,
            layers: vec![LayerRecord {
                id: LayerId(1),
                file: file.to_string(),
                parent: None,
            }],
            active: LayerId(1),
            snapshots: Vec::new(),
            pending: None,
            tracking: None,
        }
    }

    /// The layer with `id`.
    pub fn layer(&self, id: LayerId) -> Option<&LayerRecord> {
        self.layers.iter().find(|l| l.id == id)
    }

    /// The layers whose parent is `id`.
    pub fn children(&self, id: LayerId) -> Vec<LayerId> {
        self.layers
            .iter()
            .filter(|l| l.parent == Some(id))
            .map(|l| l.id)
            .collect()
    }

    /// True when some snapshot holds layer `id`.
    pub fn is_held(&self, id: LayerId) -> bool {
        self.snapshots.iter().any(|s| s.layer == id)
    }

    /// Layer `id` and its ancestors, top first (cut after one lap of a cycle, which
    /// `validate` refuses).
    pub fn chain(&self, id: LayerId) -> Vec<LayerId> {
        let mut chain = Vec::new();
        let mut next = Some(id);
        while let Some(id) = next.filter(|_| chain.len() <= self.layers.len()) {
            chain.push(id);
            next = self.layer(id).and_then(|l| l.parent);
        }
        chain
    }

    /// Reads and validates the sidecar at `path`.
    pub fn load(path: &Path) -> Result<Self, SidecarError> {
        let text = std::fs::read_to_string(path).map_err(|source| SidecarError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |reason: String| SidecarError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let state = Self::from_json(&value).map_err(invalid)?;
        state.validate().map_err(invalid)?;
        Ok(state)
    }

    /// Writes the sidecar atomically: a temporary file, fsync, rename, fsync of the folder.
    pub fn save(&self, path: &Path) -> Result<(), SidecarError> {
        let io = |source| SidecarError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("vtree.tmp");
        let text = serde_json::to_string_pretty(&self.to_json()).expect("JSON values serialise");
        let written = File::create(&tmp)
            .and_then(|mut file| {
                file.write_all(text.as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(error) = written {
            // A full file system leaves the old sidecar and no temporary file.
            let _ = std::fs::remove_file(&tmp);
            return Err(io(error));
        }
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
        File::open(folder.unwrap_or(Path::new(".")))
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    fn to_json(&self) -> Value {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| json!({"id": l.id.0, "file": l.file, "parent": l.parent.map(|p| p.0)}))
            .collect();
        let snapshots: Vec<Value> = self
            .snapshots
            .iter()
            .map(|s| json!({"name": s.name, "layer": s.layer.0, "change-id": s.change_id}))
            .collect();
        let pending = self.pending.map(|p| {
            let phase = match p.phase {
                MergePhase::Copying => "copying",
                MergePhase::Copied => "copied",
            };
            json!({"child": p.child.0, "parent": p.parent.0, "phase": phase})
        });
        json!({
            "format": FORMAT,
            "version": VERSION,
            "next-layer": self.next_layer,
            "active": self.active.0,
            "layers": layers,
            "snapshots": snapshots,
            "pending-merge": pending,
            "change-tracking": self.tracking,
        })
    }

    fn from_json(v: &Value) -> Result<Self, String> {
        if v["format"] != FORMAT {
            return Err("not a vireo disk tree".into());
        }
        if v["version"] != VERSION {
            return Err(format!("unsupported version {}", v["version"]));
        }
        let layers = array(&v["layers"], "layers")?
            .iter()
            .map(|l| {
                Ok(LayerRecord {
                    id: LayerId(number(&l["id"], "layer id")?),
                    file: text(&l["file"], "layer file")?,
                    parent: optional(&l["parent"], |p| Ok(LayerId(number(p, "parent")?)))?,
                })
            })
            .collect::<Result<_, String>>()?;
        let snapshots = array(&v["snapshots"], "snapshots")?
            .iter()
            .map(|s| {
                Ok(SnapshotRecord {
                    name: text(&s["name"], "snapshot name")?,
                    layer: LayerId(number(&s["layer"], "snapshot layer")?),
                    change_id: optional(&s["change-id"], |c| text(c, "change-id"))?,
                })
            })
            .collect::<Result<_, String>>()?;
        let pending = optional(&v["pending-merge"], |p| {
            let phase = match p["phase"].as_str() {
                Some("copying") => MergePhase::Copying,
                Some("copied") => MergePhase::Copied,
                _ => return Err("bad merge phase".to_string()),
            };
            Ok(PendingMerge {
                child: LayerId(number(&p["child"], "merge child")?),
                parent: LayerId(number(&p["parent"], "merge parent")?),
                phase,
            })
        })?;
        Ok(Self {
            next_layer: number(&v["next-layer"], "next-layer")?,
            layers,
            active: LayerId(number(&v["active"], "active")?),
            snapshots,
            pending,
            tracking: optional(&v["change-tracking"], |t| Ok(t.clone()))?,
        })
    }

    /// Checks the structure: unique ids and names, plain file names, parents that exist and
    /// form no cycle, an active leaf, snapshots of existing non-active layers.
    pub fn validate(&self) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        for l in &self.layers {
            if !ids.insert(l.id) || l.id.0 >= self.next_layer {
                return Err(format!("{} is duplicated or beyond next-layer", l.id));
            }
            if l.file.is_empty() || l.file.contains('/') || l.file == ".." || l.file == "." {
                return Err(format!("{} has an invalid file name {:?}", l.id, l.file));
            }
        }
        for l in &self.layers {
            if let Some(p) = l.parent {
                if self.layer(p).is_none() {
                    return Err(format!("{} has a missing parent {p}", l.id));
                }
            }
            if self.chain(l.id).len() > self.layers.len() {
                return Err(format!("{} is part of a cycle", l.id));
            }
        }
        if self.layer(self.active).is_none() || !self.children(self.active).is_empty() {
            return Err("the active layer is missing or has children".into());
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.snapshots {
            if !names.insert(&s.name) || self.layer(s.layer).is_none() || s.layer == self.active {
                return Err(format!("snapshot {:?} is duplicated or invalid", s.name));
            }
        }
        if let Some(p) = self.pending {
            if self.layer(p.child).and_then(|l| l.parent) != Some(p.parent) {
                return Err("the pending merge does not match the tree".into());
            }
        }
        Ok(())
    }
}

fn array<'a>(v: &'a Value, what: &str) -> Result<&'a Vec<Value>, String> {
    v.as_array().ok_or_else(|| format!("{what} is not a list"))
}

fn number(v: &Value, what: &str) -> Result<u64, String> {
    v.as_u64().ok_or_else(|| format!("{what} is not a number"))
}

fn text(v: &Value, what: &str) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{what} is not a string"))
}

fn optional<T>(
    v: &Value,
    f: impl FnOnce(&Value) -> Result<T, String>,
) -> Result<Option<T>, String> {
    if v.is_null() {
        Ok(None)
    } else {
        f(v).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_broken_trees() {
        let mut state = TreeState::single("disk.qcow2");
        state.layers.push(LayerRecord {
            id: LayerId(2),
            file: "disk-000002.qcow2".into(),
            parent: Some(LayerId(1)),
        });
        state.next_layer = 3;
        state.active = LayerId(2);
        state.snapshots.push(SnapshotRecord {
            name: "s1".into(),
            layer: LayerId(1),
            change_id: Some("00 11/1".into()),
        });
        state.pending = Some(PendingMerge {
            child: LayerId(2),
            parent: LayerId(1),
            phase: MergePhase::Copied,
        });
        let back = TreeState::from_json(&state.to_json()).unwrap();
        assert_eq!(back, state);
        back.validate().unwrap();

        let mut cycle = state.clone();
        cycle.layers[0].parent = Some(LayerId(2));
        assert!(cycle.validate().is_err());
        let mut escape = state.clone();
        escape.layers[1].file = "../etc/passwd".into();
        assert!(escape.validate().is_err());
        let mut active_held = state.clone();
        active_held.snapshots[0].layer = LayerId(2);
        assert!(active_held.validate().is_err());
    }
}
