//! Chains opened from files handed over (the jailed VMM's way): vireod opens every layer with
//! `open_chain_files` through its backing opener; the VMM opens the chain from those files
//! with `HandedFiles`, which follows a backing name only to a handed file — never a path.
//! Each test runs in its own process (nextest), so installing the process-wide opener is safe.

mod common;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use common::{qemu_img, Scratch};
use vireo_disk::backing::{confine, BackingOpener, HandedFiles};
use vireo_disk::layers::open_chain_files;
use vireo_disk::open::ImageFormat;
use vireo_disk::qcow2::{Qcow2Image, Qcow2Options};
use vireo_disk::SharedDisk;

fn overlay(image: &Path, backing: &str, format: &str) {
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        backing,
        "-F",
        format,
        image.to_str().unwrap(),
        "1M",
    ]);
}

/// The files of the chain topped by `top`, as vireod hands them over: by their canonical
/// paths, as vireod's confined opener reads them back from the opened descriptors (the
/// default opener here only joins names).
fn hand_over(top: &Path) -> Arc<HandedFiles> {
    let writable = File::options().read(true).write(true).open(top).unwrap();
    let layers = open_chain_files(writable, top, ImageFormat::Qcow2).unwrap();
    let files = Arc::new(HandedFiles::default());
    for layer in layers {
        files.insert(std::fs::canonicalize(&layer.path).unwrap(), layer.file);
    }
    files
}

#[test]
fn a_chain_opens_from_its_handed_files_after_its_paths_are_gone() {
    let scratch = Scratch::new("handed-chain");
    std::fs::create_dir(scratch.path("vm")).unwrap();
    let (base, mid, top) = (
        scratch.path("base.raw"),
        scratch.path("vm/mid.qcow2"),
        scratch.path("vm/top.qcow2"),
    );
    std::fs::write(&base, vec![7u8; 1 << 20]).unwrap();
    overlay(&mid, "../base.raw", "raw");
    overlay(&top, "mid.qcow2", "qcow2");
    let files = hand_over(&top);
    for path in [&top, &mid, &base] {
        assert!(
            files.get(path).unwrap().is_some(),
            "{} handed",
            path.display()
        );
    }
    assert!(confine(Box::new(files.clone())));
    let top_file = files.get(&top).unwrap().unwrap();
    // Nothing can be opened by path any more: the chain comes from the descriptors alone.
    std::fs::remove_dir_all(&scratch.0).unwrap();
    let disk = SharedDisk::from_file_as(top_file, &top, ImageFormat::Qcow2, false).unwrap();
    let mut buf = [0u8; 512];
    disk.read_at(&mut buf, 4096).unwrap();
    assert_eq!(buf, [7u8; 512]);
    disk.write_at(&[1u8; 512], 0).unwrap();
    disk.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [1u8; 512]);
}

#[test]
fn backing_names_that_leave_the_handed_files_are_refused() {
    let scratch = Scratch::new("handed-escape");
    let base = scratch.path("base.raw");
    std::fs::write(&base, [0u8; 512]).unwrap();
    let files = Arc::new(HandedFiles::default());
    files.insert(base.clone(), File::open(&base).unwrap());
    let folder = scratch.path("vm");
    let open = |name: &str| {
        files
            .open_backing(&folder, name)
            .map(|(_, path)| path)
            .map_err(|e| e.to_string())
    };
    assert_eq!(open("../base.raw").unwrap(), base);
    assert_eq!(open("./../vm/../base.raw").unwrap(), base);
    let absolute = base.to_str().unwrap().to_owned();
    let escapes = [
        "../../etc/shadow",
        "/etc/shadow",
        "base.raw",
        "../../../../../../../../..",
        &absolute,
    ];
    for name in escapes {
        let error = open(name).unwrap_err();
        assert!(
            error.contains("is not among the files handed over") || error.contains("leaves"),
            "{name}: {error}"
        );
    }
}

#[test]
fn an_image_naming_a_host_file_does_not_open_from_handed_files() {
    let scratch = Scratch::new("handed-shadow");
    let top = scratch.path("top.qcow2");
    let files = Arc::new(HandedFiles::default());
    assert!(confine(Box::new(files.clone())));
    for name in ["/etc/passwd", "../../../../../../etc/passwd"] {
        overlay(&top, name, "raw");
        files.insert(top.clone(), File::open(&top).unwrap());
        let options = Qcow2Options {
            read_only: true,
            ..Qcow2Options::default()
        };
        let file = files.get(&top).unwrap().unwrap();
        let error = Qcow2Image::open_file(file, &top, &options)
            .err()
            .unwrap_or_else(|| panic!("{name} was followed"));
        assert!(
            error.to_string().contains("handed over") || error.to_string().contains("leaves"),
            "{name}: {error}"
        );
        // vireod's walk goes through the same opener and refuses it too.
        assert!(open_chain_files(File::open(&top).unwrap(), &top, ImageFormat::Qcow2).is_err());
    }
}

#[test]
fn a_looping_chain_is_refused() {
    let scratch = Scratch::new("handed-loop");
    let (a, b) = (scratch.path("a.qcow2"), scratch.path("b.qcow2"));
    overlay(&a, "b.qcow2", "qcow2");
    overlay(&b, "a.qcow2", "qcow2");
    let error = open_chain_files(File::open(&a).unwrap(), &a, ImageFormat::Qcow2).unwrap_err();
    assert!(error.to_string().contains("loops"), "{error}");
}
