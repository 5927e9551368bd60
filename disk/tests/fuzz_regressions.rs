//! Hostile inputs found while fuzzing (disk/fuzz, `scripts/fuzz-disk.sh`): by the fuzzer itself
//! (a refcount block offset near 2^64) or by reviewing what its inputs can reach (bitmaps and
//! allocation maps sized by the header, not the file). Each is rebuilt by patching an image
//! qemu-img made and must give an error, a report or a small answer, never a panic or OOM.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::{qemu_img, Scratch};
use vireo_disk::block::BlockError;
use vireo_disk::qcow2::check::check;
use vireo_disk::qcow2::{ClusterState, Qcow2Image, Qcow2OpenError, Qcow2Options};

#[test]
fn refcount_block_offset_near_the_end_of_the_address_space() {
    let dir = Scratch::new("fuzz-reftable-overflow");
    let image = dir.path("d.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", image.to_str().unwrap(), "1M"]);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    let mut field = [0u8; 8];
    file.read_exact_at(&mut field, 48).unwrap();
    let reftable = u64::from_be_bytes(field);
    // the second refcount table entry: a block offset whose end overflows 64 bits
    file.write_all_at(&0xffff_ffff_ffff_fe00u64.to_be_bytes(), reftable + 8)
        .unwrap();
    let report = check(&image, false).unwrap();
    assert!(
        report
            .corruptions
            .iter()
            .any(|c| c.contains("beyond the end of the file")),
        "{:?}",
        report.corruptions
    );
}

/// Reads a big-endian u64 at `offset` of `file`.
fn be64(file: &std::fs::File, offset: u64) -> u64 {
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, offset).unwrap();
    u64::from_be_bytes(b)
}

/// The host offset of the bitmap directory named by the header's bitmaps extension.
fn bitmap_directory(file: &std::fs::File) -> u64 {
    let mut at = 112; // header extensions follow the 112-byte v3 header
    loop {
        let kind_len = be64(file, at);
        let (kind, len) = ((kind_len >> 32) as u32, kind_len & 0xffff_ffff);
        assert_ne!(kind, 0, "no bitmaps extension");
        if kind == 0x2385_2875 {
            return be64(file, at + 8 + 16);
        }
        at += 8 + len.next_multiple_of(8);
    }
}

#[test]
fn bitmap_whose_bit_array_would_not_fit_in_memory() {
    let dir = Scratch::new("fuzz-huge-bitmap");
    let image = dir.path("d.qcow2");
    let path = image.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", path, "28T"]);
    qemu_img(&["bitmap", "--add", path, "b0"]);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    let entry = bitmap_directory(&file);
    // granularity 512 bytes: 28 TiB / 512 / 8 = 7 GiB of bits (table of 114688 clusters)
    file.write_all_at(&0u64.to_be_bytes(), entry).unwrap();
    file.write_all_at(&114_688u32.to_be_bytes(), entry + 8)
        .unwrap();
    file.write_all_at(&[9], entry + 17).unwrap();
    refused_as_corrupt(&image, "larger than");
}

/// Opens `image` read-only and expects a corruption error whose reason contains `why`.
fn refused_as_corrupt(image: &std::path::Path, why: &str) {
    let options = Qcow2Options {
        read_only: true,
        ..Qcow2Options::default()
    };
    match Qcow2Image::open(image, &options) {
        Err(Qcow2OpenError::Metadata(BlockError::Corrupt { reason, .. })) => {
            assert!(reason.contains(why), "{reason}")
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("{} was opened", image.display()),
    }
}

#[test]
fn bitmaps_whose_bit_arrays_add_up_to_too_much_memory() {
    let dir = Scratch::new("fuzz-many-bitmaps");
    let image = dir.path("d.qcow2");
    let path = image.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", path, "28T"]);
    for name in ["b0", "b1", "b2"] {
        qemu_img(&["bitmap", "--add", path, name]);
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    let directory = bitmap_directory(&file);
    // granularity 8 KiB: 448 MiB of bits each (7168 table clusters), 1344 MiB for three
    for i in 0..3 {
        let entry = directory + i * 32; // 24 fixed bytes + a 2-byte name, padded to 8
        file.write_all_at(&0u64.to_be_bytes(), entry).unwrap();
        file.write_all_at(&7168u32.to_be_bytes(), entry + 8)
            .unwrap();
        file.write_all_at(&[13], entry + 17).unwrap();
    }
    refused_as_corrupt(&image, "in total");
}

#[test]
fn allocation_map_of_a_huge_sparse_disk_is_small() {
    // 1 PiB of 64 KiB clusters: a dense per-cluster map would need 16 GiB
    let dir = Scratch::new("fuzz-huge-map");
    let image = dir.path("d.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", image.to_str().unwrap(), "1P"]);
    common::qemu_io(&image, "qcow2", &["write -P 1 512T 4k"]);
    let options = Qcow2Options {
        read_only: true,
        ..Qcow2Options::default()
    };
    let map = Qcow2Image::open(&image, &options)
        .unwrap()
        .allocation_map()
        .unwrap();
    let allocated: Vec<_> = map.allocated().collect();
    assert_eq!(allocated, vec![((512u64 << 40) >> 16, ClusterState::Owned)]);
}
