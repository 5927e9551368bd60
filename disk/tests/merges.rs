//! Merges checked against QEMU: `chain::commit` must leave the base equal to what
//! `qemu-img commit` produces, `chain::rebase` equal to `qemu-img rebase`, and every image
//! must pass `qemu-img check` with the chain reading exactly as before.

mod common;

use std::path::Path;

use common::{assert_check_clean, qemu_img, qemu_io, Rng, Scratch};
use vireo_disk::chain::{commit, rebase, MergeError};
use vireo_disk::open::ImageFormat;
use vireo_disk::qcow2::BackingSpec;

/// Builds base <- mid <- top (4 MiB base under 8 MiB overlays) with random writes.
fn build_chain(dir: &Scratch, seed: u64) {
    let mut rng = Rng::new(seed);
    let base = dir.path("base.qcow2");
    let mid = dir.path("mid.qcow2");
    let top = dir.path("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        base.to_str().unwrap(),
        "4M",
    ]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        mid.to_str().unwrap(),
        "8M",
    ]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=16k",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
        "8M",
    ]);
    for (image, size) in [(&base, 4u64 << 20), (&mid, 8 << 20), (&top, 8 << 20)] {
        let mut cmds = Vec::new();
        for _ in 0..30 {
            let offset = rng.below(size / 512) * 512;
            let len = (rng.below(64) + 1) * 4096;
            let len = len.min(size - offset);
            let cmd = match rng.below(5) {
                0 => format!("write -z {offset} {len}"),
                1 => format!("discard {offset} {len}"),
                _ => format!("write -P {} {offset} {len}", rng.below(250) + 1),
            };
            cmds.push(cmd);
        }
        let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
        qemu_io(image, "qcow2", &refs);
    }
}

fn copy_dir(from: &Scratch, to: &Scratch) {
    for name in ["base.qcow2", "mid.qcow2", "top.qcow2"] {
        std::fs::copy(from.path(name), to.path(name)).unwrap();
    }
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

fn same(a: &Path, b: &Path) {
    let (code, text) = common::run(
        "qemu-img",
        &["compare", a.to_str().unwrap(), b.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{} != {}: {text}", a.display(), b.display());
}

#[test]
fn commit_matches_qemu_img_commit() {
    for seed in common::seeds(&[11, 12]) {
        let ours = Scratch::new(&format!("commit-ours-{seed}"));
        let theirs = Scratch::new(&format!("commit-qemu-{seed}"));
        build_chain(&ours, seed);
        copy_dir(&ours, &theirs);
        let before = ours.path("before.raw");
        to_raw(&ours.path("top.qcow2"), &before);

        let copied = commit(&ours.path("top.qcow2"), true, &mut |_, _| true).unwrap();
        assert!(copied > 0);
        qemu_img(&["commit", "-q", theirs.path("top.qcow2").to_str().unwrap()]);

        for name in ["mid.qcow2", "top.qcow2"] {
            assert_check_clean(&ours.path(name), false);
            same(&ours.path(name), &theirs.path(name));
        }
        same(&ours.path("top.qcow2"), &before);
        let map = qemu_img(&[
            "map",
            "--output=json",
            ours.path("top.qcow2").to_str().unwrap(),
        ]);
        assert!(
            !map.contains("\"depth\": 0"),
            "top is empty after commit:\n{map}"
        );
    }
}

#[test]
fn cancelled_commit_leaves_the_chain_reading_the_same() {
    let dir = Scratch::new("commit-cancel");
    build_chain(&dir, 5);
    let before = dir.path("before.raw");
    to_raw(&dir.path("top.qcow2"), &before);
    let mut calls = 0;
    let result = commit(&dir.path("top.qcow2"), true, &mut |_, _| {
        calls += 1;
        calls < 2
    });
    assert!(matches!(result, Err(MergeError::Cancelled)), "{result:?}");
    same(&dir.path("top.qcow2"), &before);
    assert_check_clean(&dir.path("mid.qcow2"), false);
}

#[test]
fn rebase_matches_qemu_img_rebase() {
    for seed in common::seeds(&[21, 22]) {
        let ours = Scratch::new(&format!("rebase-ours-{seed}"));
        let theirs = Scratch::new(&format!("rebase-qemu-{seed}"));
        build_chain(&ours, seed);
        copy_dir(&ours, &theirs);
        let before = ours.path("before.raw");
        to_raw(&ours.path("top.qcow2"), &before);

        // drop the middle layer: top now sits directly on base
        let spec = BackingSpec {
            name: "base.qcow2".into(),
            format: ImageFormat::Qcow2,
        };
        rebase(&ours.path("top.qcow2"), Some(&spec), &mut |_, _| true).unwrap();
        let top = theirs.path("top.qcow2");
        qemu_img(&[
            "rebase",
            "-q",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            top.to_str().unwrap(),
        ]);
        assert_check_clean(&ours.path("top.qcow2"), false);
        same(&ours.path("top.qcow2"), &before);
        same(&ours.path("top.qcow2"), &top);
        let info = qemu_img(&["info", ours.path("top.qcow2").to_str().unwrap()]);
        assert!(info.contains("backing file: base.qcow2"), "{info}");

        // and flatten completely (no backing file): the general, comparing path
        rebase(&ours.path("top.qcow2"), None, &mut |_, _| true).unwrap();
        assert_check_clean(&ours.path("top.qcow2"), false);
        same(&ours.path("top.qcow2"), &before);
    }
}
