//! Interop with QEMU in both directions: images this crate writes pass `qemu-img check` and
//! compare equal to a raw model after random write/zero/discard sequences; images made by
//! qemu-img/qemu-io read correctly through this crate.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{assert_check_clean, assert_same_content, qemu_img, qemu_io, seeds, Rng, Scratch};
use vireo_disk::open::ImageFormat;
use vireo_disk::qcow2::{create, BackingSpec, CreateOptions, Qcow2Image, Qcow2Options};
use vireo_disk::{open_disk, BlockDevice};

const MIB: u64 = 1 << 20;

/// Applies one random operation to both the disk and the raw model file.
fn random_op(rng: &mut Rng, disk: &mut dyn BlockDevice, model: &std::fs::File, size: u64) {
    let sector = 512;
    let offset = rng.below(size / sector) * sector;
    let max_len = (size - offset).min(if rng.below(4) == 0 {
        4 * MIB
    } else {
        128 << 10
    });
    let len = (rng.below(max_len / sector) + 1) * sector;
    match rng.below(10) {
        0..=5 => {
            let byte = (rng.below(255) + 1) as u8;
            let data = vec![byte; len as usize];
            disk.write_at(&data, offset).unwrap();
            model.write_all_at(&data, offset).unwrap();
        }
        6 | 7 => {
            disk.write_zeroes(offset, len).unwrap();
            model.write_all_at(&vec![0; len as usize], offset).unwrap();
        }
        8 => {
            disk.discard(offset, len).unwrap();
            model.write_all_at(&vec![0; len as usize], offset).unwrap();
        }
        _ => disk.flush().unwrap(),
    }
}

fn new_model(path: &Path, size: u64) -> std::fs::File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.set_len(size).unwrap();
    f
}

fn random_sequence(seed: u64, cluster_bits: u32, size: u64, ops: usize) {
    let scratch = Scratch::new(&format!("rand-{seed}-{cluster_bits}"));
    let image = scratch.path("disk.qcow2");
    let model_path = scratch.path("model.raw");
    let mut options = CreateOptions::new(size);
    options.cluster_bits = cluster_bits;
    create(&image, &options).unwrap();
    let model = new_model(&model_path, size);
    let mut rng = Rng::new(seed);
    {
        let mut disk = open_disk(&image, false).unwrap();
        for _ in 0..ops {
            random_op(&mut rng, disk.as_mut(), &model, size);
        }
        disk.flush().unwrap();
    }
    assert_check_clean(&image, false);
    assert_same_content(&image, &model_path);
}

#[test]
fn random_writes_pass_qemu_check_and_compare() {
    for seed in seeds(&[1, 2]) {
        eprintln!("seed {seed}");
        random_sequence(seed, 16, 64 * MIB, 300);
    }
}

#[test]
fn small_clusters_grow_the_refcount_table() {
    // 4 KiB clusters: one refcount block covers 8 MiB, one table cluster 4 GiB of clusters;
    // writing ~24 MiB forces new refcount blocks, and a tiny cache forces evictions.
    let scratch = Scratch::new("small-clusters");
    let image = scratch.path("disk.qcow2");
    let model_path = scratch.path("model.raw");
    let size = 256 * MIB;
    let mut options = CreateOptions::new(size);
    options.cluster_bits = 12;
    create(&image, &options).unwrap();
    let model = new_model(&model_path, size);
    let mut rng = Rng::new(7);
    {
        let opts = Qcow2Options {
            l2_cache_bytes: Some(8 << 12),
            refcount_cache_bytes: Some(2 << 12),
            ..Default::default()
        };
        let mut disk = Qcow2Image::open(&image, &opts).unwrap();
        for _ in 0..400 {
            random_op(&mut rng, &mut disk, &model, size);
        }
        disk.close().unwrap();
    }
    assert_check_clean(&image, false);
    assert_same_content(&image, &model_path);
}

#[test]
fn cluster_sizes_from_4k_to_2m() {
    for bits in [12, 13, 16, 21] {
        random_sequence(bits as u64, bits, 32 * MIB, 60);
    }
}

#[test]
fn reads_images_qemu_wrote_with_every_refcount_width() {
    let scratch = Scratch::new("qemu-written");
    for (cluster, refbits) in [("4k", 1), ("64k", 16), ("2M", 64), ("16k", 8)] {
        let image = scratch.path(&format!("q-{cluster}-{refbits}.qcow2"));
        let img = image.to_str().unwrap();
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("cluster_size={cluster},refcount_bits={refbits}"),
            img,
            "16M",
        ]);
        qemu_io(
            &image,
            "qcow2",
            &[
                "write -P 0x11 0 1M",
                "write -P 0x22 3M 100k",
                "write -z 3M 4k",
                "write -P 0x33 8M 8M",
                "discard 9M 1M",
            ],
        );
        let raw = scratch.path("expect.raw");
        qemu_img(&["convert", "-O", "raw", img, raw.to_str().unwrap()]);
        assert_same_through_us(&image, &raw);
        // and writing through us keeps it valid for qemu, whatever the refcount width
        let model = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&raw)
            .unwrap();
        {
            let mut disk = open_disk(&image, false).unwrap();
            let mut rng = Rng::new(refbits);
            for _ in 0..40 {
                random_op(&mut rng, disk.as_mut(), &model, 16 * MIB);
            }
            disk.flush().unwrap();
        }
        assert_check_clean(&image, false);
        assert_same_content(&image, &raw);
        std::fs::remove_file(&raw).unwrap();
    }
}

