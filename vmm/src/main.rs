//! `vireo-vmm`: boots one guest on /dev/kvm and runs it until it is gone. The exit status says
//! how it ended: 0 powered off, 3 reset, 4 crashed, 5 killed, 1 could not start.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vireo_vmm::config::{DiskConfig, NetConfig};
use vireo_vmm::persist::restore::{restore_vm, RestoreOptions};
use vireo_vmm::{build_vm, VmConfig, VmExit};

/// Boot a guest kernel on KVM.
#[derive(Parser, Debug)]
#[command(name = "vireo-vmm", version, about)]
struct Args {
    /// Kernel: a PVH ELF (the test guest, Linux vmlinux) or a Linux bzImage.
    #[arg(long, required_unless_present = "restore")]
    kernel: Option<PathBuf>,
    /// Resume the VM saved in this directory (vm.state + vm.mem) instead of booting a kernel;
    /// only the serial, control and tools options apply, and --disk path=... replaces the
    /// saved disk images in order (same sizes).
    #[arg(long, conflicts_with_all = ["kernel", "initrd", "nets"])]
    restore: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long = "memory-mib", default_value_t = 128)]
    memory_mib: u64,
    /// Append the serial console to this file (and not to stdout, unless --serial-stdio).
    #[arg(long = "serial-log")]
    serial_log: Option<PathBuf>,
    /// Also put the serial console on stdout/stdin when --serial-log is given.
    #[arg(long = "serial-stdio")]
    serial_stdio: bool,
    /// Serve the JSON-lines control protocol on this Unix socket.
    #[arg(long)]
    control: Option<PathBuf>,
    /// A virtio-blk disk: path=FILE[,readonly=on|off][,serial=TEXT] (repeatable; raw or qcow2).
    #[arg(long = "disk")]
    disks: Vec<DiskConfig>,
    /// A virtio-net card on an existing TAP: tap=NAME[,mac=52:54:00:XX:XX:XX] (repeatable).
    #[arg(long = "net")]
    nets: Vec<NetConfig>,
    /// Unix socket for the host end of the tools channel (virtio-console).
    #[arg(long = "tools-socket")]
    tools_socket: Option<PathBuf>,
    /// Framebuffer size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1024x768", value_parser = parse_size)]
    framebuffer: (u32, u32),
    /// Back the framebuffer with a shared mapping of this file (created or replaced), so that a
    /// console server can map it read-only and see the screen live.
    #[arg(long = "framebuffer-file")]
    framebuffer_file: Option<PathBuf>,
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text.split_once('x').ok_or("expected WIDTHxHEIGHT")?;
    Ok((
        w.parse().map_err(|_| "bad width")?,
        h.parse().map_err(|_| "bad height")?,
    ))
}

fn block_termination_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set; the mask is then applied to this thread and
    // inherited by every thread spawned after it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let serial_stdio = args.serial_stdio || args.serial_log.is_none();
    let signals = block_termination_signals();
    let built = match &args.restore {
        Some(dir) => {
            let options = RestoreOptions {
                serial_log: args.serial_log.clone(),
                serial_stdio,
                control_socket: args.control.clone(),
                tools_socket: args.tools_socket.clone(),
                framebuffer_file: args.framebuffer_file.clone(),
                disk_paths: args.disks.iter().map(|d| d.path.clone()).collect(),
            };
            restore_vm(dir, &options)
        }
        None => build_vm(&VmConfig {
            serial_stdio,
            kernel: args.kernel.unwrap_or_default(),
            initrd: args.initrd,
            cmdline: args.cmdline,
            vcpus: args.vcpus,
            memory_mib: args.memory_mib,
            serial_log: args.serial_log,
            control_socket: args.control,
            disks: args.disks,
            nets: args.nets,
            framebuffer: args.framebuffer,
            framebuffer_file: args.framebuffer_file,
            tools_socket: args.tools_socket,
        }),
    };
    let machine = match built {
        Ok(machine) => machine,
        Err(e) => {
            eprintln!("vireo-vmm: {e}");
            return ExitCode::from(1);
        }
    };
    let run_state = machine.run_state();
    let waiter = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signal = 0;
            // SAFETY: waits on the set blocked above.
            if unsafe { libc::sigwait(&signals, &mut signal) } == 0 {
                run_state.request_exit(VmExit::Killed { signal });
            }
        });
    if let Err(e) = waiter {
        eprintln!("vireo-vmm: cannot watch for termination signals: {e}");
        return ExitCode::from(1);
    }
    let boot_marker = machine.run_state();
    let exit = machine.run();
    let mut record = serde_json::to_value(&exit).unwrap_or_default();
    record["boot_marker_ms"] = boot_marker
        .boot_marker()
        .map(|d| d.as_secs_f64() * 1e3)
        .into();
    eprintln!("vireo-vmm: exit {record}");
    ExitCode::from(exit.exit_code() as u8)
}
