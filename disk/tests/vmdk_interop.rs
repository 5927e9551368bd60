//! VMDK interop with qemu-img as the oracle: qemu-img checks and compares what we write
//! (monolithicSparse and streamOptimized, from qcow2 chains with random content, the stream
//! written to a non-seekable sink), and we read and import what qemu-img writes
//! (monolithicSparse, streamOptimized, monolithicFlat: its extent as a flat upload), the imports fed through a reader that
//! hands out small irregular pieces like a network socket.

mod common;

use std::io::Read;
use std::path::Path;

use common::{assert_check_clean, assert_same_content, qemu_img, scribble, seeds, Rng, Scratch};
use vireo_disk::convert::{convert, open_source, TargetFormat};
use vireo_disk::open::ImageFormat;
use vireo_disk::qcow2::{create, BackingSpec, CreateOptions};
use vireo_disk::source::CopySource;
use vireo_disk::vmdk::{
    import_disk_stream, import_vmdk_stream, write_stream_optimized, ImportVmdkError,
};

/// Disk size: not a multiple of the 64 KiB grain nor of a grain table's 32 MiB.
const SIZE: u64 = (70 << 20) + 3 * 512;

/// A qcow2 chain (base + overlay) with random content, and its raw model.
fn random_chain(dir: &Scratch, rng: &mut Rng) -> (std::path::PathBuf, std::path::PathBuf) {
    let base = dir.path("base.qcow2");
    let top = dir.path("top.qcow2");
    let model = dir.path("model.raw");
    std::fs::File::create(&model)
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    create(&base, &CreateOptions::new(SIZE)).unwrap();
    scribble(rng, &base, &model, SIZE, 40, 300, 6);
    let mut options = CreateOptions::new(SIZE);
    options.backing = Some(BackingSpec {
        name: "base.qcow2".into(),
        format: ImageFormat::Qcow2,
    });
    create(&top, &options).unwrap();
    scribble(rng, &top, &model, SIZE, 40, 300, 4);
    (top, model)
}

fn no_progress() -> impl FnMut(u64, u64) -> bool {
    |_, _| true
}

#[test]
fn qemu_img_reads_the_vmdks_we_write_from_a_chain() {
    for seed in seeds(&[1, 2]) {
        let dir = Scratch::new(&format!("vmdk-write-{seed}"));
        let mut rng = Rng::new(seed);
        let (top, model) = random_chain(&dir, &mut rng);
        for (name, format) in [
            ("sparse.vmdk", TargetFormat::VmdkSparse),
            ("stream.vmdk", TargetFormat::VmdkStream),
        ] {
            let out = dir.path(name);
            let mut source = open_source(&top).unwrap();
            convert(&mut source, &out, format, &mut no_progress()).unwrap();
            assert_check_clean(&out, false);
            assert_same_content(&out, &model);
            let info = qemu_img(&["info", out.to_str().unwrap()]);
            let subformat = if format == TargetFormat::VmdkStream {
                "streamOptimized"
            } else {
                "monolithicSparse"
            };
            assert!(info.contains(subformat), "seed {seed}: {info}");
        }
        // The stream goes to a sink that cannot seek; what arrives is a valid file.
        let mut sink: Vec<u8> = Vec::new();
        let mut source = CopySource::open_chain(&top).unwrap();
        let len = write_stream_optimized(&mut source, "piped.vmdk", &mut sink, &mut no_progress())
            .unwrap();
        assert_eq!(len, sink.len() as u64);
        let piped = dir.path("piped.vmdk");
        std::fs::write(&piped, &sink).unwrap();
        assert_check_clean(&piped, false);
        assert_same_content(&piped, &model);
        assert!(
            sink.len() as u64 <= std::fs::metadata(dir.path("stream.vmdk")).unwrap().len(),
            "the stream holds only grains with data"
        );
    }
}

/// A reader that returns at most a few hundred bytes per call, like a socket.
struct Trickle<R> {
    inner: R,
    rng: Rng,
}

impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.rng.below(700) as usize + 1).min(buf.len());
        self.inner.read(&mut buf[..n])
    }
}

fn trickle(path: &Path, seed: u64) -> Trickle<std::fs::File> {
    Trickle {
        inner: std::fs::File::open(path).unwrap(),
        rng: Rng::new(seed),
    }
}

