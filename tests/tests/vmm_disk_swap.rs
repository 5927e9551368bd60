//! Live snapshots from the VMM's side: with the guest paused, its disks are detached (flushed
//! and closed), the host starts a child layer with `qemu-img`, the child is attached, and the
//! guest runs on. Wrong sizes and running guests are refused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use vireo_tests::{kvm_available, scratch_dir, test_guest, Vmm};

const BOOT: Duration = Duration::from_secs(60);

fn qemu_img(args: &[&str]) {
    let status = Command::new("qemu-img")
        .args(args)
        .status()
        .expect("run qemu-img");
    assert!(status.success(), "qemu-img {args:?} failed");
}

/// Boots the test guest's shell with `image` as its disk and a control socket in `dir`.
fn boot_shell_with_disk(dir: &Path, image: &Path) -> Vmm {
    let disk = format!("path={}", image.display());
    let guest = test_guest().display().to_string();
    let args = [
        "--kernel",
        &guest,
        "--memory-mib",
        "64",
        "--cmdline",
        "scenario=shell",
        "--disk",
        &disk,
    ];
    let mut vmm = Vmm::start_with(&args, Some(&dir.join("c.sock")));
    vmm.expect("vireo> ", BOOT);
    vmm.wait_for_control(BOOT);
    vmm
}

#[test]
fn disks_are_swapped_for_a_child_layer_under_a_paused_guest() {
    if !kvm_available("disks_are_swapped_for_a_child_layer_under_a_paused_guest") {
        return;
    }
    let dir = scratch_dir("disk-swap");
    let base = dir.join("base.qcow2");
    let child = dir.join("child.qcow2");
    let small = dir.join("small.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        small.to_str().unwrap(),
        "32M",
    ]);
    let mut vmm = boot_shell_with_disk(&dir, &base);

    let refused = vmm.control(json!({"cmd": "detach-disks"}));
    assert_eq!(
        refused["ok"],
        json!(false),
        "a running guest keeps its disks: {refused}"
    );
    assert_eq!(vmm.control(json!({"cmd": "pause"}))["ok"], json!(true));
    assert_eq!(
        vmm.control(json!({"cmd": "detach-disks"})),
        json!({"ok": true})
    );
    // The base is closed and consistent: the host may now freeze it and start a child.
    qemu_img(&["check", "-q", base.to_str().unwrap()]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        child.to_str().unwrap(),
    ]);
    let wrong = vmm.control(json!({"cmd": "attach-disks", "paths": [small]}));
    assert_eq!(wrong["ok"], json!(false));
    assert!(
        wrong["error"].as_str().unwrap().contains("bytes"),
        "{wrong}"
    );
    assert_eq!(
        vmm.control(json!({"cmd": "attach-disks", "paths": [child]})),
        json!({"ok": true})
    );
    assert_eq!(vmm.control(json!({"cmd": "resume"}))["ok"], json!(true));
    assert_eq!(vmm.shell("echo after the swap"), "after the swap");
    vmm.send("poweroff\n");
    assert_eq!(vmm.wait(BOOT).status.code(), Some(0));
    qemu_img(&["check", "-q", child.to_str().unwrap()]);
}

#[test]
fn disks_are_closed_cleanly_when_the_guest_powers_itself_off() {
    if !kvm_available("disks_are_closed_cleanly_when_the_guest_powers_itself_off") {
        return;
    }
    let dir = scratch_dir("clean-close");
    let image = dir.join("tracked.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        image.to_str().unwrap(),
        "64M",
    ]);
    qemu_img(&["bitmap", "--add", image.to_str().unwrap(), "changes"]);
    let mut vmm = boot_shell_with_disk(&dir, &image);
    // Typed through the control socket rather than stdin.
    assert_eq!(
        vmm.control(json!({"cmd": "serial-input", "text": "blk write 0 0 8 7\n"}))["ok"],
        json!(true)
    );
    vmm.expect("write ok", BOOT);
    assert_eq!(
        vmm.control(json!({"cmd": "serial-input", "text": "poweroff\n"}))["ok"],
        json!(true)
    );
    assert_eq!(vmm.wait(BOOT).status.code(), Some(0));
    let info = Command::new("qemu-img")
        .args(["info", "--output=json", image.to_str().unwrap()])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let bitmaps = &info["format-specific"]["data"]["bitmaps"];
    assert_eq!(bitmaps[0]["name"], json!("changes"), "{info}");
    let flags = bitmaps[0]["flags"].as_array().unwrap();
    assert!(
        !flags.contains(&json!("in-use")),
        "bitmap left in use after a clean guest power-off: {flags:?}"
    );
    qemu_img(&["check", "-q", image.to_str().unwrap()]);
}
