//! Hostile VMDKs: grain directories, grain tables, grain records, markers and headers that lie
//! (beyond the end of the file, into the metadata, absurd sizes, loops), truncated streams,
//! extent names leaving the descriptor's folder, random damage. Opening, reading, converting
//! and importing must give errors, never a panic, a hang or a huge allocation.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{qemu_img, qemu_io, Rng, Scratch};
use vireo_disk::block::{BlockDevice, BlockError};
use vireo_disk::convert::{convert, open_source, TargetFormat};
use vireo_disk::vmdk::{
    import_disk_stream, import_vmdk_stream, ImportVmdkError, VmdkDisk, VmdkOpenError,
};

const SIZE: u64 = 64 << 20;

fn le32_at(path: &Path, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, offset)
        .unwrap();
    u32::from_le_bytes(b)
}

fn le64_at(path: &Path, offset: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, offset)
        .unwrap();
    u64::from_le_bytes(b)
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// A qcow2 with data in grains 0, 1 and at 40 MiB.
fn source_image(dir: &Scratch) -> PathBuf {
    let image = dir.path("src.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        image.to_str().unwrap(),
        &SIZE.to_string(),
    ]);
    qemu_io(
        &image,
        "qcow2",
        &["write -P 0x61 0 100k", "write -P 0x62 40M 64k"],
    );
    image
}

/// Our streamOptimized copy of `source_image`, and where its footer, grain directory, first
/// grain table and first grain are (bytes).
struct Stream {
    path: PathBuf,
    footer: u64,
    gd: u64,
    gt: u64,
    grain: u64,
}

fn stream(dir: &Scratch, name: &str) -> Stream {
    let path = dir.path(name);
    let _ = std::fs::remove_file(&path);
    let mut source = open_source(&source_image(dir)).unwrap();
    convert(&mut source, &path, TargetFormat::VmdkStream, &mut |_, _| {
        true
    })
    .unwrap();
    let footer = std::fs::metadata(&path).unwrap().len() - 1024;
    let gd = le64_at(&path, footer + 56) * 512;
    let gt = u64::from(le32_at(&path, gd)) * 512;
    let grain = u64::from(le32_at(&path, gt)) * 512;
    Stream {
        path,
        footer,
        gd,
        gt,
        grain,
    }
}

/// Reading the whole disk fails with a corruption error.
fn read_fails_as_corrupt(path: &Path) {
    let mut disk = VmdkDisk::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut failure = None;
    for at in (0..disk.capacity()).step_by(buf.len()) {
        let n = (disk.capacity() - at).min(buf.len() as u64) as usize;
        if let Err(e) = disk.read_at(&mut buf[..n], at) {
            failure = Some(e);
            break;
        }
    }
    assert!(
        matches!(failure, Some(BlockError::Corrupt { .. })),
        "{}: {failure:?}",
        path.display()
    );
}

fn import_error(path: &Path, dir: &Scratch) -> ImportVmdkError {
    let dest = dir.path("imported.qcow2");
    let file = std::fs::File::open(path).unwrap();
    let err = import_vmdk_stream(file, &dest, &mut |_, _| true).unwrap_err();
    assert!(!dest.exists(), "a failed import leaves no image");
    err
}

