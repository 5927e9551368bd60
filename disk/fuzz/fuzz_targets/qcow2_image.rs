//! Arbitrary bytes as a qcow2 image file (header, extensions, L1/L2 tables, refcount table and
//! blocks, bitmap directory and tables): opening it, reading, mapping and checking it, then
//! writing, zeroing, discarding and closing a writable copy must never panic, hang or
//! allocate absurdly; the same holds for requests through `SharedDisk`. Input: 8 bytes choosing
//! request offsets, then the image file.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vireo_disk::qcow2::header::Header;
use vireo_disk::qcow2::{check::check, create, CreateOptions, Qcow2Image, Qcow2Options};
use vireo_disk::{BlockDevice, SharedDisk};

/// Backing files an input may name; any other name is not opened (it could be any host file).
const BACKING_NAMES: [&str; 3] = ["base.qcow2", "base.raw", "image.qcow2"];

/// A private folder holding the backing files, made once per fuzzing process inside
/// `$VIREO_DISK_FUZZ_DIR` (which scripts/fuzz-disk.sh makes and removes) or the temp folder.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root =
            std::env::var_os("VIREO_DISK_FUZZ_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = root.join(format!("vireo-disk-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("base.qcow2");
        let _ = std::fs::remove_file(&base);
        create(&base, &CreateOptions::new(1 << 20)).unwrap();
        let mut image = Qcow2Image::open(&base, &Qcow2Options::default()).unwrap();
        image.write_at(&[0x5a; 8192], 60 << 10).unwrap();
        image.close().unwrap();
        std::fs::write(dir.join("base.raw"), vec![0xa5u8; 256 << 10]).unwrap();
        dir
    })
}

/// Offsets derived from the input's selector bytes, spread over the disk and its edges.
fn offsets(selector: &[u8; 8], size: u64) -> Vec<u64> {
    let sectors = size / 512;
    if sectors == 0 {
        return Vec::new();
    }
    let pick = |b: u8| (sectors * b as u64 / 256) * 512;
    let mut out: Vec<u64> = selector.iter().map(|&b| pick(b)).collect();
    out.push(size.saturating_sub(4096) / 512 * 512);
    out
}

/// Reads, maps and inspects the image read-only.
fn inspect(path: &Path, selector: &[u8; 8]) {
    let options = Qcow2Options {
        read_only: true,
        ..Qcow2Options::default()
    };
    let Ok(mut image) = Qcow2Image::open(path, &options) else {
        return;
    };
    let size = image.capacity();
    let mut buf = vec![0u8; 8192];
    for offset in offsets(selector, size) {
        let len = (size - offset).min(8192) as usize;
        let _ = image.read_at(&mut buf[..len], offset);
    }
    let _ = image.layer_extents();
    let _ = image.allocation_map();
    let names: Vec<String> = image
        .bitmap_entries()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    for name in names {
        let _ = image.read_bitmap(&name);
    }
}

/// Writes, zeroes, discards and closes the image, then checks it.
fn modify(path: &Path, selector: &[u8; 8]) {
    let Ok(mut image) = Qcow2Image::open(path, &Qcow2Options::default()) else {
        return;
    };
    let size = image.capacity();
    let data = vec![0x77u8; 8192];
    for (i, offset) in offsets(selector, size).into_iter().enumerate() {
        let len = (size - offset).min(8192);
        let _ = match i % 4 {
            0 | 1 => image.write_at(&data[..len as usize], offset),
            2 => image.write_zeroes(offset, len),
            _ => image.discard(offset, len),
        };
    }
    let _ = image.flush();
    let _ = image.close();
    let _ = check(path, false);
}

/// The bytes the engine parses the header from: the first cluster (at most 2 MiB).
fn first_cluster(image: &[u8]) -> &[u8] {
    let cluster_bits = image
        .get(20..24)
        .map_or(16, |b| u32::from_be_bytes(b.try_into().unwrap()));
    let len = if (9..=21).contains(&cluster_bits) {
        1 << cluster_bits
    } else {
        1 << 21
    };
    &image[..image.len().min(len)]
}

/// Reads and writes through `SharedDisk` (routes, prepared copy-on-write), then drops it.
fn share(path: &Path, selector: &[u8; 8]) {
    let Ok(disk) = SharedDisk::open(path, false) else {
        return;
    };
    let size = disk.capacity();
    let mut buf = vec![0x3cu8; 4096];
    for (i, offset) in offsets(selector, size).into_iter().enumerate() {
        let len = (size - offset).min(4096) as usize;
        let _ = if i % 2 == 0 {
            disk.write_at(&buf[..len], offset)
        } else {
            disk.read_at(&mut buf[..len], offset)
        };
    }
    let _ = disk.flush();
}

fuzz_target!(|input: &[u8]| {
    let Some((selector, image)) = input.split_first_chunk::<8>() else {
        return;
    };
    if let Ok(header) = Header::parse(first_cluster(image)) {
        if let Some(name) = &header.backing_file {
            if !BACKING_NAMES.contains(&name.as_str()) {
                return;
            }
        }
    }
    let path = scratch().join("image.qcow2");
    std::fs::write(&path, image).unwrap();
    inspect(&path, selector);
    modify(&path, selector);
    std::fs::write(&path, image).unwrap();
    share(&path, selector);
});
