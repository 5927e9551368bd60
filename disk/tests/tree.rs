//! The snapshot tree as the VirtualMachine snapshot API uses it: random writes, snapshots,
//! reverts, deletes and consolidations; after every step each snapshot and the active disk
//! must equal a raw model (`qemu-img compare`) and every layer must pass `qemu-img check`.
//! Also: the consolidation estimate against real allocation, and merges killed midway.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{assert_check_clean, assert_same_content, qemu_img, qemu_io, Rng, Scratch};
use vireo_disk::chain::MergeError;
use vireo_disk::qcow2::check::check;
use vireo_disk::tree::{DiskTree, TreeError};

const SIZE: u64 = 8 << 20;

/// A disk tree next to raw models of its active disk and of every snapshot.
struct Story {
    dir: Scratch,
    tree: DiskTree,
    active: PathBuf,
    snapshots: BTreeMap<String, PathBuf>,
    rng: Rng,
    next: u32,
}

impl Story {
    fn new(name: &str, seed: u64, root_args: &[&str]) -> Self {
        let dir = Scratch::new(name);
        let raw = root_args.contains(&"raw");
        let root = dir.path(if raw { "disk.img" } else { "disk.qcow2" });
        let mut args = vec!["create", "-q"];
        args.extend_from_slice(root_args);
        let size = SIZE.to_string();
        args.extend([root.to_str().unwrap(), size.as_str()]);
        qemu_img(&args);
        let active = dir.path("active.model");
        std::fs::File::create(&active)
            .unwrap()
            .set_len(SIZE)
            .unwrap();
        let tree = DiskTree::open(&root).unwrap();
        let mut story = Self {
            dir,
            tree,
            active,
            snapshots: BTreeMap::new(),
            rng: Rng::new(seed),
            next: 0,
        };
        story.scribble(12);
        story
    }

    /// Random writes, zero-writes and discards on the active layer and the model.
    fn scribble(&mut self, ops: u32) {
        let image = self.tree.active_path();
        common::scribble(&mut self.rng, &image, &self.active, SIZE, ops, 512, 6);
    }

    fn snapshot(&mut self) {
        self.next += 1;
        let name = format!("snap-{}", self.next);
        self.tree.create_snapshot(&name).unwrap();
        let model = self.dir.path(&format!("{name}.model"));
        std::fs::copy(&self.active, &model).unwrap();
        self.snapshots.insert(name, model);
    }

    fn pick(&mut self) -> Option<String> {
        let names: Vec<_> = self.snapshots.keys().cloned().collect();
        (!names.is_empty()).then(|| names[self.rng.below(names.len() as u64) as usize].clone())
    }

    fn revert(&mut self, name: &str) {
        self.tree.revert(name).unwrap();
        std::fs::copy(&self.snapshots[name], &self.active).unwrap();
    }

    fn delete(&mut self, name: &str) {
        self.tree.delete(name, &mut |_, _| true).unwrap();
        self.snapshots.remove(name);
    }

    /// Every snapshot and the active disk equal their models; every layer is clean.
    fn verify(&self) {
        for layer in &self.tree.state().layers {
            let path = self.tree.layer_path(layer.id);
            if layer.parent.is_some() || path.extension().is_some_and(|e| e == "qcow2") {
                assert_check_clean(&path, false);
            }
        }
        assert_same_content(&self.tree.active_path(), &self.active);
        for (name, model) in &self.snapshots {
            assert_same_content(&self.tree.chain_of(name).unwrap()[0], model);
        }
        let files = std::fs::read_dir(&self.dir.0).unwrap().filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.ends_with(".qcow2") || name == "disk.img"
        });
        assert_eq!(
            files.count(),
            self.tree.state().layers.len(),
            "stray layer files"
        );
    }
}

#[test]
fn random_snapshot_stories_read_like_their_models() {
    for seed in common::seeds(&[1, 2, 3]) {
        let cluster = if seed % 2 == 0 {
            "cluster_size=4k"
        } else {
            "cluster_size=64k"
        };
        let mut story = Story::new(
            &format!("story-{seed}"),
            seed,
            &["-f", "qcow2", "-o", cluster],
        );
        for _ in 0..14 {
            match story.rng.below(5) {
                0 | 1 => story.snapshot(),
                2 => {
                    if let Some(name) = story.pick() {
                        story.revert(&name)
                    }
                }
                3 => {
                    if let Some(name) = story.pick() {
                        story.delete(&name)
                    }
                }
                _ => story.tree.consolidate(&mut |_, _| true).unwrap(),
            }
            story.scribble(6);
            story.verify();
        }
        story.tree.delete_all(&mut |_, _| true).unwrap();
        story.snapshots.clear();
        story.verify();
        assert_eq!(story.tree.state().layers.len(), 1, "seed {seed}");
        assert_eq!(story.tree.active_path(), story.dir.path("disk.qcow2"));
    }
}