#[test]
fn we_read_and_import_what_qemu_img_writes() {
    for seed in seeds(&[3]) {
        let dir = Scratch::new(&format!("vmdk-read-{seed}"));
        let mut rng = Rng::new(seed);
        let (top, model) = random_chain(&dir, &mut rng);
        for subformat in ["monolithicSparse", "streamOptimized", "monolithicFlat"] {
            let vmdk = dir.path(&format!("{subformat}.vmdk"));
            let (src, dst) = (top.to_str().unwrap(), vmdk.to_str().unwrap());
            let option = format!("subformat={subformat}");
            qemu_img(&["convert", "-O", "vmdk", "-o", &option, src, dst]);
            let copy = dir.path(&format!("{subformat}.qcow2"));
            let mut source = open_source(&vmdk).unwrap();
            convert(&mut source, &copy, TargetFormat::Qcow2, &mut no_progress()).unwrap();
            assert_check_clean(&copy, false);
            assert_same_content(&copy, &model);
            // What an upload carries: the sparse file itself, or a flat disk's extent.
            let (sent, flat) = match subformat {
                "monolithicFlat" => (dir.path(&format!("{subformat}-flat.vmdk")), true),
                _ => (vmdk.clone(), false),
            };
            let imported = dir.path(&format!("{subformat}-import.qcow2"));
            let summary =
                import_disk_stream(trickle(&sent, seed), &imported, SIZE, &mut no_progress())
                    .unwrap();
            assert_eq!(summary.capacity, SIZE);
            if flat {
                assert_eq!(summary.bytes_read, SIZE);
                let refused = dir.path("refused.qcow2");
                assert!(
                    import_vmdk_stream(trickle(&sent, seed), &refused, &mut no_progress()).is_err(),
                    "a VMDK-only import refuses a flat extent"
                );
                assert!(!refused.exists());
            }
            assert_check_clean(&imported, false);
            assert_same_content(&imported, &model);
        }
    }
}

/// qemu-img writes no end-of-stream marker (nor padding) after a last grain that fills the
/// file: incompressible data up to the last stored grain still imports whole.
#[test]
fn a_qemu_img_stream_ending_with_a_full_grain_imports() {
    let dir = Scratch::new("vmdk-no-eos");
    let raw = dir.path("random.raw");
    let mut rng = Rng::new(9);
    let data: Vec<u8> = (0..(1 << 20) / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect();
    std::fs::write(&raw, &data).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&raw)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let vmdk = dir.path("random.vmdk");
    let (src, dst) = (raw.to_str().unwrap(), vmdk.to_str().unwrap());
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        src,
        dst,
    ]);
    let imported = dir.path("random.qcow2");
    let summary = import_vmdk_stream(trickle(&vmdk, 9), &imported, &mut no_progress()).unwrap();
    assert_eq!(summary.bytes_read, std::fs::metadata(&vmdk).unwrap().len());
    assert_check_clean(&imported, false);
    assert_same_content(&imported, &raw);
}

#[test]
fn our_stream_imports_back_and_converts_to_raw() {
    let dir = Scratch::new("vmdk-roundtrip");
    let mut rng = Rng::new(4);
    let (top, model) = random_chain(&dir, &mut rng);
    let stream = dir.path("s.vmdk");
    convert(
        &mut open_source(&top).unwrap(),
        &stream,
        TargetFormat::VmdkStream,
        &mut no_progress(),
    )
    .unwrap();
    let imported = dir.path("back.qcow2");
    let summary = import_vmdk_stream(trickle(&stream, 4), &imported, &mut no_progress()).unwrap();
    assert_eq!(
        summary.bytes_read,
        std::fs::metadata(&stream).unwrap().len()
    );
    assert_same_content(&imported, &model);
    let raw = dir.path("back.raw");
    convert(
        &mut open_source(&stream).unwrap(),
        &raw,
        TargetFormat::Raw,
        &mut no_progress(),
    )
    .unwrap();
    assert_same_content(&raw, &model);
}

#[test]
fn a_cancelled_import_leaves_no_image() {
    let dir = Scratch::new("vmdk-cancel");
    let mut rng = Rng::new(5);
    let (top, _) = random_chain(&dir, &mut rng);
    let stream = dir.path("s.vmdk");
    convert(
        &mut open_source(&top).unwrap(),
        &stream,
        TargetFormat::VmdkStream,
        &mut no_progress(),
    )
    .unwrap();
    let dest = dir.path("cancelled.qcow2");
    let mut calls = 0;
    let err = import_vmdk_stream(trickle(&stream, 5), &dest, &mut |_, _| {
        calls += 1;
        calls < 3
    })
    .unwrap_err();
    assert!(matches!(err, ImportVmdkError::Cancelled), "{err}");
    assert!(!dest.exists());
    let out = dir.path("cancelled.vmdk");
    let mut calls = 0;
    let cancelled = convert(
        &mut open_source(&top).unwrap(),
        &out,
        TargetFormat::VmdkStream,
        &mut |_, _| {
            calls += 1;
            calls < 3
        },
    );
    assert!(cancelled.is_err());
    assert!(!out.exists());
}
