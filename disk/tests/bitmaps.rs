//! Persistent dirty bitmaps in the qcow2 bitmaps extension, checked with QEMU: our bitmaps
//! show in `qemu-img info` and pass `qemu-img check`; QEMU's writes mark them; bitmaps QEMU
//! adds are maintained by our writes; an image killed while open keeps its bitmap `in_use`.

mod common;

use common::{assert_check_clean, qemu_img, qemu_io, Scratch};
use vireo_disk::qcow2::bitmaps::{DirtyBitmap, FLAG_AUTO, FLAG_IN_USE};
use vireo_disk::qcow2::check::check;
use vireo_disk::qcow2::{create, CreateOptions, Qcow2Image, Qcow2Options};
use vireo_disk::BlockDevice;

const SIZE: u64 = 64 << 20;

fn open(path: &std::path::Path, read_only: bool) -> Qcow2Image {
    let options = Qcow2Options {
        read_only,
        ..Qcow2Options::default()
    };
    Qcow2Image::open(path, &options).unwrap()
}

#[test]
fn our_bitmaps_are_qemu_bitmaps_and_both_sides_mark_them() {
    let dir = Scratch::new("bitmaps");
    let image = dir.path("disk.qcow2");
    let mut options = CreateOptions::new(SIZE);
    options.cluster_bits = 12;
    create(&image, &options).unwrap();
    let mut disk = open(&image, false);
    disk.write_at(&[1; 4096], 0).unwrap();
    disk.add_bitmap("track", DirtyBitmap::new(SIZE, 16))
        .unwrap();
    disk.write_at(&[2; 512], 3 << 20).unwrap();
    disk.write_zeroes(40 << 20, 128 << 10).unwrap();
    disk.discard(60 << 20, 4096).unwrap();
    disk.close().unwrap();

    let info = qemu_img(&["info", image.to_str().unwrap()]);
    assert!(
        info.contains("name: track") && info.contains("granularity: 65536"),
        "{info}"
    );
    assert!(info.contains("auto") && !info.contains("in-use"), "{info}");
    assert_check_clean(&image, false);
    let ours = check(&image, false).unwrap();
    assert!(
        ours.corruptions.is_empty() && ours.leaked_clusters == 0,
        "{ours:?}"
    );

    let expected = vec![(3 << 20, 65536), (40 << 20, 128 << 10), (60 << 20, 65536)];
    let stored = open(&image, true).read_bitmap("track").unwrap().unwrap();
    assert_eq!(stored.extents(0, SIZE), expected);

    // QEMU maintains our auto bitmap, and we maintain one QEMU adds
    qemu_io(&image, "qcow2", &["write -P 7 10M 4k"]);
    qemu_img(&[
        "bitmap",
        "--add",
        "-g",
        "4096",
        image.to_str().unwrap(),
        "theirs",
    ]);
    let mut disk = open(&image, false);
    let flags: Vec<_> = disk
        .bitmap_entries()
        .iter()
        .map(|e| (e.name.clone(), e.flags))
        .collect();
    assert!(
        flags
            .iter()
            .all(|(_, f)| f & FLAG_IN_USE != 0 && f & FLAG_AUTO != 0),
        "{flags:?}"
    );
    disk.write_at(&[3; 4096], 20 << 20).unwrap();
    disk.close().unwrap();
    let reopened = open(&image, true);
    let track = reopened.read_bitmap("track").unwrap().unwrap();
    assert!(track.extents(10 << 20, 4096) == vec![(10 << 20, 4096)]);
    assert_eq!(
        reopened
            .read_bitmap("theirs")
            .unwrap()
            .unwrap()
            .extents(0, SIZE),
        vec![(20 << 20, 4096)]
    );
    assert_check_clean(&image, false);
    // QEMU can read and merge what we stored
    qemu_img(&[
        "bitmap",
        "--merge",
        "track",
        image.to_str().unwrap(),
        "theirs",
    ]);
    assert_eq!(
        open(&image, true)
            .read_bitmap("theirs")
            .unwrap()
            .unwrap()
            .extents(0, SIZE)
            .len(),
        5
    );

    let mut disk = open(&image, false);
    disk.remove_bitmap("theirs").unwrap();
    disk.remove_bitmap("track").unwrap();
    disk.close().unwrap();
    let info = qemu_img(&["info", image.to_str().unwrap()]);
    assert!(!info.contains("name: t"), "{info}");
    assert_check_clean(&image, false);
}

#[test]
fn a_writer_that_never_closes_leaves_the_bitmap_in_use_and_locked() {
    let dir = Scratch::new("bitmaps-inuse");
    let image = dir.path("disk.qcow2");
    create(&image, &CreateOptions::new(SIZE)).unwrap();
    let mut disk = open(&image, false);
    disk.add_bitmap("track", DirtyBitmap::new(SIZE, 16))
        .unwrap();
    disk.close().unwrap();
    let mut writer = open(&image, false);
    writer.write_at(&[1; 4096], 0).unwrap();
    writer.flush().unwrap();
    // a second writer is refused while the first holds the image
    let options = Qcow2Options::default();
    assert!(Qcow2Image::open(&image, &options).is_err());
    std::mem::forget(writer); // as if the process died: no store at close
    let info = qemu_img(&["info", image.to_str().unwrap()]);
    assert!(info.contains("in-use"), "{info}");
}
