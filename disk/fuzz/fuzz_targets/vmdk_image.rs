//! Arbitrary bytes as a VMDK (sparse extent, streamOptimized file or descriptor): opening it,
//! listing its stored grains, reading it, and importing the same bytes as a stream into a new
//! qcow2 (as a VMDK, and as an upload that may also be a flat extent of a disk sized by the
//! selector) must never panic, hang or allocate absurdly. Input: 8 bytes choosing read offsets
//! and the flat disk's size, then the file.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vireo_disk::vmdk::{import_disk_stream, import_vmdk_stream, VmdkDisk};
use vireo_disk::BlockDevice;

/// A private folder for the input and the imported image (descriptor extents resolve here).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root =
            std::env::var_os("VIREO_DISK_FUZZ_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = root.join(format!("vireo-vmdk-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("flat.vmdk"), vec![0x5au8; 64 << 10]).unwrap();
        dir
    })
}

/// Opens the file, lists its data and reads at offsets spread by the selector bytes.
fn inspect(path: &Path, selector: &[u8; 8]) {
    let Ok(mut disk) = VmdkDisk::open(path) else {
        return;
    };
    let _ = disk.data_ranges();
    let sectors = disk.capacity() / 512;
    let mut buf = vec![0u8; 8192];
    for &b in selector {
        let offset = sectors * u64::from(b) / 256 * 512;
        let len = (disk.capacity() - offset).min(8192) as usize;
        let _ = disk.read_at(&mut buf[..len], offset);
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((selector, file)) = input.split_first_chunk::<8>() else {
        return;
    };
    let path = scratch().join("image.vmdk");
    std::fs::write(&path, file).unwrap();
    inspect(&path, selector);
    let dest = scratch().join("imported.qcow2");
    let _ = std::fs::remove_file(&dest);
    let _ = import_vmdk_stream(file, &dest, &mut |_, _| true);
    let _ = std::fs::remove_file(&dest);
    let flat_capacity = u64::from(selector[0]) * 4096;
    let _ = import_disk_stream(file, &dest, flat_capacity, &mut |_, _| true);
    let _ = std::fs::remove_file(&dest);
});
