//! One authority for the snapshot tree: the disk trees say which VM snapshots exist and how
//! they descend (the layer ancestry of the first disk's tree); the snapshot list (`.vmsd`) only
//! adds what each one is called and captured. After a crash the two are made to agree here:
//! a snapshot some disks lack is finished (a journaled create) or dropped everywhere, a listed
//! snapshot without layers goes, an unlisted one is dropped from the trees (its layers stay
//! until consolidation), parents and the current snapshot are read from the tree, and no uid
//! is ever handed out twice.

use std::collections::{BTreeMap, BTreeSet};

use vireo_disk::tree::{DiskTree, LayerId, TreeError};

use super::super::disks::trees::{each, tree_snapshot_name, uid_of, DiskTreeError};
use super::vmsd::{SnapshotList, SnapshotMeta};

/// The VM snapshot uids in one tree.
fn uids(tree: &DiskTree) -> BTreeSet<u32> {
    tree.state()
        .snapshots
        .iter()
        .filter_map(|s| uid_of(&s.name))
        .collect()
}

/// Makes `list` and `trees` agree; `created` is a snapshot a journaled create was taking (kept
/// when its layers exist). Returns what was changed, one sentence each.
pub fn reconcile(
    list: &mut SnapshotList,
    trees: &mut [DiskTree],
    created: Option<&SnapshotMeta>,
) -> Result<Vec<String>, DiskTreeError> {
    let mut changes = Vec::new();
    // A create takes the uid after the last one; a journal naming another is not trusted.
    let created = created.filter(|meta| Some(meta.uid) == list.last_uid.checked_add(1));
    if let Some(meta) = created {
        list.last_uid = meta.uid;
    }
    let Some(first) = trees.first() else {
        return Ok(changes);
    };
    let mut everywhere = uids(first);
    let anywhere: BTreeSet<u32> = trees.iter().flat_map(uids).collect();
    for tree in trees.iter().skip(1) {
        everywhere = everywhere.intersection(&uids(tree)).copied().collect();
    }
    for &uid in anywhere.difference(&everywhere) {
        let name = tree_snapshot_name(uid);
        if created.is_some_and(|m| m.uid == uid) {
            each(trees, |tree| match tree.create_snapshot(&name) {
                Err(TreeError::SnapshotExists(_)) | Ok(_) => Ok(()),
                Err(error) => Err(error),
            })?;
            changes.push(format!("finished snapshot {uid} on every disk"));
        } else {
            forget_everywhere(trees, uid)?;
            changes.push(format!(
                "removed snapshot {uid} from the disks that still had it"
            ));
        }
    }
    let on_disk = uids(&trees[0]);
    for meta in list.snapshots.clone() {
        if !on_disk.contains(&meta.uid) {
            list.remove(meta.uid);
            changes.push(format!(
                "dropped snapshot '{}' ({}) from the list: its disk layers are gone",
                meta.name, meta.uid
            ));
        }
    }
    for &uid in &on_disk {
        if list.get(uid).is_some() {
            continue;
        }
        match created.filter(|m| m.uid == uid) {
            Some(meta) => {
                list.snapshots.push(meta.clone());
                changes.push(format!("listed snapshot '{}' ({uid})", meta.name));
            }
            None => {
                forget_everywhere(trees, uid)?;
                changes.push(format!(
                    "dropped unlisted snapshot {uid} from the disk trees (its layers wait for consolidation)"
                ));
            }
        }
    }
    if let Some(max) = anywhere
        .iter()
        .chain(list.snapshots.iter().map(|s| &s.uid))
        .max()
    {
        list.last_uid = list.last_uid.max(*max);
    }
    derive_structure(list, &trees[0], &mut changes);
    Ok(changes)
}

fn forget_everywhere(trees: &mut [DiskTree], uid: u32) -> Result<(), DiskTreeError> {
    let name = tree_snapshot_name(uid);
    each(trees, |tree| match tree.forget(&name) {
        Err(TreeError::NoSnapshot(_)) | Ok(()) => Ok(()),
        Err(error) => Err(error),
    })
}