/// Reads `image` through this crate in 1 MiB steps and compares with the raw file.
fn assert_same_through_us(image: &Path, raw: &Path) {
    let mut disk = open_disk(image, true).unwrap();
    let expect = std::fs::read(raw).unwrap();
    assert_eq!(disk.capacity(), expect.len() as u64);
    let mut buf = vec![0u8; MIB as usize];
    for (i, chunk) in expect.chunks(MIB as usize).enumerate() {
        let got = &mut buf[..chunk.len()];
        disk.read_at(got, i as u64 * MIB).unwrap();
        assert!(got == chunk, "{}: MiB {i} differs", image.display());
    }
}

#[test]
fn reads_compressed_clusters_and_rewrites_them_uncompressed() {
    let scratch = Scratch::new("compressed");
    let src = scratch.path("src.raw");
    let image = scratch.path("c.qcow2");
    let model_path = scratch.path("model.raw");
    let model = new_model(&src, 8 * MIB);
    let mut rng = Rng::new(3);
    for i in 0..64u64 {
        let data: Vec<u8> = (0..65536)
            .map(|j| ((j as u64 * (i + 1)) % 251) as u8 ^ (rng.next() as u8 & 1))
            .collect();
        model.write_all_at(&data, i * 128 * 1024).unwrap();
    }
    drop(model);
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        src.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert_same_through_us(&image, &src);
    std::fs::copy(&src, &model_path).unwrap();
    let model = OpenOptions::new().write(true).open(&model_path).unwrap();
    {
        let mut disk = open_disk(&image, false).unwrap();
        disk.write_at(&[0xee; 4096], 1000 * 512).unwrap();
        model.write_all_at(&[0xee; 4096], 1000 * 512).unwrap();
        disk.write_zeroes(2 * MIB, 64 * 1024).unwrap();
        model.write_all_at(&[0; 65536], 2 * MIB).unwrap();
        disk.flush().unwrap();
    }
    assert_check_clean(&image, false);
    assert_same_content(&image, &model_path);
}

#[test]
fn backing_chains_both_ways() {
    let scratch = Scratch::new("chains");
    let base = scratch.path("base.qcow2");
    let mid = scratch.path("mid.qcow2");
    let top = scratch.path("top.qcow2");
    // qemu builds a base (smaller than the overlay) and a middle layer
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "4M"]);
    qemu_io(&base, "qcow2", &["write -P 0x61 0 4M"]);
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
    qemu_io(&mid, "qcow2", &["write -P 0x62 1M 1M", "write -z 2M 64k"]);
    // we add the top layer with a relative name
    let mut options = CreateOptions::new(8 * MIB);
    options.backing = Some(BackingSpec {
        name: "mid.qcow2".into(),
        format: ImageFormat::Qcow2,
    });
    create(&top, &options).unwrap();
    {
        let mut disk = open_disk(&top, false).unwrap();
        disk.write_at(&[0x63; 4096], 3 * MIB + 512).unwrap();
        disk.write_zeroes(MIB, 128 * 1024).unwrap();
        disk.discard(64 * 1024, 64 * 1024).unwrap();
        disk.flush().unwrap();
    }
    assert_check_clean(&top, false);
    let expect = scratch.path("expect.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        top.to_str().unwrap(),
        expect.to_str().unwrap(),
    ]);
    assert_same_through_us(&top, &expect);
    let bytes = std::fs::read(&expect).unwrap();
    assert!(bytes[..65536].iter().all(|&b| b == 0x61));
    assert!(bytes[65536..131072].iter().all(|&b| b == 0));
    assert!(bytes[3 * MIB as usize + 512..3 * MIB as usize + 4608]
        .iter()
        .all(|&b| b == 0x63));
    assert!(
        bytes[5 * MIB as usize..].iter().all(|&b| b == 0),
        "past the base's end reads zeros"
    );
}

#[test]
fn header_extensions_we_add_survive_qemu_img_and_read_back() {
    let scratch = Scratch::new("extension");
    let path = scratch.path("uuid.qcow2");
    create(&path, &CreateOptions::new(4 * MIB)).unwrap();
    let kind = 0x7669_7575;
    {
        let mut image = Qcow2Image::open(&path, &Qcow2Options::default()).unwrap();
        image
            .set_extension(kind, Some(b"0123456789abcdef".to_vec()))
            .unwrap();
        image.write_at(&[7u8; 4096], MIB).unwrap();
        image.close().unwrap();
    }
    assert_check_clean(&path, false);
    // qemu-img rewrites the header when it resizes the image; our extension stays.
    qemu_img(&["resize", "-f", "qcow2", path.to_str().unwrap(), "8M"]);
    let mut image = Qcow2Image::open(&path, &Qcow2Options::default()).unwrap();
    assert_eq!(image.extension(kind), Some(&b"0123456789abcdef"[..]));
    image.set_extension(kind, None).unwrap();
    image.close().unwrap();
    let image = Qcow2Image::open(&path, &Qcow2Options::default()).unwrap();
    assert_eq!(image.extension(kind), None);
    assert_eq!(image.capacity(), 8 * MIB);
}
