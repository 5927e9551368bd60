//! `vireo-vmm`: boots one guest on /dev/kvm and runs it until it is gone. The exit status says
//! how it ended: 0 powered off, 3 reset, 4 crashed, 5 killed, 1 could not start.
//!
//! Start-up order matters: the jail's mount namespace before any thread exists, the system-call
//! filter before any thread exists (every thread inherits it), the files opened as the starting
//! user inside the jail's view, and the drop to the jail's user before the guest runs.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::sys::stat::{umask, Mode};
use nix::unistd::getuid;
use vireo_vmm::arch::kvm_pvm;
use vireo_vmm::control::{self, ControlError, ControlListener};
use vireo_vmm::handed::{self, HandedError};
use vireo_vmm::jail::{self, JailError};
use vireo_vmm::persist::restore::{restore_vm, RestoreError, RestoreOptions};
use vireo_vmm::seccomp::{self, SeccompError};
use vireo_vmm::standby::{self, Premade, StandbyError};
use vireo_vmm::{build_vm, BuildError, Machine, VmConfig, VmExit};
use vireo_vmm_protocol::exit::{ExitRecord, EXIT_START_FAILED};
use vireo_vmm_protocol::VmmArgs;

/// Why the VMM could not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Jail(#[from] JailError),
    #[error(transparent)]
    Handed(#[from] HandedError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Standby(#[from] StandbyError),
    #[error("cannot watch for termination signals: {0}")]
    Signals(std::io::Error),
}

/// The signals that end the VMM (as "killed"): blocked everywhere, taken by one thread.
fn termination_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(signal);
    }
    set
}

fn main() -> ExitCode {
    let args = VmmArgs::parse();
    let (machine, control) = match start(args) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("vireo-vmm: {e}");
            return ExitCode::from(EXIT_START_FAILED);
        }
    };
    let boot_marker = machine.run_state();
    let exit = machine.run(control);
    let code = exit.exit_code();
    let record = ExitRecord {
        exit,
        boot_marker_ms: boot_marker.boot_marker().map(|d| d.as_secs_f64() * 1e3),
    };
    // Not eprintln!, which panics when the log's file system is full.
    let _ = writeln!(std::io::stderr(), "{}", record.to_line());
    ExitCode::from(code)
}

/// Jails, filters and builds the VM; returns it with its control socket, ready to run.
fn start(args: VmmArgs) -> Result<(Machine, Option<ControlListener>), StartError> {
    // The files vireod handed over, before anything else takes descriptor numbers.
    handed::adopt(&args.files)?;
    // Control clients must run as whoever started the VMM (vireod).
    let owner = getuid();
    // Looked up while /sys is in view: the jail hides it, and a Linux guest on kvm-pvm needs
    // the VMM to know (docs/kvm-pvm.md).
    kvm_pvm::detected();
    if args.jail_uid.is_some() {
        // The TAP device too (a restored VM's NICs are not on the command line).
        let tun = Path::new("/dev/net/tun");
        let mut devices = vec![Path::new("/dev/kvm")];
        if tun.exists() {
            devices.push(tun);
        }
        jail::enter_view(&args.jail_dirs, &devices)?;
    }
    // After the jail's mount points (searchable by its user): what the VMM creates is its own.
    umask(Mode::from_bits_truncate(0o077));
    let signals = termination_signals();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
        .map_err(|e| StartError::Signals(e.into()))?;
    seccomp::filter_process()?;
    // A standby makes its VM now, then takes the restore's arguments and files when they come.
    let (args, premade) = match args.standby {
        Some(channel) => {
            let premade = Premade::make(args.memory_mib, args.framebuffer)?;
            let restore = standby::wait_for_restore(channel)?;
            handed::adopt(&restore.files)?;
            (restore, Some(premade))
        }
        None => (args, None),
    };
    let machine = build(&args, premade)?;
    let control = args
        .control
        .as_deref()
        .map(|path| control::listen(path, owner))
        .transpose()?;
    if let (Some(uid), Some(gid)) = (args.jail_uid, args.jail_gid) {
        jail::drop_privileges(uid, gid)?;
    }
    let run_state = machine.run_state();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(signal) = signals.wait() {
                run_state.request_exit(VmExit::Killed {
                    signal: signal as i32,
                });
            }
        })
        .map_err(StartError::Signals)?;
    Ok((machine, control))
}

/// Boots the kernel, or restores the saved VM (into the VM `premade` ahead, if any), that
/// `args` name.
fn build(args: &VmmArgs, premade: Option<Premade>) -> Result<Machine, StartError> {
    let serial_stdio = args.serial_stdio || args.serial_log.is_none();
    match &args.restore {
        Some(dir) => {
            let options = RestoreOptions {
                serial_log: args.serial_log.clone(),
                serial_log_rotation: args.serial_log_rotation(),
                serial_stdio,
                control_socket: args.control.clone(),
                tools_socket: args.tools_socket.clone(),
                framebuffer_file: args.framebuffer_file.clone(),
                disks: args.disks.clone(),
            };
            Ok(restore_vm(dir, &options, premade)?)
        }
        None => Ok(build_vm(&VmConfig {
            serial_stdio,
            kernel: args.kernel.clone().unwrap_or_default(),
            initrd: args.initrd.clone(),
            cmdline: args.cmdline.clone(),
            vcpus: args.vcpus,
            cores_per_socket: args.cores_per_socket,
            memory_mib: args.memory_mib,
            serial_log: args.serial_log.clone(),
            serial_log_rotation: args.serial_log_rotation(),
            control_socket: args.control.clone(),
            disks: args.disks.clone(),
            nets: args.nets.clone(),
            framebuffer: args.framebuffer,
            framebuffer_file: args.framebuffer_file.clone(),
            tools_socket: args.tools_socket.clone(),
        })?),
    }
}