#[test]
fn a_raw_base_disk_takes_snapshots_and_merges() {
    let mut story = Story::new("raw-root", 7, &["-f", "raw"]);
    story.snapshot();
    story.scribble(10);
    story.snapshot();
    story.scribble(10);
    story.verify();
    let first = story.pick().unwrap();
    story.delete(&first);
    story.verify();
    story.tree.delete_all(&mut |_, _| true).unwrap();
    story.snapshots.clear();
    story.verify();
    assert_eq!(story.tree.active_path(), story.dir.path("disk.img"));
}

#[test]
fn revert_keeps_branches_that_snapshots_hold() {
    let mut story = Story::new("branches", 9, &["-f", "qcow2"]);
    story.snapshot(); // snap-1
    story.scribble(8);
    story.snapshot(); // snap-2
    story.revert("snap-1");
    story.scribble(8);
    story.snapshot(); // snap-3: a second child of snap-1's layer
    story.verify();
    // snap-1's layer has two children: deleting it must keep the layer
    let layers = story.tree.state().layers.len();
    story.delete("snap-1");
    story.verify();
    assert_eq!(story.tree.state().layers.len(), layers);
    assert!(matches!(
        story.tree.revert("snap-1"),
        Err(TreeError::NoSnapshot(_))
    ));
    assert!(matches!(
        story.tree.create_snapshot("snap-2"),
        Err(TreeError::SnapshotExists(_))
    ));
    // deleting snap-2 leaves a dead branch: removed; then the shared layer merges
    story.delete("snap-2");
    story.verify();
}

#[test]
fn forgetting_snapshots_keeps_their_layers_until_consolidation() {
    let mut story = Story::new("forget", 13, &["-f", "qcow2"]);
    for _ in 0..3 {
        story.snapshot();
        story.scribble(8);
    }
    let layers = story.tree.state().layers.len();
    assert!(!story.tree.needs_consolidation());
    story.tree.forget("snap-2").unwrap();
    story.snapshots.remove("snap-2");
    story.verify();
    assert_eq!(story.tree.state().layers.len(), layers);
    assert!(story.tree.needs_consolidation());
    // reopened from the sidecar: the same shape
    story.tree = DiskTree::open(&story.dir.path("disk.qcow2")).unwrap();
    assert_eq!(story.tree.state().layers.len(), layers);
    story.tree.forget_all().unwrap();
    story.snapshots.clear();
    story.verify();
    assert_eq!(story.tree.active_chain().len(), layers);
    story.tree.consolidate(&mut |_, _| true).unwrap();
    assert!(!story.tree.needs_consolidation());
    story.verify();
    assert_eq!(
        story.tree.active_chain(),
        vec![story.dir.path("disk.qcow2")]
    );
}

#[test]
fn a_held_layer_outlives_its_snapshot_until_the_hold_is_forgotten() {
    let mut story = Story::new("hold", 17, &["-f", "qcow2"]);
    story.snapshot();
    story.scribble(8);
    let held = story.tree.hold("linked-clone-x", "snap-1").unwrap();
    assert_eq!(held, story.tree.snapshot_layer("snap-1").unwrap());
    assert!(matches!(
        story.tree.hold("linked-clone-x", "snap-1"),
        Err(TreeError::SnapshotExists(_))
    ));
    let frozen = story.tree.layer_path(held);
    let before = std::fs::read(&frozen).unwrap();
    let model = story.snapshots.remove("snap-1").unwrap();
    story.tree.delete("snap-1", &mut |_, _| true).unwrap();
    story.verify();
    // the held layer is neither merged into nor removed: a clone built on it reads as before
    assert_eq!(std::fs::read(&frozen).unwrap(), before);
    assert_same_content(&story.tree.chain_of("linked-clone-x").unwrap()[0], &model);
    assert_eq!(story.tree.active_chain().len(), 2);
    story.tree.forget("linked-clone-x").unwrap();
    story.tree.consolidate(&mut |_, _| true).unwrap();
    story.verify();
    assert_eq!(
        story.tree.active_chain(),
        vec![story.dir.path("disk.qcow2")]
    );
}

