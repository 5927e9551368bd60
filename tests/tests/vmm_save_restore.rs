//! A running test guest saved through the control socket and resumed by a new `vireo-vmm
//! --restore`: the guest carries on where it stopped (its shell answers, its tick counter
//! continues from the saved value, the PIT it left ticking still raises IRQ 0); a damaged state
//! file is refused with a clear error.

use std::time::Duration;

use serde_json::json;
use vireo_tests::{binary, kvm_available, poll_until, scratch_dir, test_guest, Vmm};

const BOOT: Duration = Duration::from_secs(60);

/// The IRQ 0s the guest has counted (its `pit count`).
fn pit_count(vmm: &mut Vmm) -> u64 {
    let answer = vmm.shell("pit count");
    answer
        .strip_prefix("pit irq0=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer to pit count: {answer:?}"))
}

#[test]
fn a_saved_guest_resumes_where_it_stopped() {
    if !kvm_available("a_saved_guest_resumes_where_it_stopped") {
        return;
    }
    let dir = scratch_dir("save-restore");
    let save_dir = dir.join("saved");
    let guest = test_guest().display().to_string();
    let args = [
        "--kernel",
        &guest,
        "--vcpus",
        "2",
        "--memory-mib",
        "64",
        "--cmdline",
        "scenario=shell",
    ];
    let mut vmm = Vmm::start_with(&args, Some(&dir.join("a.sock")));
    vmm.expect("vireo> ", BOOT);
    vmm.wait_for_control(BOOT);
    // The PIT ticks at 1 kHz on IRQ 0 while the guest is saved; restored, it goes on.
    assert_eq!(vmm.shell("pit start"), "pit started");
    std::thread::sleep(Duration::from_millis(300));
    let before = vmm.ticks();
    let pit_before = pit_count(&mut vmm);
    assert!(pit_before > 0, "IRQ 0 before the save");
    let reply = vmm.control(json!({"cmd": "save", "dir": save_dir}));
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(
        vmm.control(json!({"cmd": "status"}))["state"],
        json!("paused")
    );
    assert_eq!(vmm.control(json!({"cmd": "power-off"}))["ok"], json!(true));
    assert_eq!(vmm.wait(BOOT).status.code(), Some(0));

    let restore = save_dir.display().to_string();
    let mut resumed = Vmm::start_with(&["--restore", &restore], Some(&dir.join("b.sock")));
    let after = resumed.ticks();
    assert!(
        after >= before,
        "the tick counter continues from {before}, got {after}"
    );
    let pit_restored = pit_count(&mut resumed);
    assert!(
        pit_restored >= pit_before,
        "{pit_before}, then {pit_restored}"
    );
    // 1 kHz: 20 more take 20 ms; a loaded host gets up to 10 s.
    poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let pit_later = pit_count(&mut resumed);
        if pit_later >= pit_restored + 20 {
            Ok(())
        } else {
            Err(format!(
                "IRQ 0 stopped after the restore: {pit_before}, then {pit_restored}, then {pit_later}"
            ))
        }
    });
    assert_eq!(resumed.shell("cpus"), "cpus=2");
    assert_eq!(resumed.shell("echo still here"), "still here");
    resumed.send("poweroff\n");
    let exit = resumed.wait(BOOT);
    assert_eq!(
        (exit.status.code(), exit.reason()),
        (Some(0), "guest-power-off"),
        "{exit:?}"
    );

    // The same save restores again (the memory file is mapped privately, never written).
    let mut again = Vmm::start(&["--restore", &restore]);
    assert_eq!(again.shell("echo twice"), "twice");
    again.send("poweroff\n");
    assert_eq!(again.wait(BOOT).status.code(), Some(0));

    // A damaged state file is refused.
    let state = save_dir.join("vm.state");
    let mut bytes = std::fs::read(&state).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&state, &bytes).unwrap();
    let out = std::process::Command::new(binary("vireo-vmm"))
        .args(["--restore", &restore])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{out:?}"
    );
}
