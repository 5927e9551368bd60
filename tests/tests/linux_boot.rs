//! Debian's kernel with a busybox initramfs (scripts/build-guest.sh) under `vireo-vmm`, through
//! the bzImage 64-bit boot protocol. Stock kernels need hardware KVM; on kvm-pvm (our build and
//! CI machines) this test skips loudly.

use std::process::Command;
use std::time::Duration;

use vireo_tests::{hardware_kvm, kvm_available, repo_root, Vmm};

#[test]
fn debian_kernel_boots_reports_cpus_and_powers_off() {
    let name = "debian_kernel_boots_reports_cpus_and_powers_off";
    if !kvm_available(name) {
        return;
    }
    if !hardware_kvm() {
        eprintln!(
            "SKIPPED {name}: /dev/kvm here is not hardware KVM (kvm_intel/kvm_amd absent or kvm_pvm loaded); \
             stock Linux kernels do not boot on it (see shared/reference/kvm-on-these-machines.md)"
        );
        return;
    }
    let status = Command::new(repo_root().join("scripts/build-guest.sh"))
        .status()
        .expect("run build-guest.sh");
    assert!(status.success(), "scripts/build-guest.sh failed");
    let dir = repo_root().join(".cache/linux-guest");
    let kernel = dir.join("vmlinuz").display().to_string();
    let initrd = dir.join("initramfs.cpio.gz").display().to_string();
    for (scenario, code) in [("power-off", 0), ("reboot", 3)] {
        let cmdline = format!("console=ttyS0 panic=-1 vireo.scenario={scenario}");
        let mut vmm = Vmm::start(&[
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--cmdline",
            &cmdline,
            "--vcpus",
            "2",
            "--memory-mib",
            "512",
        ]);
        vmm.expect("vireo-linux-guest: booted cpus=2", Duration::from_secs(120));
        let exit = vmm.wait(Duration::from_secs(60));
        assert_eq!(exit.status.code(), Some(code), "{scenario}: {exit:?}");
    }
}
