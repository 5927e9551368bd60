//! Concurrent requests through `SharedDisk`: several threads write, zero and read interleaved
//! 4 KiB stripes of an overlay whose clusters they share (so copy-on-write races with in-place
//! writes and reads); afterwards the image passes `qemu-img check` and equals a raw model.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{assert_check_clean, assert_same_content, qemu_img, qemu_io, seeds, Rng, Scratch};
use vireo_disk::open::ImageFormat;
use vireo_disk::qcow2::{create, BackingSpec, CreateOptions};
use vireo_disk::SharedDisk;

const MIB: u64 = 1 << 20;
const STRIPE: u64 = 4096;
const THREADS: u64 = 4;

/// Thread `t`'s random operations, confined to the stripes `s` with `s % THREADS == t`.
fn stripe_worker(disk: &SharedDisk, model: &std::fs::File, t: u64, seed: u64, ops: usize) {
    let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(t));
    let stripes = disk.capacity() / STRIPE;
    for _ in 0..ops {
        let stripe = rng.below(stripes / THREADS) * THREADS + t;
        let sectors = rng.below(8) + 1;
        let first = rng.below(8 - sectors + 1);
        let offset = stripe * STRIPE + first * 512;
        let len = sectors * 512;
        match rng.below(10) {
            0..=5 => {
                let data = vec![(rng.below(255) + 1) as u8; len as usize];
                disk.write_at(&data, offset).unwrap();
                model.write_all_at(&data, offset).unwrap();
            }
            6 => {
                disk.write_zeroes(offset, len).unwrap();
                model.write_all_at(&vec![0; len as usize], offset).unwrap();
            }
            7 => disk.flush().unwrap(),
            _ => {
                let mut got = vec![0u8; len as usize];
                let mut want = vec![0u8; len as usize];
                disk.read_at(&mut got, offset).unwrap();
                model.read_exact_at(&mut want, offset).unwrap();
                assert_eq!(got, want, "thread {t} read at {offset:#x}");
            }
        }
    }
}

fn concurrent_story(dir: &Path, seed: u64) {
    let size = 16 * MIB;
    let base = dir.join("base.qcow2");
    let top = dir.join("top.qcow2");
    let model_path = dir.join("model.raw");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "16M"]);
    qemu_io(&base, "qcow2", &["write -P 0x5a 0 12M", "write -z 4M 1M"]);
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        base.to_str().unwrap(),
        model_path.to_str().unwrap(),
    ]);
    let mut options = CreateOptions::new(size);
    options.backing = Some(BackingSpec {
        name: "base.qcow2".into(),
        format: ImageFormat::Qcow2,
    });
    create(&top, &options).unwrap();
    let model = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&model_path)
        .unwrap();
    {
        let disk = SharedDisk::open(&top, false).unwrap();
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (disk, model) = (&disk, &model);
                scope.spawn(move || stripe_worker(disk, model, t, seed, 400));
            }
        });
        disk.flush().unwrap();
    }
    assert_check_clean(&top, false);
    assert_same_content(&top, &model_path);
}

#[test]
fn concurrent_writers_on_shared_clusters_match_the_model() {
    for seed in seeds(&[1, 2]) {
        eprintln!("seed {seed}");
        let scratch = Scratch::new(&format!("shared-{seed}"));
        concurrent_story(&scratch.0, seed);
    }
}
