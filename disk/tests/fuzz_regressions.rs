//! Images the fuzzer (disk/fuzz, `scripts/fuzz-disk.sh`) found mishandled, rebuilt by patching
//! images qemu-img made: each must give an error or a report, never a panic.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::{qemu_img, Scratch};
use vireo_disk::qcow2::check::check;

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