#[test]
fn lying_grain_tables_and_directories_are_corruption() {
    let dir = Scratch::new("vmdk-lying-tables");
    // A grain table entry beyond the end of the file.
    let s = stream(&dir, "gte-eof.vmdk");
    patch(&s.path, s.gt, &u32::MAX.to_le_bytes());
    read_fails_as_corrupt(&s.path);
    // A grain table entry pointing at the grain directory (a loop into metadata).
    let s = stream(&dir, "gte-loop.vmdk");
    patch(&s.path, s.gt, &((s.gd / 512) as u32).to_le_bytes());
    read_fails_as_corrupt(&s.path);
    // A grain directory entry beyond the end of the file.
    let s = stream(&dir, "gd-eof.vmdk");
    patch(&s.path, s.gd, &0xfff0_0000u32.to_le_bytes());
    read_fails_as_corrupt(&s.path);
    // A footer whose directory lies beyond the end of the file.
    let s = stream(&dir, "footer-gd.vmdk");
    patch(&s.path, s.footer + 56, &(1u64 << 40).to_le_bytes());
    assert!(matches!(
        VmdkDisk::open(&s.path),
        Err(VmdkOpenError::Malformed { .. })
    ));
    // No footer at all although the header says the directory is at the end.
    let s = stream(&dir, "no-footer.vmdk");
    patch(&s.path, s.footer - 512, &[0u8; 512]);
    assert!(matches!(
        VmdkDisk::open(&s.path),
        Err(VmdkOpenError::Malformed { .. })
    ));
}

#[test]
fn lying_grain_records_are_refused() {
    let dir = Scratch::new("vmdk-lying-grains");
    // The record claims another sector than the table says.
    let s = stream(&dir, "lba.vmdk");
    patch(&s.path, s.grain, &(1u64 << 30).to_le_bytes());
    read_fails_as_corrupt(&s.path);
    assert!(matches!(
        import_error(&s.path, &dir),
        ImportVmdkError::Malformed(_)
    ));
    // A compressed size of 4 GiB.
    let s = stream(&dir, "size.vmdk");
    patch(&s.path, s.grain + 8, &u32::MAX.to_le_bytes());
    read_fails_as_corrupt(&s.path);
    assert!(matches!(
        import_error(&s.path, &dir),
        ImportVmdkError::Malformed(_)
    ));
    // Garbage instead of deflate data.
    let s = stream(&dir, "deflate.vmdk");
    patch(&s.path, s.grain + 12, &[0xffu8; 16]);
    read_fails_as_corrupt(&s.path);
    assert!(matches!(
        import_error(&s.path, &dir),
        ImportVmdkError::Malformed(_)
    ));
}

#[test]
fn lying_markers_and_truncated_streams_fail_the_import() {
    let dir = Scratch::new("vmdk-lying-markers");
    // A grain-table marker announcing 2^40 sectors.
    let s = stream(&dir, "marker.vmdk");
    patch(&s.path, s.gt - 512, &(1u64 << 40).to_le_bytes());
    assert!(matches!(
        import_error(&s.path, &dir),
        ImportVmdkError::Malformed(_)
    ));
    // An unknown marker type.
    let s = stream(&dir, "type.vmdk");
    patch(&s.path, s.gt - 512 + 12, &77u32.to_le_bytes());
    assert!(matches!(
        import_error(&s.path, &dir),
        ImportVmdkError::Malformed(_)
    ));
    // The stream stops in the middle.
    let s = stream(&dir, "cut.vmdk");
    let f = OpenOptions::new().write(true).open(&s.path).unwrap();
    f.set_len(s.grain + 700).unwrap();
    assert!(matches!(
        import_error(&s.path, &dir),
        ImportVmdkError::Truncated(_)
    ));
    // A header claiming an absurd capacity.
    let s = stream(&dir, "capacity.vmdk");
    patch(&s.path, 12, &u64::MAX.to_le_bytes());
    assert!(matches!(
        import_error(&s.path, &dir),
        ImportVmdkError::Malformed(_)
    ));
    assert!(matches!(
        VmdkDisk::open(&s.path),
        Err(VmdkOpenError::Malformed { .. })
    ));
    // An overhead reaching past the end of the stream.
    let s = stream(&dir, "overhead.vmdk");
    patch(&s.path, 64, &(1u64 << 36).to_le_bytes());
    assert!(matches!(
        import_error(&s.path, &dir),
        ImportVmdkError::Unsupported(_) | ImportVmdkError::Truncated(_)
    ));
}

