//! `vireo-tools [--device PATH] [--heartbeat-ms N] [--shutdown-command CMD] [--reboot-command CMD]
//! [--standby-command CMD] [--passwd FILE] [--shadow FILE] [--no-guest-ops]
//! [--installer-medium PATH]... [--work-dir DIR] [--no-upgrades]`: the guest tools daemon. PATH
//! is the tools console (default /dev/hvc0) or, for tests, a Unix socket to connect to. Guest
//! operations check credentials against FILEs (default /etc/passwd, /etc/shadow). Tools
//! upgrades come from the installer CD (looked for on the `--installer-medium`s, default every
//! /dev/vd* disk and /dev/sr* drive), are unpacked in DIR (default /tmp) and replace this
//! binary, which then re-executes itself with the same arguments. Reopens a device whose host
//! end went away; exits when a socket closes.

use std::ffi::OsString;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vireo_tools::actions::SystemActions;
use vireo_tools::daemon::{serve, DaemonOptions, Ended};
use vireo_tools::facts::read_guest_info;
use vireo_tools::guest_ops::auth::Accounts;
use vireo_tools::guest_ops::{GuestOperations, SystemGuestOps};
use vireo_tools::protocol::HEARTBEAT_INTERVAL_MS;
use vireo_tools::upgrade::Installer;

struct Args {
    device: PathBuf,
    heartbeat: Duration,
    shutdown: String,
    reboot: String,
    standby: String,
    passwd: PathBuf,
    shadow: PathBuf,
    guest_ops: bool,
    installer: Option<Installer>,
}

const USAGE: &str = "usage: vireo-tools [--device PATH] [--heartbeat-ms N] [--shutdown-command CMD] [--reboot-command CMD] [--standby-command CMD] [--passwd FILE] [--shadow FILE] [--no-guest-ops] [--installer-medium PATH]... [--work-dir DIR] [--no-upgrades]";

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
        installer: Some(Installer {
            media: Vec::new(),
            work_dir: PathBuf::from("/tmp"),
            target: std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?,
        }),
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
            "--installer-medium" => {
                let medium = value()?.into();
                if let Some(installer) = args.installer.as_mut() {
                    installer.media.push(medium);
                }
            }
            "--work-dir" => {
                let dir = value()?.into();
                if let Some(installer) = args.installer.as_mut() {
                    installer.work_dir = dir;
                }
            }
            "--no-upgrades" => args.installer = None,
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
        actions: Box::new(
            SystemActions::new(&args.shutdown, &args.reboot, &args.standby)
                .with_installer(args.installer.clone()),
        ),
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
            Ok(Ok(Ended::Upgraded)) => return restart(&args),
            Ok(Ok(Ended::Closed)) if is_socket => return ExitCode::SUCCESS,
            Ok(Ok(Ended::Closed)) => {}
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

/// Runs the newly installed binary in place of this process, with the same arguments.
fn restart(args: &Args) -> ExitCode {
    let Some(installer) = &args.installer else {
        return ExitCode::FAILURE;
    };
    let given: Vec<OsString> = std::env::args_os().skip(1).collect();
    let error = std::process::Command::new(&installer.target)
        .args(given)
        .exec();
    eprintln!(
        "vireo-tools: cannot start the upgraded {}: {error}",
        installer.target.display()
    );
    ExitCode::FAILURE
}
