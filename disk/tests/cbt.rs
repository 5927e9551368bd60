//! Changed-block tracking as a backup application uses it: random writes, zero-writes and
//! discards across snapshots, reverts and merges; every query must cover every sector whose
//! content differs between the two states (checked against raw models), and the precision
//! (changed bytes / reported bytes) is printed. Also: the errors a caller must tell apart.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{qemu_img, Rng, Scratch};
use vireo_disk::open_disk;
use vireo_disk::tree::cbt::CbtError;
use vireo_disk::tree::DiskTree;

const SIZE: u64 = 16 << 20;
const CHILD_ENV: &str = "VIREO_CBT_CRASH_CHILD";

/// Sectors whose content differs between two raw models and that no extent covers.
fn misses(a: &Path, b: &Path, extents: &[(u64, u64)]) -> (Vec<u64>, u64) {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let mut missed = Vec::new();
    let mut changed = 0;
    for s in 0..SIZE / 512 {
        let r = (s * 512) as usize..(s * 512 + 512) as usize;
        if a[r.clone()] != b[r] {
            changed += 512;
            let at = s * 512;
            if !extents.iter().any(|&(o, l)| at >= o && at + 512 <= o + l) {
                missed.push(at);
            }
        }
    }
    (missed, changed)
}

struct Backup {
    dir: Scratch,
    tree: DiskTree,
    rng: Rng,
    active: PathBuf,
    /// changeId → model of the disk at that point.
    points: BTreeMap<String, PathBuf>,
    /// snapshot name → model.
    snapshots: BTreeMap<String, PathBuf>,
    next: u32,
    reported: u64,
    changed: u64,
}

/// A fresh qcow2 of SIZE bytes, made by qemu-img, as `disk.qcow2` in `dir`.
fn create_base(dir: &Scratch) -> PathBuf {
    let root = dir.path("disk.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        root.to_str().unwrap(),
        &SIZE.to_string(),
    ]);
    root
}

impl Backup {
    fn new(seed: u64) -> Self {
        let dir = Scratch::new(&format!("cbt-{seed}"));
        let root = create_base(&dir);
        let active = dir.path("active.model");
        std::fs::File::create(&active)
            .unwrap()
            .set_len(SIZE)
            .unwrap();
        let mut tree = DiskTree::open(&root).unwrap();
        let id = tree.enable_tracking().unwrap().to_string();
        let mut backup = Self {
            dir,
            tree,
            rng: Rng::new(seed),
            active,
            points: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            next: 0,
            reported: 0,
            changed: 0,
        };
        backup.remember(&id);
        backup
    }

    fn remember(&mut self, id: &str) -> PathBuf {
        let model = self.dir.path(&format!("point-{}.model", self.points.len()));
        std::fs::copy(&self.active, &model).unwrap();
        self.points.entry(id.to_string()).or_insert(model).clone()
    }

    fn scribble(&mut self, ops: u32) {
        let image = self.tree.active_path();
        common::scribble(&mut self.rng, &image, &self.active, SIZE, ops, 64, 5);
    }

    fn query(&mut self) {
        let ids: Vec<String> = self.points.keys().cloned().collect();
        let since = ids[self.rng.below(ids.len() as u64) as usize].clone();
        let names: Vec<String> = self.snapshots.keys().cloned().collect();
        let target = (!names.is_empty() && self.rng.below(2) == 0)
            .then(|| names[self.rng.below(names.len() as u64) as usize].clone());
        let extents = self
            .tree
            .changed_areas(&since, target.as_deref(), 0, SIZE)
            .unwrap();
        let target_model = target
            .as_ref()
            .map_or(self.active.clone(), |n| self.snapshots[n].clone());
        let (missed, changed) = misses(&self.points[&since], &target_model, &extents);
        assert!(
            missed.is_empty(),
            "since {since} to {target:?}: missed sectors at {missed:?}"
        );
        self.reported += extents.iter().map(|e| e.1).sum::<u64>();
        self.changed += changed;
    }

    fn step(&mut self) {
        match self.rng.below(6) {
            0 | 1 => {
                self.next += 1;
                let name = format!("s{}", self.next);
                self.tree.create_snapshot(&name).unwrap();
                let id = self
                    .tree
                    .state()
                    .snapshots
                    .last()
                    .unwrap()
                    .change_id
                    .clone()
                    .unwrap();
                let model = self.remember(&id);
                self.snapshots.insert(name, model);
            }
            2 if !self.snapshots.is_empty() => {
                let names: Vec<String> = self.snapshots.keys().cloned().collect();
                let name = names[self.rng.below(names.len() as u64) as usize].clone();
                self.tree.revert(&name).unwrap();
                std::fs::copy(&self.snapshots[&name], &self.active).unwrap();
                let id = self.tree.current_change_id().unwrap().to_string();
                assert!(
                    self.points.contains_key(&id),
                    "revert counts from the snapshot's point"
                );
            }
            3 if !self.snapshots.is_empty() => {
                let names: Vec<String> = self.snapshots.keys().cloned().collect();
                let name = names[self.rng.below(names.len() as u64) as usize].clone();
                self.tree.delete(&name, &mut |_, _| true).unwrap();
                self.snapshots.remove(&name);
            }
            _ => {}
        }
        self.scribble(8);
        for _ in 0..3 {
            self.query();
        }
    }
}