/// A qemu-img monolithicSparse copy of the source and its grain directory (bytes).
fn sparse(dir: &Scratch, name: &str) -> (PathBuf, u64) {
    let path = dir.path(name);
    let _ = std::fs::remove_file(&path);
    let src = source_image(dir);
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        src.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    let gd = le64_at(&path, 56) * 512;
    (path, gd)
}

#[test]
fn monolithic_sparse_metadata_that_lies_is_refused() {
    let dir = Scratch::new("vmdk-sparse-lies");
    // A grain table entry pointing into the metadata: the streaming import refuses it.
    let (path, gd) = sparse(&dir, "into-meta.vmdk");
    let gt = u64::from(le32_at(&path, gd)) * 512;
    patch(&path, gt, &1u32.to_le_bytes());
    assert!(matches!(
        import_error(&path, &dir),
        ImportVmdkError::Malformed(_)
    ));
    // A grain directory said to be at the end, with no footer.
    let (path, _) = sparse(&dir, "gd-end.vmdk");
    patch(&path, 56, &u64::MAX.to_le_bytes());
    assert!(matches!(
        VmdkDisk::open(&path),
        Err(VmdkOpenError::Malformed { .. })
    ));
    assert!(matches!(
        import_error(&path, &dir),
        ImportVmdkError::Unsupported(_)
    ));
    // A grain table that lies after the grains cannot be streamed.
    let (path, gd) = sparse(&dir, "gt-late.vmdk");
    let len = std::fs::metadata(&path).unwrap().len();
    patch(&path, gd, &((len / 512 - 1) as u32).to_le_bytes());
    assert!(matches!(
        import_error(&path, &dir),
        ImportVmdkError::Unsupported(_)
    ));
    // Two table entries naming the same grain (a loop) read the same data, boundedly.
    let (path, gd) = sparse(&dir, "dup.vmdk");
    let gt = u64::from(le32_at(&path, gd)) * 512;
    let first = le32_at(&path, gt);
    patch(&path, gt + 4 * 100, &first.to_le_bytes());
    let mut disk = VmdkDisk::open(&path).unwrap();
    let mut a = vec![0u8; 65536];
    let mut b = vec![0u8; 65536];
    disk.read_at(&mut a, 0).unwrap();
    disk.read_at(&mut b, 100 * 65536).unwrap();
    assert_eq!(a, b);
    let dest = dir.path("dup.qcow2");
    import_vmdk_stream(std::fs::File::open(&path).unwrap(), &dest, &mut |_, _| true).unwrap();
}

/// What an upload of `bytes` into a disk of `capacity` bytes gives (a failed import leaves
/// no image).
fn upload(bytes: &[u8], capacity: u64, dir: &Scratch) -> Result<u64, ImportVmdkError> {
    let dest = dir.path("uploaded.qcow2");
    let _ = std::fs::remove_file(&dest);
    let result = import_disk_stream(bytes, &dest, capacity, &mut |_, _| true);
    assert_eq!(dest.exists(), result.is_ok(), "{result:?}");
    result.map(|summary| summary.bytes_read)
}

#[test]
fn flat_extents_that_do_not_fit_and_false_magic_are_refused() {
    let dir = Scratch::new("vmdk-flat-lies");
    let capacity = 1 << 20;
    let data = vec![0x5au8; (capacity + 65536) as usize];
    // One byte, one sector, one chunk more than the disk; a sector cut short.
    for length in [capacity + 1, capacity + 512, capacity + 65536] {
        let error = upload(&data[..length as usize], capacity, &dir).unwrap_err();
        assert!(
            matches!(&error, ImportVmdkError::Flat { why, .. } if why.contains("larger than")),
            "{length}: {error}"
        );
    }
    let error = upload(&data[..100_000], capacity, &dir).unwrap_err();
    assert!(matches!(&error, ImportVmdkError::Flat { why, .. } if why.contains("inside a sector")));
    assert!(matches!(
        upload(&[], capacity, &dir),
        Err(ImportVmdkError::Truncated(_))
    ));
    // Exactly the disk, or shorter: taken.
    assert_eq!(
        upload(&data[..capacity as usize], capacity, &dir).unwrap(),
        capacity
    );
    assert_eq!(upload(&data[..4096], capacity, &dir).unwrap(), 4096);
    // The sparse magic with a header that lies is a malformed VMDK, not a flat extent; a
    // descriptor is refused with the reason.
    let mut magic = data[..4096].to_vec();
    magic[..4].copy_from_slice(b"KDMV");
    assert!(matches!(
        upload(&magic, capacity, &dir),
        Err(ImportVmdkError::Malformed(_))
    ));
    let error = upload(b"# Disk DescriptorFile\nversion=1\n", capacity, &dir).unwrap_err();
    assert!(matches!(&error, ImportVmdkError::Unsupported(why) if why.contains("extent")));
}

