//! `vireo-vmm`: boots one guest on /dev/kvm and runs it until it is gone. The exit status says
//! how it ended: 0 powered off, 3 reset, 4 crashed, 5 killed, 1 could not start.

use std::process::ExitCode;

use clap::Parser;
use vireo_vmm::persist::restore::{restore_vm, RestoreOptions};
use vireo_vmm::{build_vm, VmConfig, VmExit};
use vireo_vmm_protocol::exit::{ExitRecord, EXIT_START_FAILED};
use vireo_vmm_protocol::VmmArgs;

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
    let args = VmmArgs::parse();
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
                disks: args.disks.clone(),
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
            return ExitCode::from(EXIT_START_FAILED);
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
        return ExitCode::from(EXIT_START_FAILED);
    }
    let boot_marker = machine.run_state();
    let exit = machine.run();
    let code = exit.exit_code();
    let record = ExitRecord {
        exit,
        boot_marker_ms: boot_marker.boot_marker().map(|d| d.as_secs_f64() * 1e3),
    };
    eprintln!("{}", record.to_line());
    ExitCode::from(code)
}
