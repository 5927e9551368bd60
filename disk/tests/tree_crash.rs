//! Merges killed midway: a child process deletes a snapshot (merging a 24 MiB layer into the
//! root) and is SIGKILLed at a random moment. Reopening the tree must leave every snapshot
//! and the active disk reading as before, with no cluster leaked by the cut-short copy;
//! finishing the consolidation must keep it so.
//! Default run: a few kills; `VIREO_DISK_LONG_TESTS=1`: 25.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{assert_check_clean, assert_same_content, qemu_img, qemu_io, Rng, Scratch};
use vireo_disk::tree::DiskTree;

const CHILD_ENV: &str = "VIREO_TREE_CRASH_CHILD";

/// The child: deletes snapshot "first" slowly (a pause per copied MiB) until killed.
#[test]
fn tree_crash_child_process() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return; // only does something when started by the parent test below
    };
    let mut tree = DiskTree::open(Path::new(&root)).unwrap();
    tree.delete("first", &mut |_, _| {
        std::thread::sleep(Duration::from_millis(4));
        true
    })
    .unwrap();
}

/// root (0x11 everywhere) <- "first" <- layer with 24 MiB of 0x22.. <- "second" <- active.
fn build(dir: &Scratch) {
    let root = dir.path("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", root.to_str().unwrap(), "32M"]);
    qemu_io(&root, "qcow2", &["write -P 0x11 0 32M"]);
    let mut tree = DiskTree::open(&root).unwrap();
    tree.create_snapshot("first").unwrap();
    let mut commands = Vec::new();
    for i in 0..24u64 {
        commands.push(format!(
            "write -P {} {} 1M",
            0x22 + i,
            i * (1 << 20) + 4096 * (i % 3)
        ));
    }
    commands.push("write -z 30M 1M".into());
    let refs: Vec<&str> = commands.iter().map(String::as_str).collect();
    qemu_io(&tree.active_path(), "qcow2", &refs);
    tree.create_snapshot("second").unwrap();
    qemu_io(&tree.active_path(), "qcow2", &["write -P 0x77 5M 3M"]);
}

fn to_raw(image: &Path, raw: &Path) {
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        image.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
}

fn verify(tree: &DiskTree, dir: &Scratch) {
    for layer in &tree.state().layers {
        assert_check_clean(&tree.layer_path(layer.id), false);
    }
    assert_same_content(
        &tree.chain_of("second").unwrap()[0],
        &dir.path("second.raw"),
    );
    assert_same_content(&tree.active_path(), &dir.path("active.raw"));
    if tree.snapshot_layer("first").is_ok() {
        assert_same_content(&tree.chain_of("first").unwrap()[0], &dir.path("first.raw"));
    }
}

#[test]
fn killed_merge_leaves_a_tree_that_reads_as_before() {
    let rounds = if std::env::var("VIREO_DISK_LONG_TESTS").is_ok() {
        25
    } else {
        3
    };
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::new(common::seeds(&[])[0]);
    for round in 0..rounds {
        let dir = Scratch::new(&format!("tree-crash-{round}"));
        build(&dir);
        let root = dir.path("disk.qcow2");
        {
            let tree = DiskTree::open(&root).unwrap();
            to_raw(&tree.chain_of("first").unwrap()[0], &dir.path("first.raw"));
            to_raw(
                &tree.chain_of("second").unwrap()[0],
                &dir.path("second.raw"),
            );
            to_raw(&tree.active_path(), &dir.path("active.raw"));
        }
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "tree_crash_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = rng.below(300);
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let mut tree = DiskTree::open(&root).unwrap();
        eprintln!(
            "round {round}: killed after {delay} ms ({status}), {} layers, first {}",
            tree.state().layers.len(),
            if tree.snapshot_layer("first").is_ok() {
                "kept"
            } else {
                "deleted"
            }
        );
        verify(&tree, &dir);
        match tree.snapshot_layer("first") {
            Ok(_) => tree.delete("first", &mut |_, _| true).unwrap(),
            Err(_) => tree.consolidate(&mut |_, _| true).unwrap(),
        }
        verify(&tree, &dir);
        assert_eq!(tree.state().layers.len(), 2);
        assert_eq!(tree.chain_of("second").unwrap()[0], root);
    }
}
