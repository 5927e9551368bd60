//! Guest operations of the real daemon code against a fake host end (a socket pair): real
//! credentials checks against a passwd/shadow pair written here, real programs, real files.
//! Run as root, programs and files also act as another user (nobody).

use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use vireo_tools::daemon::{serve, DaemonOptions};
use vireo_tools::guest_ops::auth::{crypt_hash, Accounts};
use vireo_tools::guest_ops::wire::{
    ChunkResult, FileList, GuestAuth, GuestFault, GuestOp, GuestOpReply, GuestOpsOffer, PidResult,
    ProcessList, TOOLS_CHUNK_BYTES,
};
use vireo_tools::guest_ops::SystemGuestOps;
use vireo_tools::protocol::{read_message, write_message, GuestInfo, GuestMessage, HostMessage};

const PASSWORD: &str = "c0rrect h0rse";

struct NoActions;

impl vireo_tools::actions::GuestActions for NoActions {
    fn shutdown(&mut self) -> Result<(), String> {
        Err("not here".into())
    }
    fn reboot(&mut self) -> Result<(), String> {
        Err("not here".into())
    }
    fn standby(&mut self) -> Result<(), String> {
        Err("not here".into())
    }
    fn freeze(&mut self) -> Result<(), String> {
        Err("not here".into())
    }
    fn thaw(&mut self) -> Result<(), String> {
        Err("not here".into())
    }
}

/// The host end of a daemon serving guest operations.
struct FakeHost {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
    offer: Option<GuestOpsOffer>,
}

impl FakeHost {
    fn start(passwd: &Path, shadow: &Path) -> FakeHost {
        let (host, guest) = UnixStream::pair().unwrap();
        let options = DaemonOptions {
            heartbeat: Duration::from_secs(60),
            facts: Box::new(GuestInfo::default),
            actions: Box::new(NoActions),
            guest_ops: Some(Box::new(SystemGuestOps::new(Accounts::new(passwd, shadow)))),
        };
        let reader_half = guest.try_clone().unwrap();
        std::thread::spawn(move || serve(Box::new(reader_half), Box::new(guest), options));
        let mut reader = BufReader::new(host.try_clone().unwrap());
        let Some(GuestMessage::Hello { guest_ops, .. }) = read_message(&mut reader).unwrap() else {
            panic!("hello first")
        };
        FakeHost {
            writer: host,
            reader,
            next_id: 0,
            offer: guest_ops,
        }
    }

    fn ask(&mut self, auth: &GuestAuth, op: GuestOp) -> GuestOpReply {
        self.next_id += 1;
        let id = self.next_id;
        let request = HostMessage::GuestOp {
            id,
            auth: auth.clone(),
            op,
        };
        write_message(&mut self.writer, &request).unwrap();
        loop {
            match read_message(&mut self.reader).unwrap() {
                Some(GuestMessage::GuestOpReply(reply)) if reply.id == id => return reply,
                Some(_) => continue,
                None => panic!("the daemon closed the channel"),
            }
        }
    }

    /// `op`'s result, which must succeed.
    fn ok<T: serde::de::DeserializeOwned>(&mut self, auth: &GuestAuth, op: GuestOp) -> T {
        let reply = self.ask(auth, op);
        assert!(reply.ok, "{reply:?}");
        serde_json::from_value(reply.result.unwrap_or_default()).unwrap()
    }

    fn fault(&mut self, auth: &GuestAuth, op: GuestOp) -> GuestFault {
        let reply = self.ask(auth, op);
        assert!(!reply.ok, "{reply:?}");
        reply.fault.unwrap()
    }

