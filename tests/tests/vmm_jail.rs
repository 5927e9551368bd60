//! A `vireo-vmm` jailed as vireod starts it (`--jail-uid/--jail-gid/--jail-dir`): every thread
//! runs under a seccomp filter, with no capabilities and not as root, in its own mount
//! namespace that shows only the directories it was given; its control socket is 0600 and
//! serves only the user that started it, even when the socket file lets others connect.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use vireo_tests::{kvm_available, scratch_dir, test_guest, Vmm};

const BOOT: Duration = Duration::from_secs(60);
const JAIL_UID: u32 = 65534;

/// The value of `field` in a /proc status file.
fn field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
}

/// Connects to `socket` as the jail's user, sends a status request, and returns what happened.
fn status_as_other_user(socket: &Path) -> String {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect refused:", e.strerror)
    sys.exit(0)
try:
    s.sendall(b'{"cmd":"status"}\n')
except BrokenPipeError:
    pass  # refused before the request: the refusal is still there to read
print("reply:", s.makefile().readline().strip())
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(socket)
        .uid(JAIL_UID)
        .gid(JAIL_UID)
        .output()
        .expect("run python3 as another user");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_jailed_vmm_is_filtered_unprivileged_and_serves_only_its_owner() {
    if !kvm_available("a_jailed_vmm_is_filtered_unprivileged_and_serves_only_its_owner") {
        return;
    }
    if !nix_is_root() {
        eprintln!("SKIPPED: jailing a VMM needs root");
        return;
    }
    let dir = scratch_dir("jail");
    let guest = test_guest();
    let guest_dir = guest.parent().unwrap().display().to_string();
    let (guest, jail_dir) = (guest.display().to_string(), dir.display().to_string());
    let uid = JAIL_UID.to_string();
    let args = [
        "--kernel",
        &guest,
        "--vcpus",
        "2",
        "--memory-mib",
        "64",
        "--cmdline",
        "scenario=shell",
        "--jail-uid",
        &uid,
        "--jail-gid",
        &uid,
        "--jail-dir",
        &jail_dir,
        "--jail-dir",
        &guest_dir,
    ];
    let socket = dir.join("control.sock");
    let mut vmm = Vmm::start_with(&args, Some(&socket));
    vmm.expect("vireo> ", BOOT);
    vmm.wait_for_control(BOOT);
    assert_eq!(vmm.shell("cpus"), "cpus=2");

    // Every thread: filtered, no capabilities, not root.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", vmm.pid())).unwrap();
    let mut names = Vec::new();
    for task in tasks {
        // A thread that ended since the listing (a finished control connection) is skipped.
        let Ok(status) = std::fs::read_to_string(task.unwrap().path().join("status")) else {
            continue;
        };
        let name = field(&status, "Name:").to_owned();
        assert_eq!(field(&status, "Seccomp:"), "2", "thread {name}");
        assert_eq!(
            field(&status, "CapEff:"),
            "0000000000000000",
            "thread {name}"
        );
        assert_eq!(
            field(&status, "CapPrm:"),
            "0000000000000000",
            "thread {name}"
        );
        assert_eq!(field(&status, "NoNewPrivs:"), "1", "thread {name}");
        let uids: Vec<&str> = field(&status, "Uid:").split_whitespace().collect();
        assert_eq!(uids, [uid.as_str(); 4], "thread {name}");
        assert_eq!(field(&status, "Groups:"), "", "thread {name}");
        names.push(name);
    }
    for expected in ["vcpu0", "vcpu1", "control", "signals"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }

    // Its own mount namespace, showing the given directories and nothing else of the host.
    let root = format!("/proc/{}/root", vmm.pid());
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_ne!(ns(&vmm.pid().to_string()), ns("self"));
    assert!(Path::new(&format!("{root}{jail_dir}")).is_dir());
    for hidden in ["/etc/passwd", "/usr/bin", "/proc/self", "/root"] {
        assert!(!Path::new(&format!("{root}{hidden}")).exists(), "{hidden}");
    }

    // The owner is served; another user cannot connect, and when the socket file would let
    // it, SO_PEERCRED refuses it.
    assert_eq!(vmm.control(json!({"cmd": "status"}))["ok"], json!(true));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let refused = status_as_other_user(&socket);
    assert!(refused.starts_with("connect refused"), "{refused}");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = status_as_other_user(&socket);
    assert!(
        refused.contains(r#""ok":false"#) && refused.contains("not the VM's owner"),
        "{refused}"
    );
    assert_eq!(vmm.control(json!({"cmd": "status"}))["ok"], json!(true));

    vmm.send("poweroff\n");
    let exit = vmm.wait(BOOT);
    assert_eq!(
        (exit.status.code(), exit.reason()),
        (Some(0), "guest-power-off"),
        "{exit:?}"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| field(&s, "Uid:").split_whitespace().nth(1) == Some("0"))
        .unwrap_or(false)
}
