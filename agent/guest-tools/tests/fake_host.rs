//! The guest daemon against a fake host end: in-process over a socket pair (scripted actions),
//! and the real `vireo-tools` binary connecting to a Unix socket (real shell commands).

use std::io::{BufReader, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vireo_tools::actions::GuestActions;
use vireo_tools::daemon::{serve, DaemonOptions};
use vireo_tools::protocol::{
    read_message, write_message, GuestInfo, GuestMessage, HostMessage, NicInfo, Operation,
    PROTOCOL_VERSION,
};

/// Records what was asked; freeze fails when already frozen, like the real one.
struct Recorder {
    log: Arc<Mutex<Vec<&'static str>>>,
    frozen: bool,
}

impl GuestActions for Recorder {
    fn shutdown(&mut self) -> Result<(), String> {
        self.log.lock().unwrap().push("shutdown");
        Ok(())
    }
    fn reboot(&mut self) -> Result<(), String> {
        self.log.lock().unwrap().push("reboot");
        Ok(())
    }
    fn standby(&mut self) -> Result<(), String> {
        self.log.lock().unwrap().push("standby");
        Ok(())
    }
    fn freeze(&mut self) -> Result<(), String> {
        if self.frozen {
            return Err("filesystems are already frozen".into());
        }
        self.frozen = true;
        self.log.lock().unwrap().push("freeze");
        Ok(())
    }
    fn thaw(&mut self) -> Result<(), String> {
        self.frozen = false;
        self.log.lock().unwrap().push("thaw");
        Ok(())
    }
}

fn next(reader: &mut BufReader<UnixStream>) -> GuestMessage {
    read_message(reader)
        .unwrap()
        .expect("the daemon is still talking")
}

/// The next message that is not a heartbeat (beats may interleave anywhere).
fn next_non_beat(reader: &mut BufReader<UnixStream>) -> GuestMessage {
    loop {
        match next(reader) {
            GuestMessage::Heartbeat { .. } => continue,
            other => return other,
        }
    }
}

/// The next message that is neither a heartbeat nor a guest-info: the real binary reports this
/// machine's interfaces, which other tests change at any moment (TAPs, bridges), so a fresh
/// guest-info may come before any reply.
fn next_answer(reader: &mut BufReader<UnixStream>) -> GuestMessage {
    loop {
        match next_non_beat(reader) {
            GuestMessage::GuestInfo(_) => continue,
            other => return other,
        }
    }
}

#[test]
fn daemon_reports_beats_and_answers_requests() {
    let (host, guest) = UnixStream::pair().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let ips = Arc::new(Mutex::new(vec!["10.0.0.2/24".to_string()]));
    let facts_ips = ips.clone();
    let options = DaemonOptions {
        heartbeat: Duration::from_millis(20),
        facts: Box::new(move || GuestInfo {
            hostname: "guest1".into(),
            os_name: "Test OS 1".into(),
            os_family: "linux".into(),
            nics: vec![NicInfo {
                name: "eth0".into(),
                mac: "52:54:00:00:00:01".into(),
                ips: facts_ips.lock().unwrap().clone(),
            }],
        }),
        actions: Box::new(Recorder {
            log: log.clone(),
            frozen: false,
        }),
        guest_ops: None,
    };
    let reader_half = guest.try_clone().unwrap();
    let daemon = std::thread::spawn(move || serve(Box::new(reader_half), Box::new(guest), options));
    let mut writer = host.try_clone().unwrap();
    let mut reader = BufReader::new(host);

    assert!(matches!(
        next(&mut reader),
        GuestMessage::Hello {
            protocol: PROTOCOL_VERSION,
            ..
        }
    ));
    let GuestMessage::GuestInfo(info) = next(&mut reader) else {
        panic!("guest-info follows hello")
    };
    assert_eq!(info.hostname, "guest1");
    assert_eq!(info.nics[0].ips, ["10.0.0.2/24"]);
    let beats: Vec<u64> = (0..3)
        .map(|_| match next(&mut reader) {
            GuestMessage::Heartbeat { seq } => seq,
            other => panic!("expected a heartbeat, got {other:?}"),
        })
        .collect();
    assert_eq!(beats, [1, 2, 3]);

    ips.lock().unwrap().push("fe80::1/64".into());
    let GuestMessage::GuestInfo(changed) = next_non_beat(&mut reader) else {
        panic!("a change of address is reported")
    };
    assert_eq!(changed.nics[0].ips, ["10.0.0.2/24", "fe80::1/64"]);

    write_message(
        &mut writer,
        &HostMessage::Hello {
            protocol: PROTOCOL_VERSION,
        },
    )
    .unwrap();
    assert!(matches!(
        next_non_beat(&mut reader),
        GuestMessage::Hello { .. }
    ));
    assert!(matches!(
        next_non_beat(&mut reader),
        GuestMessage::GuestInfo(_)
    ));

    let mut ask = |id, op| {
        write_message(&mut writer, &HostMessage::Request { id, op }).unwrap();
        next_non_beat(&mut reader)
    };
    assert_eq!(
        ask(1, Operation::Freeze),
        GuestMessage::Reply {
            id: 1,
            ok: true,
            error: None
        }
    );
    let GuestMessage::Reply {
        id: 2,
        ok: false,
        error: Some(why),
    } = ask(2, Operation::Freeze)
    else {
        panic!("a second freeze fails")
    };
    assert!(why.contains("already frozen"));
    assert_eq!(
        ask(3, Operation::Thaw),
        GuestMessage::Reply {
            id: 3,
            ok: true,
            error: None
        }
    );
    assert_eq!(
        ask(4, Operation::Shutdown),
        GuestMessage::Reply {
            id: 4,
            ok: true,
            error: None
        }
    );
    assert_eq!(
        ask(5, Operation::Reboot),
        GuestMessage::Reply {
            id: 5,
            ok: true,
            error: None
        }
    );
    assert_eq!(
        ask(6, Operation::Standby),
        GuestMessage::Reply {
            id: 6,
            ok: true,
            error: None
        }
    );
    assert!(matches!(
        ask(7, Operation::RefreshInfo),
        GuestMessage::GuestInfo(_)
    ));
    assert_eq!(
        next_non_beat(&mut reader),
        GuestMessage::Reply {
            id: 7,
            ok: true,
            error: None
        }
    );
    assert_eq!(
        *log.lock().unwrap(),
        ["freeze", "thaw", "shutdown", "reboot", "standby"]
    );

    drop(writer);
    drop(reader);
    daemon
        .join()
        .unwrap()
        .expect("the daemon ends cleanly when the host closes the channel");
}

#[test]
fn the_binary_runs_the_shutdown_command_after_replying() {
    let dir = std::env::temp_dir().join(format!("vireo-tools-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("tools.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // The shutdown command inherits the daemon's stdout, a pipe read here to its end: the end
    // comes once the daemon and the command it started have both exited.
    let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_vireo-tools"))
        .arg("--device")
        .arg(&socket)
        .arg("--shutdown-command")
        .arg("echo the shutdown command ran")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut output = daemon.stdout.take().unwrap();
    let (stream, _) = listener.accept().unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let GuestMessage::Hello { tools_version, .. } = next(&mut reader) else {
        panic!("hello first")
    };
    assert_eq!(tools_version, env!("CARGO_PKG_VERSION"));
    let GuestMessage::GuestInfo(info) = next(&mut reader) else {
        panic!("guest-info second")
    };
    assert_eq!(info.os_family, "linux");
    assert!(!info.hostname.is_empty());
    // This machine's interfaces may change meanwhile (other tests add TAPs and bridges): a
    // fresh guest-info may come before the first beat.
    let first_beat = loop {
        match next(&mut reader) {
            GuestMessage::GuestInfo(_) => continue,
            other => break other,
        }
    };
    assert!(matches!(first_beat, GuestMessage::Heartbeat { seq: 1 }));
    write_message(
        &mut writer,
        &HostMessage::Request {
            id: 9,
            op: Operation::Shutdown,
        },
    )
    .unwrap();
    assert_eq!(
        next_answer(&mut reader),
        GuestMessage::Reply {
            id: 9,
            ok: true,
            error: None
        }
    );
    drop(writer);
    drop(reader);
    assert!(
        daemon.wait().unwrap().success(),
        "the daemon exits when its socket closes"
    );
    let mut printed = String::new();
    output.read_to_string(&mut printed).unwrap();
    assert_eq!(printed, "the shutdown command ran\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Builds an ISO at `iso` whose application identifier is `application` from the files of
/// `staging`, as scripts/build-tools-iso.sh does.
fn make_iso(staging: &std::path::Path, application: &str, iso: &std::path::Path) {
    let status = std::process::Command::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-R",
            "-J",
            "-iso-level",
            "3",
            "-A",
        ])
        .arg(application)
        .arg("-o")
        .arg(iso)
        .arg(staging)
        .output()
        .expect("xorriso runs")
        .status;
    assert!(status.success());
}

#[test]
fn the_binary_installs_an_upgrade_from_the_installer_medium_and_restarts_as_it() {
    if std::process::Command::new("xorriso")
        .arg("-version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: xorriso is missing (scripts/setup/35-iso-tools.sh installs it)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vireo-tools-upgrade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (bin, staging, work) = (dir.join("bin"), dir.join("staging"), dir.join("work"));
    for folder in [&bin, &staging, &work] {
        std::fs::create_dir_all(folder).unwrap();
    }
    // The running tools, and on the medium a new build: the same program with bytes after
    // its end (an ELF runs all the same), so the installed file tells which one is there.
    let installed = bin.join("vireo-tools");
    std::fs::copy(env!("CARGO_BIN_EXE_vireo-tools"), &installed).unwrap();
    let mut upgraded = std::fs::read(env!("CARGO_BIN_EXE_vireo-tools")).unwrap();
    upgraded.extend_from_slice(b"\0the upgraded build\0");
    std::fs::write(staging.join("vireo-tools"), &upgraded).unwrap();
    let installer = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/tools-iso/install.sh"
    );
    std::fs::copy(installer, staging.join("install.sh")).unwrap();
    // An ISO that is not the tools installer, and where the installer's will be.
    let other = dir.join("other.iso");
    make_iso(&staging, "SOMETHING ELSE", &other);
    let medium = dir.join("tools.iso");

    let socket = dir.join("tools.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let mut daemon = std::process::Command::new(&installed)
        .arg("--device")
        .arg(&socket)
        .arg("--installer-medium")
        .arg(&other)
        .arg("--installer-medium")
        .arg(&medium)
        .arg("--work-dir")
        .arg(&work)
        .spawn()
        .unwrap();
    let connect = || {
        let (stream, _) = listener.accept().unwrap();
        let writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let GuestMessage::Hello { upgrades, .. } = next(&mut reader) else {
            panic!("hello first")
        };
        assert!(upgrades, "vireo-tools offers upgrades");
        (writer, reader)
    };
    let (mut writer, mut reader) = connect();
    let mut upgrade = |id| {
        write_message(
            &mut writer,
            &HostMessage::Request {
                id,
                op: Operation::UpgradeTools,
            },
        )
        .unwrap();
        next_answer(&mut reader)
    };
    // No installer medium yet: refused, nothing installed.
    let GuestMessage::Reply {
        id: 1,
        ok: false,
        error: Some(error),
    } = upgrade(1)
    else {
        panic!("a refusal")
    };
    assert!(
        error.contains("no CD-ROM holds the vireo-tools installer"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_vireo-tools")).unwrap()
    );

    make_iso(&staging, "VIREO-TOOLS 9.9.9", &medium);
    assert_eq!(
        upgrade(2),
        GuestMessage::Reply {
            id: 2,
            ok: true,
            error: None
        }
    );
    // The daemon runs again as the installed file, which is the medium's build.
    let (writer, mut reader) = connect();
    assert_eq!(std::fs::read(&installed).unwrap(), upgraded);
    assert_eq!(
        std::fs::read_dir(&work).unwrap().count(),
        0,
        "the unpacked installer is removed"
    );
    // Closed from this end, read to the daemon's end: it exits cleanly.
    writer.shutdown(std::net::Shutdown::Write).unwrap();
    while read_message::<GuestMessage>(&mut reader).unwrap().is_some() {}
    assert!(daemon.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}
