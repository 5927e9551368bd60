//! `vireo-vmm` refuses bad input with one clear line and status 1, before touching KVM.

use std::process::Command;

use vireo_tests::{binary, scratch_dir};

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(binary("vireo-vmm"))
        .args(args)
        .output()
        .expect("run vireo-vmm");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_kernel_is_a_clear_error() {
    let (code, stderr) = run(&["--kernel", "/nonexistent/kernel.elf", "--memory-mib", "64"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("cannot read kernel /nonexistent/kernel.elf"),
        "{stderr}"
    );
}

#[test]
fn a_file_that_is_not_a_kernel_is_rejected() {
    let dir = scratch_dir("not-a-kernel");
    let path = dir.join("notes.txt");
    std::fs::write(
        &path,
        "these are not the instructions you are looking for\n".repeat(40),
    )
    .unwrap();
    let (code, stderr) = run(&["--kernel", path.to_str().unwrap(), "--memory-mib", "64"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("is not a bootable kernel"), "{stderr}");
}

#[test]
fn zero_memory_and_zero_vcpus_are_rejected() {
    let (code, stderr) = run(&["--kernel", "/bin/true", "--memory-mib", "0"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--memory-mib must be at least"), "{stderr}");
    let (code, stderr) = run(&["--kernel", "/bin/true", "--vcpus", "0"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--vcpus must be between 1 and 254"),
        "{stderr}"
    );
}

#[test]
fn an_elf_without_a_pvh_note_is_rejected() {
    // /bin/true is an ELF, but not a kernel with a PVH entry.
    let (code, stderr) = run(&["--kernel", "/bin/true", "--memory-mib", "64"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("cannot load kernel") || stderr.contains("without a PVH entry"),
        "{stderr}"
    );
}
