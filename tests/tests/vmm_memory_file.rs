//! A guest with a large working set saved and resumed from its memory file: 768 MiB of a
//! 1 GiB test guest hold a verifiable pattern; the resumed guest runs from the file mapped
//! copy-on-write, which stays as saved (read-only, never reopened for writing: saving again into
//! the same directory is refused) and may be deleted while the guest runs; the pattern is intact
//! after each step, and a second save of the resumed guest restores too.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use vireo_tests::{kvm_available, scratch_dir, test_guest, Vmm};

const BOOT: Duration = Duration::from_secs(60);
/// Filling or checking 768 MiB touches every page (tens of seconds on kvm-pvm under load).
const RAM_COMMAND: Duration = Duration::from_secs(300);
const CHECKED: &str = "ram ok 768 MiB generation=0";

fn save(vmm: &Vmm, dir: &Path) -> serde_json::Value {
    vmm.control(json!({"cmd": "save", "dir": dir}))
}

fn restore(dir: &Path, socket: &Path) -> Vmm {
    let restore = dir.display().to_string();
    let vmm = Vmm::start_with(&["--restore", &restore], Some(socket));
    vmm.wait_for_control(BOOT);
    vmm
}

fn power_off(vmm: Vmm) {
    assert_eq!(vmm.control(json!({"cmd": "power-off"}))["ok"], json!(true));
    assert_eq!(vmm.wait(BOOT).status.code(), Some(0));
}

#[test]
fn a_filled_guest_resumes_from_its_memory_file_which_stays_as_saved() {
    if !kvm_available("a_filled_guest_resumes_from_its_memory_file_which_stays_as_saved") {
        return;
    }
    let dir = scratch_dir("memory-file");
    let (first, second) = (dir.join("first"), dir.join("second"));
    let guest = test_guest().display().to_string();
    let args = [
        "--kernel",
        &guest,
        "--memory-mib",
        "1024",
        "--cmdline",
        "scenario=shell",
    ];
    let mut vmm = Vmm::start_with(&args, Some(&dir.join("a.sock")));
    vmm.expect("vireo> ", BOOT);
    vmm.wait_for_control(BOOT);
    assert_eq!(
        vmm.shell_within("ram fill 768 11", RAM_COMMAND),
        "ram filled 768 MiB seed=11"
    );
    let reply = save(&vmm, &first);
    assert_eq!(reply["ok"], json!(true), "{reply}");
    power_off(vmm);
    let memory_file = first.join("vm.mem");
    let saved = std::fs::metadata(&memory_file).unwrap();
    assert!(saved.permissions().readonly());

    let mut resumed = restore(&first, &dir.join("b.sock"));
    assert_eq!(resumed.shell("echo resumed"), "resumed");
    // Saving into the directory the guest runs from would rewrite the file it is mapped from.
    let reply = save(&resumed, &first);
    assert_eq!(reply["ok"], json!(false), "{reply}");
    assert!(
        reply["error"].as_str().unwrap_or("").contains("exists"),
        "{reply}"
    );
    assert_eq!(resumed.control(json!({"cmd": "resume"}))["ok"], json!(true));
    let now = std::fs::metadata(&memory_file).unwrap();
    assert_eq!(
        (now.len(), now.modified().unwrap()),
        (saved.len(), saved.modified().unwrap())
    );
    assert_eq!(resumed.shell_within("ram check", RAM_COMMAND), CHECKED);

    // The save may go while the guest runs from it (a snapshot deleted after a revert).
    std::fs::remove_dir_all(&first).unwrap();
    assert_eq!(resumed.shell_within("ram check", RAM_COMMAND), CHECKED);
    let reply = save(&resumed, &second);
    assert_eq!(reply["ok"], json!(true), "{reply}");
    power_off(resumed);

    let mut again = restore(&second, &dir.join("c.sock"));
    assert_eq!(again.shell_within("ram check", RAM_COMMAND), CHECKED);
    power_off(again);
    std::fs::remove_dir_all(&dir).unwrap();
}