    /// Starts `script` with `sh -c` and waits for its exit code.
    fn run(&mut self, auth: &GuestAuth, script: &str, cwd: &Path, env: &[&str]) -> i32 {
        let started: PidResult = self.ok(
            auth,
            GuestOp::StartProgram {
                path: "/bin/sh".into(),
                args: format!("-c '{script}'"),
                cwd: Some(cwd.display().to_string()),
                env: env.iter().map(|e| e.to_string()).collect(),
            },
        );
        for _ in 0..400 {
            let listed: ProcessList = self.ok(
                auth,
                GuestOp::ListProcesses {
                    pids: vec![started.pid],
                },
            );
            if let Some(code) = listed.processes.iter().find_map(|p| p.exit_code) {
                assert!(listed.processes[0].end_ms >= Some(listed.processes[0].start_ms));
                return code;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("{script} did not finish")
    }
}

/// A scratch directory and a passwd/shadow pair with `ann` (this process's uid) and `nobody`.
fn accounts(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("vireo-guest-ops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    let hash = crypt_hash(PASSWORD, "$6$fakehostsalt$").unwrap();
    let passwd = dir.join("passwd");
    let shadow = dir.join("shadow");
    std::fs::write(
        &passwd,
        format!(
            "ann:x:{uid}:{gid}:Ann:{}:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/sh\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &shadow,
        format!("ann:{hash}:1::::::\nnobody:{hash}:1::::::\n"),
    )
    .unwrap();
    (dir, passwd, shadow)
}

fn login(user: &str, password: &str) -> GuestAuth {
    GuestAuth::Password {
        user: user.into(),
        password: password.into(),
    }
}

#[test]
fn programs_run_with_arguments_directory_and_environment_and_report_exit_codes() {
    let (dir, passwd, shadow) = accounts("programs");
    let mut host = FakeHost::start(&passwd, &shadow);
    assert_eq!(
        host.offer,
        Some(GuestOpsOffer {
            chunk_bytes: TOOLS_CHUNK_BYTES
        })
    );
    let ann = login("ann", PASSWORD);
    assert_eq!(
        host.fault(&login("ann", "wrong"), GuestOp::ValidateCredentials),
        GuestFault::InvalidLogin
    );
    assert!(host.ask(&ann, GuestOp::ValidateCredentials).ok);

    let code = host.run(
        &ann,
        "echo \"$GREETING\" > out.txt; exit 3",
        &dir,
        &["GREETING=hi there"],
    );
    assert_eq!(code, 3);
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "hi there\n"
    );

    // A program still running has no exit code; terminating it reports the signal.
    let sleeper: PidResult = host.ok(
        &ann,
        GuestOp::StartProgram {
            path: "/bin/sleep".into(),
            args: "600".into(),
            cwd: None,
            env: Vec::new(),
        },
    );
    let listed: ProcessList = host.ok(
        &ann,
        GuestOp::ListProcesses {
            pids: vec![sleeper.pid],
        },
    );
    assert_eq!(listed.processes.len(), 1);
    assert_eq!(listed.processes[0].exit_code, None);
    assert!(
        host.ask(&ann, GuestOp::TerminateProcess { pid: sleeper.pid })
            .ok
    );
    let mut killed = None;
    for _ in 0..200 {
        let listed: ProcessList = host.ok(
            &ann,
            GuestOp::ListProcesses {
                pids: vec![sleeper.pid],
            },
        );
        killed = listed.processes[0].exit_code;
        if killed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(killed, Some(128 + 9));
    let missing = GuestOp::StartProgram {
        path: dir.join("no-such-program").display().to_string(),
        args: String::new(),
        cwd: None,
        env: Vec::new(),
    };
    assert_eq!(host.fault(&ann, missing), GuestFault::NotFound);

    let ticket: vireo_tools::guest_ops::wire::TicketResult = host.ok(&ann, GuestOp::AcquireTicket);
    let by_ticket = GuestAuth::Ticket {
        ticket: ticket.ticket,
    };
    assert!(host.ask(&by_ticket, GuestOp::ValidateCredentials).ok);
    assert!(host.ask(&by_ticket, GuestOp::ReleaseTicket).ok);
    assert_eq!(
        host.fault(&by_ticket, GuestOp::ValidateCredentials),
        GuestFault::InvalidLogin
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn files_are_made_listed_transferred_moved_and_deleted() {
    let (dir, passwd, shadow) = accounts("files");
    let mut host = FakeHost::start(&passwd, &shadow);
    let ann = login("ann", PASSWORD);
    let base = dir.display().to_string();
    let path = |name: &str| format!("{base}/{name}");
    assert!(
        host.ask(
            &ann,
            GuestOp::MakeDirectory {
                path: path("a/b"),
                parents: true
            }
        )
        .ok
    );

    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let chunk = TOOLS_CHUNK_BYTES as usize;
    for (index, piece) in payload.chunks(chunk).enumerate() {
        let write = GuestOp::WriteFile {
            path: path("a/b/blob"),
            offset: (index * chunk) as u64,
            data: base64::engine::general_purpose::STANDARD.encode(piece),
            overwrite: false,
        };
        assert!(host.ask(&ann, write).ok);
    }
    assert_eq!(std::fs::read(dir.join("a/b/blob")).unwrap(), payload);
    let again = GuestOp::WriteFile {
        path: path("a/b/blob"),
        offset: 0,
        data: String::new(),
        overwrite: false,
    };
    assert_eq!(host.fault(&ann, again), GuestFault::AlreadyExists);

    let mut read_back = Vec::new();
    while read_back.len() < payload.len() {
        let read = GuestOp::ReadFile {
            path: path("a/b/blob"),
            offset: read_back.len() as u64,
            length: TOOLS_CHUNK_BYTES,
        };
        let chunk: ChunkResult = host.ok(&ann, read);
        assert_eq!(chunk.size, payload.len() as u64);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(chunk.data)
            .unwrap();
        assert!(!bytes.is_empty());
        read_back.extend(bytes);
    }
    assert_eq!(read_back, payload);

    let listed: FileList = host.ok(
        &ann,
        GuestOp::ListFiles {
            path: path("a/b"),
            index: 0,
            max: 0,
            pattern: None,
        },
    );
    let names: Vec<&str> = listed.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, [".", "..", "blob"]);
    assert_eq!(listed.files[2].size, payload.len() as u64);

    let moved = GuestOp::MoveFile {
        from: path("a/b/blob"),
        to: path("a/blob2"),
        overwrite: false,
    };
    assert!(host.ask(&ann, moved).ok);
    let attributes = GuestOp::ChangeAttributes {
        path: path("a/blob2"),
        mode: Some(0o600),
        uid: None,
        gid: None,
        mtime: Some(1_000_000_000),
        atime: None,
    };
    assert!(host.ask(&ann, attributes).ok);
    let meta = std::fs::metadata(dir.join("a/blob2")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::os::unix::fs::MetadataExt::mtime(&meta), 1_000_000_000);
    let not_empty = GuestOp::DeleteDirectory {
        path: path("a"),
        recursive: false,
    };
    assert_eq!(host.fault(&ann, not_empty), GuestFault::DirectoryNotEmpty);
    assert_eq!(
        host.fault(&ann, GuestOp::DeleteFile { path: path("a") }),
        GuestFault::NotAFile
    );
    let relative = GuestOp::DeleteFile {
        path: "a/blob2".into(),
    };
    assert_eq!(host.fault(&ann, relative), GuestFault::BadRequest);
    let recursive = GuestOp::DeleteDirectory {
        path: path("a"),
        recursive: true,
    };
    assert!(host.ask(&ann, recursive).ok);
    assert!(!dir.join("a").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn as_root_operations_act_as_the_authenticated_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: acting as another user needs root");
        return;
    }
    let (dir, passwd, shadow) = accounts("identity");
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut host = FakeHost::start(&passwd, &shadow);
    let nobody = login("nobody", PASSWORD);

    assert_eq!(
        host.run(&nobody, "id -u > who; id -g >> who", &shared, &[]),
        0
    );
    assert_eq!(
        std::fs::read_to_string(shared.join("who")).unwrap(),
        "65534\n65534\n"
    );
    let made = GuestOp::MakeDirectory {
        path: shared.join("mine").display().to_string(),
        parents: false,
    };
    assert!(host.ask(&nobody, made).ok);
    let meta = std::fs::metadata(shared.join("mine")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
    // The scratch directory itself (root's, 0755) is closed to nobody.
    let refused = GuestOp::MakeDirectory {
        path: dir.join("not-mine").display().to_string(),
        parents: false,
    };
    assert_eq!(host.fault(&nobody, refused), GuestFault::PermissionDenied);
    // The daemon itself is still root afterwards.
    assert!(nix::unistd::geteuid().is_root());
    std::fs::remove_dir_all(dir).unwrap();
}
