//! Debian's stock cloud kernel with a busybox initramfs (scripts/build-guest.sh) under
//! `vireo-vmm --vcpus 2`: one boot serves every check — userspace on both CPUs, virtio-blk write
//! and read-back (the host file holds the bytes), /dev/hvc0, no ACPI errors, pause and resume
//! (the guest's shell answers after it), the ACPI power button and the orderly power-off it
//! starts, with exit status 0. On kvm-pvm (our build and CI machines) the VMM boots the bzImage's payload
//! through PVH, appends its command-line options and completes the ring-0 instructions and the
//! ring-3 SYSCALLs the backend leaves undone (docs/kvm-pvm.md); the test checks those too.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use vireo_tests::{hardware_kvm, kvm_available, repo_root, scratch_dir, Vmm};

/// A guard against a hung boot, not a speed bar (the 25 minutes are measured and
/// reported, not asserted): on a loaded kvm-pvm host the vCPUs get a fraction of a core.
const BOOT_TIMEOUT: Duration = Duration::from_secs(50 * 60);

/// Builds (or finds cached) the kernel and initramfs; returns their folder.
fn linux_guest() -> PathBuf {
    let output = Command::new(repo_root().join("scripts/build-guest.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run build-guest.sh");
    assert!(output.status.success(), "scripts/build-guest.sh failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build-guest.sh names its folder"),
    )
}

/// Starts the guest with 2 vCPUs, 256 MiB and the given extra arguments.
fn start(guest: &Path, cmdline: &str, extra: &[&str], control: &Path) -> Vmm {
    let kernel = guest.join("vmlinuz").display().to_string();
    let initrd = guest.join("initramfs.cpio.gz").display().to_string();
    let mut args = vec![
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--cmdline",
        cmdline,
        "--vcpus",
        "2",
        "--memory-mib",
        "256",
    ];
    args.extend_from_slice(extra);
    Vmm::start_with(&args, Some(control))
}

/// The kvm-pvm side of the boot: its command-line options reached the kernel and the VMM
/// completed what the backend refused, the system calls of userspace among them.
fn check_kvm_pvm_completions(vmm: &Vmm, log: &str) {
    for option in [
        "clearcpuid=154,298,534",
        "tsc_early_khz=",
        "initcall_blacklist=",
    ] {
        assert!(
            log.contains(option),
            "kvm-pvm's {option} is on the command line: {log}"
        );
    }
    let status = vmm.control(json!({"cmd": "status"}));
    let counts = &status["completed_instructions"];
    eprintln!("completed instructions {counts}");
    for kind in ["int3", "cmpxchg16b", "stac_clac", "syscall"] {
        assert!(
            counts[kind].as_u64().unwrap_or(0) > 0,
            "{kind} completed: {status}"
        );
    }
}

/// Pauses the VM and resumes it; the guest's shell then still runs a command.
fn pause_and_resume(vmm: &mut Vmm, timeout: Duration) {
    assert_eq!(vmm.control(json!({"cmd": "pause"})), json!({"ok": true}));
    assert_eq!(
        vmm.control(json!({"cmd": "status"}))["state"],
        json!("paused")
    );
    assert_eq!(vmm.control(json!({"cmd": "resume"})), json!({"ok": true}));
    assert_eq!(
        vmm.control(json!({"cmd": "status"}))["state"],
        json!("running")
    );
    vmm.send("echo resumed-$((6 * 7))\n");
    vmm.expect("resumed-42", timeout);
}

#[test]
fn debian_kernel_boots_pauses_and_takes_the_power_button() {
    let name = "debian_kernel_boots_pauses_and_takes_the_power_button";
    if !kvm_available(name) {
        return;
    }
    let guest = linux_guest();
    let dir = scratch_dir(name);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let token = format!("vireo-token-{}-{nanos}", std::process::id());
    let disk = dir.join("disk.raw");
    let mut file = std::fs::File::create(&disk).unwrap();
    file.write_all(token.as_bytes()).unwrap();
    file.set_len(16 << 20).unwrap();
    drop(file);

    let disk_arg = format!("path={}", disk.display());
    let tools = dir.join("tools.sock").display().to_string();
    let started = Instant::now();
    let deadline = started + BOOT_TIMEOUT;
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut vmm = start(
        &guest,
        "console=ttyS0 panic=-1 vireo.scenario=checks",
        &["--disk", &disk_arg, "--tools-socket", &tools],
        &dir.join("control.sock"),
    );
    let booted = vmm.expect("vireo-linux-guest: booted cpus=2", left());
    eprintln!(
        "{name}: userspace on both CPUs after {:?}",
        started.elapsed()
    );
    if !hardware_kvm() {
        check_kvm_pvm_completions(&vmm, &booted);
    }
    vmm.expect("vireo-linux-guest: hvc0 present", left());
    let checks = vmm.expect("vireo-linux-guest: waiting for the power button", left());
    let written = format!("written-by-linux:{token}");
    assert!(
        checks.contains(&format!("disk token read: {token}")),
        "{checks}"
    );
    assert!(
        checks.contains(&format!("disk read back: {written}")),
        "{checks}"
    );
    assert!(!checks.contains("acpi:"), "ACPI errors in dmesg: {checks}");

    pause_and_resume(&mut vmm, left());
    assert_eq!(
        vmm.control(json!({"cmd": "power-button"})),
        json!({"ok": true})
    );
    vmm.expect("vireo-linux-guest: power button pressed", left());
    let exit = vmm.wait(left().max(Duration::from_secs(60)));
    assert_eq!(
        (exit.status.code(), exit.reason()),
        (Some(0), "guest-power-off"),
        "{exit:?}"
    );
    eprintln!("{name}: powered off after {:?}", started.elapsed());

    let mut on_host = vec![0u8; written.len()];
    let mut file = std::fs::File::open(&disk).unwrap();
    file.seek(SeekFrom::Start(4096)).unwrap();
    file.read_exact(&mut on_host).unwrap();
    assert_eq!(String::from_utf8_lossy(&on_host), written);
    let _ = std::fs::remove_dir_all(&dir);
}