#[test]
fn extent_names_cannot_leave_the_descriptor_folder() {
    let dir = Scratch::new("vmdk-extent-names");
    std::fs::create_dir(dir.path("inner")).unwrap();
    std::fs::write(dir.path("outside-flat.vmdk"), vec![0x41u8; 4096]).unwrap();
    for name in [
        "../outside-flat.vmdk",
        "/etc/passwd",
        "inner/../../outside-flat.vmdk",
        "",
    ] {
        let descriptor = dir.path("inner/d.vmdk");
        std::fs::write(
            &descriptor,
            format!(
                "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n\
                 createType=\"monolithicFlat\"\nRW 8 FLAT \"{name}\" 0\n"
            ),
        )
        .unwrap();
        assert!(
            matches!(
                VmdkDisk::open(&descriptor),
                Err(VmdkOpenError::ExtentPath { .. })
            ),
            "{name:?} was accepted"
        );
    }
    // A flat extent shorter than the descriptor says.
    std::fs::write(dir.path("inner/short-flat.vmdk"), vec![0x41u8; 4096]).unwrap();
    let descriptor = dir.path("inner/short.vmdk");
    std::fs::write(
        &descriptor,
        "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 9 FLAT \"short-flat.vmdk\" 0\n",
    )
    .unwrap();
    assert!(matches!(
        VmdkDisk::open(&descriptor),
        Err(VmdkOpenError::Malformed { .. })
    ));
    // A descriptor is not something to import as a stream.
    assert!(matches!(
        import_error(&descriptor, &dir),
        ImportVmdkError::Unsupported(_)
    ));
}

#[test]
fn random_damage_never_panics() {
    let dir = Scratch::new("vmdk-damage");
    let clean = stream(&dir, "clean.vmdk");
    let (clean_sparse, _) = sparse(&dir, "clean-sparse.vmdk");
    let mut rng = Rng::new(6);
    for round in 0..60 {
        let original = if round % 2 == 0 {
            &clean.path
        } else {
            &clean_sparse
        };
        let damaged = dir.path("damaged.vmdk");
        std::fs::copy(original, &damaged).unwrap();
        let len = std::fs::metadata(&damaged).unwrap().len();
        for _ in 0..8 {
            // Bias towards the metadata at both ends.
            let at = match rng.below(3) {
                0 => rng.below(1024),
                1 => len - 1 - rng.below(4096.min(len)),
                _ => rng.below(len),
            };
            patch(&damaged, at, &[rng.below(256) as u8]);
        }
        if let Ok(mut disk) = VmdkDisk::open(&damaged) {
            let mut buf = vec![0u8; 1 << 20];
            for at in (0..disk.capacity().min(SIZE)).step_by(buf.len()) {
                let n = (disk.capacity() - at).min(buf.len() as u64) as usize;
                let _ = disk.read_at(&mut buf[..n], at);
            }
        }
        let dest = dir.path("damaged.qcow2");
        let file = std::fs::File::open(&damaged).unwrap();
        let _ = import_vmdk_stream(file, &dest, &mut |_, _| true);
        let _ = std::fs::remove_file(&dest);
    }
}