#[test]
fn unlinking_the_root_copies_its_shared_parent_and_keeps_every_view() {
    let dir = Scratch::new("unlink");
    let (shared, root) = (dir.path("shared.qcow2"), dir.path("clone.qcow2"));
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        shared.to_str().unwrap(),
        "8M",
    ]);
    qemu_io(
        &shared,
        "qcow2",
        &["write -P 0x5a 0 1M", "write -P 0x6b 3M 512k"],
    );
    let backing = ["-b", "shared.qcow2", "-F", "qcow2"];
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend(backing);
    args.extend([root.to_str().unwrap(), "8M"]);
    qemu_img(&args);
    qemu_io(&root, "qcow2", &["write -P 0x11 512k 1M"]);
    let mut tree = DiskTree::open(&root).unwrap();
    assert_eq!(
        vireo_disk::chain::backing_files(&root).unwrap(),
        vec![shared.clone()]
    );
    tree.create_snapshot("s1").unwrap();
    qemu_io(&tree.active_path(), "qcow2", &["write -P 0x22 3M 64k"]);
    let (at_s1, now) = (dir.path("s1.raw"), dir.path("now.raw"));
    for (image, raw) in [(&root, &at_s1), (&tree.active_path(), &now)] {
        let (image, raw) = (image.to_str().unwrap(), raw.to_str().unwrap());
        qemu_img(&["convert", "-O", "raw", image, raw]);
    }
    let shared_before = std::fs::read(&shared).unwrap();

    assert!(tree.unlink_root(&mut |_, _| true).unwrap() > 0);
    assert!(vireo_disk::chain::backing_files(&root).unwrap().is_empty());
    assert_eq!(std::fs::read(&shared).unwrap(), shared_before);
    assert_check_clean(&root, false);
    assert_same_content(&tree.chain_of("s1").unwrap()[0], &at_s1);
    assert_same_content(&tree.active_path(), &now);
    assert_eq!(tree.unlink_root(&mut |_, _| true).unwrap(), 0);
    tree.delete_all(&mut |_, _| true).unwrap();
    assert_eq!(tree.active_chain(), vec![root.clone()]);
    assert_same_content(&root, &now);
}

/// Referenced clusters of a layer, by our checker.
fn referenced(path: &Path) -> u64 {
    let report = check(path, false).unwrap();
    assert!(report.corruptions.is_empty() && report.leaked_clusters == 0);
    report.referenced_clusters
}

#[test]
fn estimate_matches_the_space_consolidation_allocates() {
    for seed in common::seeds(&[31, 32]) {
        let mut story = Story::new(
            &format!("estimate-{seed}"),
            seed,
            &["-f", "qcow2", "-o", "cluster_size=16k"],
        );
        for _ in 0..3 {
            story.snapshot();
            story.scribble(20);
        }
        // deleting with an immediate cancel leaves layers that need consolidating
        for name in story.snapshots.keys().cloned().collect::<Vec<_>>() {
            let result = story.tree.delete(&name, &mut |_, _| false);
            assert!(
                matches!(result, Err(TreeError::Merge(MergeError::Cancelled))),
                "{result:?}"
            );
        }
        story.snapshots.clear();
        story.verify();
        let root = story.dir.path("disk.qcow2");
        let before = referenced(&root);
        let estimate = story.tree.estimate_consolidation_space().unwrap();
        assert_eq!(estimate.merges.len(), 3);
        let mut last = (0, 0);
        story
            .tree
            .consolidate(&mut |done, total| {
                assert!(done <= total && done >= last.0);
                last = (done, total);
                true
            })
            .unwrap();
        story.verify();
        assert_eq!(last, (estimate.bytes_to_copy, estimate.bytes_to_copy));
        let after = referenced(&root);
        let (mut new, mut freed, mut bound) = (0, 0, 0);
        for m in &estimate.merges {
            assert!(m.exact);
            new += m.new_clusters;
            freed += m.freed_clusters;
            bound += m.refcount_block_bound;
        }
        let grown = after + freed - before;
        assert!(
            grown >= new && grown <= new + bound,
            "seed {seed}: {before} -> {after} clusters, estimate {new} new, {freed} freed, {bound} refcount bound"
        );
        let map = qemu_img(&["check", "--output=json", root.to_str().unwrap()]);
        let json: serde_json::Value = serde_json::from_str(&map).unwrap();
        assert!(json["allocated-clusters"].as_u64().unwrap() <= after);
    }
}

/// A process killed between creating a layer file and saving the sidecar leaves a file the
/// tree never recorded (it may be a torn, unreadable qcow2); at start it is removed, and
/// nothing the tree records is touched.
#[test]
fn a_layer_file_never_recorded_is_removed_at_start() {
    let dir = Scratch::new("leftover-layer");
    let root = dir.path("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", root.to_str().unwrap(), "1M"]);
    let mut tree = DiskTree::open(&root).unwrap();
    tree.create_snapshot("one").unwrap();
    let leftover = dir.path(&format!("disk-{:06}.qcow2", tree.state().next_layer));
    std::fs::write(&leftover, b"QFI\xfb torn").unwrap();
    let tree = DiskTree::open(&root).unwrap();
    assert!(tree.remove_leftover_layer().unwrap());
    assert!(!leftover.exists());
    assert!(!tree.remove_leftover_layer().unwrap());
    for path in tree.active_chain() {
        assert_check_clean(&path, false);
    }
}