/// Sets each snapshot's parent and the current snapshot from the tree's layer ancestry: the
/// nearest layer below that a VM snapshot holds.
fn derive_structure(list: &mut SnapshotList, tree: &DiskTree, changes: &mut Vec<String>) {
    let state = tree.state();
    let held: BTreeMap<LayerId, u32> = state
        .snapshots
        .iter()
        .filter_map(|s| Some((s.layer, uid_of(&s.name)?)))
        .collect();
    let below = |layer: LayerId| {
        state
            .chain(layer)
            .into_iter()
            .skip(1)
            .find_map(|l| held.get(&l).copied())
    };
    for meta in &mut list.snapshots {
        let Some(layer) = state
            .snapshots
            .iter()
            .find(|s| s.name == tree_snapshot_name(meta.uid))
            .map(|s| s.layer)
        else {
            continue;
        };
        let parent = below(layer);
        if meta.parent != parent {
            changes.push(format!(
                "snapshot {} descends from {parent:?} on disk, not {:?}",
                meta.uid, meta.parent
            ));
            meta.parent = parent;
        }
    }
    let current = below(state.active);
    if list.current != current {
        changes.push(format!(
            "the VM runs on from snapshot {current:?} on disk, not {:?}",
            list.current
        ));
        list.current = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::snapshots::vmsd::CapturedPower;
    use std::path::{Path, PathBuf};
    use vireo_disk::qcow2::{create, CreateOptions};

    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vireo-reconcile-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn disk(dir: &Path, name: &str) -> DiskTree {
        let path = dir.join(name);
        create(&path, &CreateOptions::new(1 << 20)).unwrap();
        DiskTree::open(&path).unwrap()
    }

    fn meta(uid: u32, name: &str) -> SnapshotMeta {
        SnapshotMeta {
            uid,
            parent: None,
            name: name.into(),
            description: String::new(),
            create_time: 0,
            power: CapturedPower::Off,
            quiesced: false,
        }
    }

    /// Issue 19's second failure: the tree took snapshot 2, the list was never saved.
    #[test]
    fn a_journaled_create_cut_short_is_finished_and_listed() {
        let dir = scratch("create");
        let mut trees = vec![disk(&dir, "a.qcow2"), disk(&dir, "b.qcow2")];
        let mut list = SnapshotList::default();
        list.add(meta(0, "one"));
        for tree in &mut trees {
            tree.create_snapshot("vm-snapshot-1").unwrap();
        }
        trees[0].create_snapshot("vm-snapshot-2").unwrap();
        let created = SnapshotMeta {
            parent: Some(1),
            ..meta(2, "two")
        };
        let changes = reconcile(&mut list, &mut trees, Some(&created)).unwrap();
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert_eq!(uids(&trees[1]), BTreeSet::from([1, 2]));
        assert_eq!(list.get(2).unwrap().parent, Some(1));
        assert_eq!((list.current, list.last_uid), (Some(2), 2));
        assert!(reconcile(&mut list, &mut trees, None).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Without a journal a snapshot the list does not know is dropped, yet its uid is never
    /// handed out again; a listed one whose layers are gone (a removal cut short) goes too.
    #[test]
    fn hidden_and_phantom_snapshots_are_dropped() {
        let dir = scratch("drop");
        let mut trees = vec![disk(&dir, "a.qcow2")];
        let mut list = SnapshotList::default();
        list.add(meta(0, "one"));
        list.add(meta(0, "two"));
        trees[0].create_snapshot("vm-snapshot-1").unwrap();
        trees[0].create_snapshot("vm-snapshot-3").unwrap();
        let changes = reconcile(&mut list, &mut trees, None).unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(list.snapshots.len(), 1);
        assert_eq!(list.current, Some(1));
        assert!(uids(&trees[0]) == BTreeSet::from([1]));
        assert!(trees[0].needs_consolidation());
        assert_eq!(list.add(meta(0, "next")), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A revert cut short between the trees and the list: the tree says which snapshot the VM
    /// runs on from.
    #[test]
    fn the_current_snapshot_is_read_from_the_tree() {
        let dir = scratch("current");
        let mut trees = vec![disk(&dir, "a.qcow2")];
        let mut list = SnapshotList::default();
        list.add(meta(0, "one"));
        list.add(meta(0, "two"));
        trees[0].create_snapshot("vm-snapshot-1").unwrap();
        trees[0].create_snapshot("vm-snapshot-2").unwrap();
        trees[0].revert("vm-snapshot-1").unwrap();
        let changes = reconcile(&mut list, &mut trees, None).unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(list.current, Some(1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
