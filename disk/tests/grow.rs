//! Growing images: what the guest wrote stays, the new space reads as zeros and takes writes,
//! and qemu-img agrees on the new size, the content (against a raw model grown alike) and the
//! image's consistency. Shrinking, images with CBT bitmaps and qemu-made images are covered.

mod common;

use std::os::unix::fs::FileExt;

use common::{assert_check_clean, assert_same_content, qemu_img, qemu_io, Scratch};
use vireo_disk::grow::{grow_image, GrowError};
use vireo_disk::open::ImageFormat;
use vireo_disk::open_disk;
use vireo_disk::qcow2::{create, BackingSpec, CreateOptions, Qcow2GrowError};

const MIB: u64 = 1 << 20;

fn virtual_size(image: &std::path::Path) -> u64 {
    let info = qemu_img(&["info", "--output=json", image.to_str().unwrap()]);
    // The image's own size is the last one listed (its protocol layer's comes first).
    let at = info.rfind("\"virtual-size\": ").expect("virtual-size") + 16;
    info[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_grown_qcow2_keeps_its_data_reads_zeros_beyond_and_passes_qemu_img() {
    let dir = Scratch::new("grow-qcow2");
    let image = dir.path("disk.qcow2");
    let model = dir.path("model.raw");
    create(&image, &CreateOptions::new(8 * MIB)).unwrap();
    let model_file = std::fs::File::create(&model).unwrap();
    model_file.set_len(8 * MIB).unwrap();
    {
        let mut disk = open_disk(&image, false).unwrap();
        disk.write_at(&[0xa5; 65536], 8 * MIB - 65536).unwrap();
        disk.flush().unwrap();
    }
    model_file
        .write_all_at(&[0xa5; 65536], 8 * MIB - 65536)
        .unwrap();
    // 3 GiB needs six L1 entries where 8 MiB had one.
    let size = 3 << 30;
    grow_image(&image, ImageFormat::Qcow2, size).unwrap();
    model_file.set_len(size).unwrap();
    assert_eq!(virtual_size(&image), size);
    assert_check_clean(&image, false);
    {
        let mut disk = open_disk(&image, false).unwrap();
        assert_eq!(disk.capacity(), size);
        let mut tail = vec![1u8; 65536];
        disk.read_at(&mut tail, 8 * MIB).unwrap();
        assert!(tail.iter().all(|&b| b == 0), "new space reads as zeros");
        disk.write_at(&[0x5a; 4096], size - 4096).unwrap();
        disk.flush().unwrap();
    }
    model_file.write_all_at(&[0x5a; 4096], size - 4096).unwrap();
    assert_check_clean(&image, false);
    assert_same_content(&image, &model);
}

#[test]
fn a_grown_overlay_reads_its_smaller_backing_then_zeros() {
    let dir = Scratch::new("grow-overlay");
    let base = dir.path("base.qcow2");
    let top = dir.path("top.qcow2");
    create(&base, &CreateOptions::new(MIB)).unwrap();
    qemu_io(&base, "qcow2", &["write -P 0x33 0 1M"]);
    let mut options = CreateOptions::new(MIB);
    options.backing = Some(BackingSpec {
        name: "base.qcow2".into(),
        format: ImageFormat::Qcow2,
    });
    create(&top, &options).unwrap();
    grow_image(&top, ImageFormat::Qcow2, 4 * MIB).unwrap();
    assert_check_clean(&top, false);
    assert_eq!(virtual_size(&top), 4 * MIB);
    // qemu-io reads the same: the backing's bytes, then zeros.
    qemu_io(&top, "qcow2", &["read -P 0x33 0 1M", "read -P 0 1M 3M"]);
    let mut disk = open_disk(&top, true).unwrap();
    let mut buf = vec![0u8; 2 * MIB as usize];
    disk.read_at(&mut buf, 0).unwrap();
    assert!(buf[..MIB as usize].iter().all(|&b| b == 0x33));
    assert!(buf[MIB as usize..].iter().all(|&b| b == 0));
}

#[test]
fn qemu_made_images_and_raw_files_grow_and_nothing_shrinks() {
    let dir = Scratch::new("grow-formats");
    let made = dir.path("qemu.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", made.to_str().unwrap(), "1M"]);
    qemu_io(&made, "qcow2", &["write -P 0x11 0 64k"]);
    grow_image(&made, ImageFormat::Qcow2, 600 * MIB).unwrap();
    assert_check_clean(&made, false);
    qemu_io(&made, "qcow2", &["read -P 0x11 0 64k", "read -P 0 1M 64k"]);
    assert!(matches!(
        grow_image(&made, ImageFormat::Qcow2, MIB),
        Err(GrowError::Qcow2 {
            source: Qcow2GrowError::Shrink { .. },
            ..
        })
    ));
    assert_eq!(
        virtual_size(&made),
        600 * MIB,
        "a refused shrink changes nothing"
    );

    let raw = dir.path("disk.raw");
    std::fs::write(&raw, vec![7u8; 4096]).unwrap();
    grow_image(&raw, ImageFormat::Raw, MIB).unwrap();
    let bytes = std::fs::read(&raw).unwrap();
    assert_eq!(bytes.len() as u64, MIB);
    assert!(bytes[..4096].iter().all(|&b| b == 7) && bytes[4096..].iter().all(|&b| b == 0));
    assert!(matches!(
        grow_image(&raw, ImageFormat::Raw, 4096),
        Err(GrowError::Shrink { .. })
    ));
}

#[test]
fn an_image_with_change_tracking_bitmaps_is_not_grown() {
    let dir = Scratch::new("grow-bitmaps");
    let image = dir.path("cbt.qcow2");
    create(&image, &CreateOptions::new(MIB)).unwrap();
    qemu_img(&["bitmap", "--add", image.to_str().unwrap(), "tracking"]);
    assert!(matches!(
        grow_image(&image, ImageFormat::Qcow2, 2 * MIB),
        Err(GrowError::Qcow2 {
            source: Qcow2GrowError::Bitmaps,
            ..
        })
    ));
    assert_eq!(virtual_size(&image), MIB);
    assert_check_clean(&image, false);
}