#[test]
fn changed_areas_never_miss_a_change_across_snapshots_reverts_and_merges() {
    for seed in common::seeds(&[1, 2, 3]) {
        let mut backup = Backup::new(seed);
        backup.scribble(10);
        for _ in 0..16 {
            backup.step();
        }
        backup.tree.delete_all(&mut |_, _| true).unwrap();
        backup.snapshots.clear();
        for _ in 0..5 {
            backup.query();
        }
        eprintln!(
            "seed {seed}: precision {:.2} ({} bytes changed, {} reported)",
            backup.changed as f64 / backup.reported.max(1) as f64,
            backup.changed,
            backup.reported
        );
        let info = qemu_img(&["info", backup.tree.active_path().to_str().unwrap()]);
        assert!(
            info.contains("vireo-cbt-") && info.contains("auto"),
            "{info}"
        );
    }
}

#[test]
fn star_reports_allocated_areas() {
    let mut backup = Backup::new(5);
    backup.scribble(20);
    backup.tree.create_snapshot("a").unwrap();
    let extents = backup.tree.changed_areas("*", Some("a"), 0, SIZE).unwrap();
    let zero = backup.dir.path("zero.model");
    std::fs::File::create(&zero).unwrap().set_len(SIZE).unwrap();
    let (missed, _) = misses(&zero, &backup.active, &extents);
    assert!(missed.is_empty());
    assert!(extents.iter().map(|e| e.1).sum::<u64>() < SIZE);
}

#[test]
fn unusable_change_ids_are_errors_the_caller_can_tell_apart() {
    let mut backup = Backup::new(9);
    let first = backup.points.keys().next().unwrap().clone();
    let other = "52 ab f5 21 86 ad f2 ff-5b ef c0 f2 3b 53 eb 3b/1";
    assert!(matches!(
        backup.tree.changed_areas(other, None, 0, SIZE),
        Err(CbtError::OtherTracking(_))
    ));
    assert!(matches!(
        backup.tree.changed_areas("nonsense", None, 0, SIZE),
        Err(CbtError::Malformed(_))
    ));
    let mut unknown: vireo_disk::tree::cbt::ChangeId = first.parse().unwrap();
    unknown.seq = 99;
    assert!(matches!(
        backup
            .tree
            .changed_areas(&unknown.to_string(), None, 0, SIZE),
        Err(CbtError::UnknownPoint(_))
    ));
    // a running writer holds the active layer: ask a snapshot instead
    let writer = open_disk(&backup.tree.active_path(), false).unwrap();
    assert!(matches!(
        backup.tree.changed_areas(&first, None, 0, SIZE),
        Err(CbtError::InUse(_))
    ));
    drop(writer);

    // a writer that dies without closing: everything issued before becomes stale
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cbt_crash_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, backup.tree.active_path())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(matches!(
        backup.tree.changed_areas(&first, None, 0, SIZE),
        Err(CbtError::Stale(_))
    ));
    assert!(matches!(
        backup.tree.changed_areas(&first, None, 0, SIZE),
        Err(CbtError::Stale(_))
    ));
    let fresh = backup.tree.current_change_id().unwrap().to_string();
    assert!(backup
        .tree
        .changed_areas(&fresh, None, 0, SIZE)
        .unwrap()
        .is_empty());

    backup.tree.disable_tracking().unwrap();
    assert!(matches!(
        backup.tree.changed_areas(&fresh, None, 0, SIZE),
        Err(CbtError::BeforeTracking(_))
    ));
    assert!(matches!(
        backup.tree.changed_areas(other, None, 0, SIZE),
        Err(CbtError::NotEnabled)
    ));
    let again = backup.tree.enable_tracking().unwrap().to_string();
    assert!(matches!(
        backup.tree.changed_areas(&fresh, None, 0, SIZE),
        Err(CbtError::BeforeTracking(_))
    ));
    assert!(backup
        .tree
        .changed_areas(&again, None, 0, SIZE)
        .unwrap()
        .is_empty());
}

/// The name of the tracking bitmap `qemu-img info` shows in `image`.
fn tracking_bitmap(image: &Path) -> String {
    let info = qemu_img(&["info", "--output=json", image.to_str().unwrap()]);
    let at = info.find("\"vireo-cbt-").expect("a tracking bitmap") + 1;
    info[at..at + info[at..].find('"').unwrap()].to_string()
}

#[test]
fn a_bitmap_that_stopped_recording_makes_change_ids_stale() {
    // The attacker (or an operator's tool) disables the bitmap, then writes behind it; or
    // removes it. Either way no changeId of that session may answer with a silent miss.
    for (case, command) in [("disabled", "--disable"), ("removed", "--remove")] {
        let dir = Scratch::new(&format!("cbt-{case}"));
        let root = create_base(&dir);
        let mut tree = DiskTree::open(&root).unwrap();
        let id = tree.enable_tracking().unwrap().to_string();
        let active = tree.active_path();
        let bitmap = tracking_bitmap(&active);
        qemu_img(&["bitmap", command, active.to_str().unwrap(), &bitmap]);
        for n in 0..22u64 {
            let write = format!("write -P 0x5a {} 4k", n * 131072);
            common::qemu_io(&active, "qcow2", &[write.as_str()]);
        }
        assert!(
            matches!(
                tree.changed_areas(&id, None, 0, SIZE),
                Err(CbtError::Stale(_))
            ),
            "{case}: a bitmap that did not record must not answer"
        );
        // Tracking starts again: the new changeId is good from here on.
        let fresh = tree.current_change_id().unwrap().to_string();
        assert_ne!(fresh, id);
        assert!(tree
            .changed_areas(&fresh, None, 0, SIZE)
            .unwrap()
            .is_empty());
    }
}

/// The child: writes to the image and exits without closing it (as a crashed VMM would).
#[test]
fn cbt_crash_child_process() {
    let Ok(image) = std::env::var(CHILD_ENV) else {
        return; // only does something when started by the parent test above
    };
    let mut disk = open_disk(Path::new(&image), false).unwrap();
    disk.write_at(&[7; 4096], 1 << 20).unwrap();
    disk.flush().unwrap();
    std::process::exit(0);
}
