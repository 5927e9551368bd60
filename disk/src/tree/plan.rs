//! Pure decisions about a tree's shape: which layer consolidation touches next and how the
//! tree looks afterwards. No I/O, so the estimate can replay exactly what consolidation does.

use super::sidecar::{LayerId, TreeState};

/// One step of consolidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A frozen layer nobody needs (no snapshot, no children): delete it.
    RemoveLeaf(LayerId),
    /// Copy `child` into `parent` (no snapshot holds `parent`, `child` is its only child);
    /// `parent` then takes `child`'s place.
    Merge {
        /// The layer that disappears.
        child: LayerId,
        /// The layer that receives its clusters.
        parent: LayerId,
    },
}

impl TreeState {
    /// Depth of layer `id` (the root is 0).
    fn depth(&self, id: LayerId) -> usize {
        self.chain(id).len() - 1
    }

    /// The next consolidation step: dead leaves first, then the merge nearest the root
    /// (merging bottom-up copies each layer's clusters once).
    pub fn next_step(&self) -> Option<Step> {
        let unneeded = |id: LayerId| id != self.active && !self.is_held(id);
        if let Some(leaf) = self
            .layers
            .iter()
            .find(|l| unneeded(l.id) && self.children(l.id).is_empty())
        {
            return Some(Step::RemoveLeaf(leaf.id));
        }
        self.layers
            .iter()
            .filter(|l| unneeded(l.id))
            .filter_map(|l| match self.children(l.id)[..] {
                [child] => Some((self.depth(l.id), child, l.id)),
                _ => None,
            })
            .min()
            .map(|(_, child, parent)| Step::Merge { child, parent })
    }

    /// The tree after `step`: a removed leaf is gone; after a merge the parent has the
    /// child's children, snapshots and (if it was active) the active role.
    pub fn apply(&mut self, step: Step) {
        match step {
            Step::RemoveLeaf(id) => self.layers.retain(|l| l.id != id),
            Step::Merge { child, parent } => {
                self.layers.retain(|l| l.id != child);
                for l in &mut self.layers {
                    if l.parent == Some(child) {
                        l.parent = Some(parent);
                    }
                }
                for s in &mut self.snapshots {
                    if s.layer == child {
                        s.layer = parent;
                    }
                }
                if self.active == child {
                    self.active = parent;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::sidecar::{LayerRecord, SnapshotRecord};

    fn tree(parents: &[Option<u64>], active: u64, held: &[u64]) -> TreeState {
        TreeState {
            next_layer: parents.len() as u64 + 1,
            layers: parents
                .iter()
                .enumerate()
                .map(|(i, p)| LayerRecord {
                    id: LayerId(i as u64 + 1),
                    file: format!("l{}", i + 1),
                    parent: p.map(LayerId),
                })
                .collect(),
            active: LayerId(active),
            snapshots: held
                .iter()
                .map(|&l| SnapshotRecord {
                    name: format!("s{l}"),
                    layer: LayerId(l),
                    change_id: None,
                })
                .collect(),
            pending: None,
            tracking: None,
        }
    }

    #[test]
    fn consolidates_bottom_up_and_keeps_shared_layers() {
        // 1 <- 2 <- 3 <- 4 (active), 2 <- 5 (held), nothing holds 1 or 3
        let mut state = tree(&[None, Some(1), Some(2), Some(3), Some(2)], 4, &[2, 5]);
        assert_eq!(
            state.next_step(),
            Some(Step::Merge {
                child: LayerId(2),
                parent: LayerId(1)
            })
        );
        state.apply(state.next_step().unwrap());
        // 1 now holds snapshot s2 and has children 3 and 5; 3 (not held) has the one child 4
        assert_eq!(
            state.next_step(),
            Some(Step::Merge {
                child: LayerId(4),
                parent: LayerId(3)
            })
        );
        state.apply(state.next_step().unwrap());
        assert_eq!(state.active, LayerId(3));
        assert_eq!(state.next_step(), None);
        state.validate().unwrap();
    }

    #[test]
    fn removes_dead_leaves_first() {
        let state = tree(&[None, Some(1), Some(1)], 2, &[]);
        assert_eq!(state.next_step(), Some(Step::RemoveLeaf(LayerId(3))));
    }
}
