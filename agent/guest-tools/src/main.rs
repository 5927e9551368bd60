//! `vireo-tools [--device PATH] [--heartbeat-ms N] [--shutdown-command CMD] [--reboot-command CMD]
//! [--standby-command CMD] [--passwd FILE] [--shadow FILE] [--no-guest-ops]`: the guest tools
//! daemon. PATH is the tools console (default /dev/hvc0) or, for tests, a Unix socket to connect
//! to. Guest operations check credentials against FILEs (default /etc/passwd, /etc/shadow).
//! Reopens a device whose host end went away; exits when a socket closes.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vireo_tools::actions::SystemActions;
use vireo_tools::daemon::{serve, DaemonOptions};
use vireo_tools::facts::read_guest_info;
use vireo_tools::guest_ops::auth::Accounts;
use vireo_tools::guest_ops::{GuestOperations, SystemGuestOps};
use vireo_tools::protocol::HEARTBEAT_INTERVAL_MS;

struct Args {
    device: PathBuf,
    heartbeat: Duration,
    shutdown: String,
    reboot: String,
    standby: String,
    passwd: PathBuf,
    shadow: PathBuf,
    guest_ops: bool,
}

const USAGE: &str = "usage: vireo-tools [--device PATH] [--heartbeat-ms N] [--shutdown-command CMD] [--reboot-command CMD] [--standby-command CMD] [--passwd FILE] [--shadow FILE] [--no-guest-ops]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        device: PathBuf::from("/dev/hvc0"),
        heartbeat: Duration::from_millis(HEARTBEAT_INTERVAL_MS),
        shutdown: "poweroff".into(),
        reboot: "reboot".into(),
        standby: "sync".into(),
        passwd: PathBuf::from("/etc/passwd"),
        shadow: PathBuf::from("/etc/shadow"),
        guest_ops: true,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => args.device = value()?.into(),
            "--heartbeat-ms" => {
                let ms: u64 = value()?.parse().map_err(|_| "bad --heartbeat-ms")?;
                args.heartbeat = Duration::from_millis(ms.max(1));
            }
            "--shutdown-command" => args.shutdown = value()?,
            "--reboot-command" => args.reboot = value()?,
            "--standby-command" => args.standby = value()?,
            "--passwd" => args.passwd = value()?.into(),
            "--shadow" => args.shadow = value()?.into(),
            "--no-guest-ops" => args.guest_ops = false,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// The guest operations every connection shares.
type SharedGuestOps = Arc<Mutex<SystemGuestOps>>;

fn options(args: &Args, guest_ops: &Option<SharedGuestOps>) -> DaemonOptions {
    DaemonOptions {
        heartbeat: args.heartbeat,
        facts: Box::new(read_guest_info),
        actions: Box::new(SystemActions::new(
            &args.shutdown,
            &args.reboot,
            &args.standby,
        )),
        guest_ops: guest_ops
            .clone()
            .map(|ops| Box::new(ops) as Box<dyn GuestOperations>),
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let is_socket = std::fs::metadata(&args.device).is_ok_and(|m| m.file_type().is_socket());
    let guest_ops = args.guest_ops.then(|| {
        Arc::new(Mutex::new(SystemGuestOps::new(Accounts::new(
            &args.passwd,
            &args.shadow,
        ))))
    });
    loop {
        let outcome = if is_socket {
            UnixStream::connect(&args.device)
                .and_then(|s| Ok((s.try_clone()?, s)))
                .map(|(r, w)| serve(Box::new(r), Box::new(w), options(&args, &guest_ops)))
        } else {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&args.device)
                .and_then(|f| Ok((f.try_clone()?, f)))
                .map(|(r, w)| serve(Box::new(r), Box::new(w), options(&args, &guest_ops)))
        };
        match outcome {
            Ok(Ok(())) if is_socket => return ExitCode::SUCCESS,
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("vireo-tools: {error}"),
            Err(error) => eprintln!(
                "vireo-tools: cannot open {}: {error}",
                args.device.display()
            ),
        }
        if is_socket {
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
