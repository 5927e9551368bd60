//! Corrupt and hostile images: truncated tables, L2 entries pointing past the end of the
//! file or into metadata, bad refcount blocks, backing loops, absurd sizes, random damage.
//! Every case must give an error, never a panic or a huge allocation.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{qemu_img, qemu_io, Rng, Scratch};
use vireo_disk::block::BlockError;
use vireo_disk::open::OpenError;
use vireo_disk::open_disk;
use vireo_disk::qcow2::Qcow2OpenError;

fn be64_at(path: &Path, offset: u64) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, offset).unwrap();
    u64::from_be_bytes(b)
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// A 64 KiB-cluster image with data in its first cluster; returns (L1 offset, L2 offset).
fn image_with_data(path: &Path) -> (u64, u64) {
    qemu_img(&["create", "-q", "-f", "qcow2", path.to_str().unwrap(), "64M"]);
    qemu_io(path, "qcow2", &["write -P 7 0 64k"]);
    let l1 = be64_at(path, 40);
    let l2 = be64_at(path, l1) & 0x00ff_ffff_ffff_fe00;
    (l1, l2)
}

fn read_fails_as_corrupt(path: &Path) {
    let mut disk = open_disk(path, true).unwrap();
    let mut buf = vec![0u8; 4096];
    let err = disk.read_at(&mut buf, 0).unwrap_err();
    assert!(matches!(err, BlockError::Corrupt { .. }), "{err}");
}

#[test]
fn data_cluster_past_the_end_of_the_file() {
    let dir = Scratch::new("past-eof");
    let image = dir.path("d.qcow2");
    let (_, l2) = image_with_data(&image);
    patch(&image, l2, &((1u64 << 63) | (1 << 40)).to_be_bytes());
    read_fails_as_corrupt(&image);
}

#[test]
fn data_cluster_inside_the_header_or_tables() {
    let dir = Scratch::new("into-header");
    let image = dir.path("d.qcow2");
    let (l1, l2) = image_with_data(&image);
    for target in [0x200u64, 0x10000, l1] {
        patch(&image, l2, &((1u64 << 63) | target).to_be_bytes());
        read_fails_as_corrupt(&image);
        let mut disk = open_disk(&image, false).unwrap();
        assert!(
            disk.write_at(&[1; 512], 0).is_err(),
            "write into metadata at {target:#x}"
        );
    }
}

#[test]
fn l1_pointing_into_the_refcount_table() {
    let dir = Scratch::new("l1-bad");
    let image = dir.path("d.qcow2");
    let (l1, _) = image_with_data(&image);
    patch(&image, l1, &((1u64 << 63) | 0x10000).to_be_bytes());
    read_fails_as_corrupt(&image);
}

#[test]
fn truncated_tables() {
    let dir = Scratch::new("truncated");
    let image = dir.path("d.qcow2");
    let (_, l2) = image_with_data(&image);
    std::fs::File::options()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(l2 + 100)
        .unwrap();
    read_fails_as_corrupt(&image); // L2 table cut short
    std::fs::File::options()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(0x20000)
        .unwrap();
    assert!(
        open_disk(&image, true).is_err(),
        "L1 table beyond the end of the file"
    );
    std::fs::File::options()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(50)
        .unwrap();
    assert!(open_disk(&image, true).is_err(), "header cut short");
}

#[test]
fn refcount_block_past_the_end_of_the_file() {
    let dir = Scratch::new("refblock");
    let image = dir.path("d.qcow2");
    image_with_data(&image);
    let reftable = be64_at(&image, 48);
    patch(&image, reftable, &(1u64 << 40).to_be_bytes());
    let mut disk = open_disk(&image, false).unwrap();
    assert!(disk.write_at(&[1; 512], 32 << 20).is_err());
}

#[test]
fn backing_loops_are_refused() {
    let dir = Scratch::new("loop");
    let a = dir.path("a.qcow2");
    let b = dir.path("b.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", a.to_str().unwrap(), "1M"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "a.qcow2",
        "-F",
        "qcow2",
        b.to_str().unwrap(),
        "1M",
    ]);
    qemu_img(&[
        "rebase",
        "-q",
        "-u",
        "-b",
        "b.qcow2",
        "-F",
        "qcow2",
        a.to_str().unwrap(),
    ]);
    let err = open_disk(&b, true).err().expect("loop must be refused");
    assert!(
        matches!(err, OpenError::Qcow2(Qcow2OpenError::BackingLoop(_))),
        "{err}"
    );
}

#[test]
fn absurd_sizes_are_refused() {
    let dir = Scratch::new("huge");
    let image = dir.path("d.qcow2");
    image_with_data(&image);
    patch(&image, 24, &(1u64 << 61).to_be_bytes()); // size without a matching L1
    assert!(open_disk(&image, true).is_err());
    patch(&image, 36, &u32::MAX.to_be_bytes()); // 32 GiB L1 table
    assert!(open_disk(&image, true).is_err());
    patch(&image, 56, &u32::MAX.to_be_bytes()); // enormous refcount table
    assert!(open_disk(&image, false).is_err());
}

#[test]
fn random_metadata_damage_never_panics() {
    let dir = Scratch::new("random-damage");
    let pristine = dir.path("pristine.qcow2");
    let (_, l2) = image_with_data(&pristine);
    qemu_io(&pristine, "qcow2", &["write -P 9 1M 1M", "write -z 4M 1M"]);
    let image = dir.path("d.qcow2");
    let mut rng = Rng::new(99);
    for _ in 0..200 {
        std::fs::copy(&pristine, &image).unwrap();
        for _ in 0..8 {
            let region = [0u64, 0x10000, 0x20000, 0x30000, l2][rng.below(5) as usize];
            let at = region + rng.below(512);
            patch(&image, at, &[rng.next() as u8]);
        }
        if let Ok(mut disk) = open_disk(&image, rng.below(2) == 0) {
            let mut buf = vec![0u8; 1 << 20];
            for off in (0..disk.capacity().min(8 << 20)).step_by(1 << 20) {
                let _ = disk.read_at(&mut buf, off);
            }
            let _ = disk.write_at(&[3; 4096], 2 << 20);
            let _ = disk.flush();
        }
    }
}
