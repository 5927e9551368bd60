//! Power operations on a VM and the watch over its VMM: power on (boot, or resume from
//! `suspend/`), power off, reset, suspend, terminate; a VMM that exits 3 (reset) is started
//! again; one that ends unasked leaves the VM powered off with an event saying why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vireo_api::{DataObject, Fault};
use vireo_disk::open::ImageFormat;
use vireo_vmm_protocol::control::Request;
use vireo_vmm_protocol::{DiskConfig, DiskFormat, NetConfig, VmmArgs};

use super::handoff::{Handoff, HandoffError};
use super::jail::{self, VmmJail};
use super::journal::{Intent, Journal};
use super::logs;
use super::paced_delete::{self, AfterExit, Maps};
use super::process::{VmmExit, VmmProcess};
use super::snapshots::live::SAVED_FILES;
use super::spec::{VmSpec, BOOT_CMDLINE, BOOT_INITRD, BOOT_KERNEL};
use super::standby::Standby;
use super::{
    cdroms, cgroup, control, disks, network, question, recovery, snapshots, tools_host, Power,
    Stopping, Vm, VmState,
};
use crate::events::post_event;
use crate::faults;
use crate::host::Host;
use crate::inventory::now_micros;

/// How long a new VMM may take to answer on its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a starting VMM's control socket is tried.
const START_POLL: Duration = Duration::from_millis(1);
/// How long a VMM may take to end after power-off before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Prepares a just-registered VM: disk sizes, a running VMM to re-adopt or a suspended state.
pub fn bring_up(host: &Arc<Host>, vm: &Arc<Vm>) {
    remove_discarded(vm);
    let mut state = vm.edit(host);
    disks::pin_formats(host, vm, &mut state.spec);
    snapshots::load(host, vm, &mut state);
    let log = vm.file(logs::VMM_LOG);
    let mut adopted = VmmProcess::adopt(&vm.run_dir, &log);
    let recovered = recovery::recover(host, vm, &mut state, &mut adopted);
    state.disk_capacities = disks::capacities(host, vm, &state.spec);
    if let Some(process) = adopted {
        tracing::info!(vm = vm.id, pid = process.pid, "re-adopted a running VMM");
        match network::Network::of(&host.config.data_dir) {
            Ok(net) => {
                state.taps = (0..state.spec.nics.len())
                    .map(|i| net.tap_name(vm.id, i))
                    .collect()
            }
            Err(error) => tracing::warn!(vm = vm.id, "{error}"),
        }
        state.boot_time = std::fs::metadata(vm.run_dir.join("vmm.pid"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_micros() as i64);
        started(host, vm, &mut state, process);
    } else if vm.suspend_dir().join("vm.state").exists() {
        state.power = Power::Suspended;
        state.standby = standby_for(host, vm, state.spec.memory_mb);
    }
    drop(state);
    if !recovered.is_empty() {
        let state = vm.state();
        let message = format!(
            "{}: recovered from an interrupted task after vireod restarted: {}",
            state.spec.name,
            recovered.message()
        );
        post_vm_event(host, vm, &state, "VmMessageWarningEvent", message, "");
    }
}

/// Posts a VM event of type `ty` with a message.
pub fn post_vm_event(host: &Host, vm: &Vm, state: &VmState, ty: &str, message: String, user: &str) {
    let schema = host.schema;
    let mut event = DataObject::of(schema, ty);
    if ty == "VmMessageErrorEvent" {
        event.set(schema, "message", message.as_str());
    }
    post_vm_event_object(host, vm, state, event, message, user);
}

/// Posts `event` (a VmEvent with its own fields set) about the VM, with a message.
pub fn post_vm_event_object(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    event: DataObject,
    message: String,
    user: &str,
) {
    let schema = host.schema;
    let event = event.with(schema, "template", state.spec.template).with(
        schema,
        "fullFormattedMessage",
        message.as_str(),
    );
    post_event(host, event, Some(&vm.moref), user);
}

/// PowerOnVM: boots the VM, or resumes it when suspended.
pub fn power_on(host: &Arc<Host>, vm: &Arc<Vm>, user: &str) -> Result<(), Fault> {
    let schema = host.schema;
    let state = vm.edit(host);
    if state.spec.template {
        return Err(Fault::not_supported(
            schema,
            "A template cannot be powered on; mark it as a virtual machine first.",
        ));
    }
    if state.power == Power::On {
        return Err(faults::invalid_power_state(
            host.schema,
            Some(Power::On),
            Power::On,
        ));
    }
    check_memory(host, state.spec.memory_mb)?;
    drop(state);
    // May wait for the answer to "moved or copied?", with the state unlocked.
    question::confirm_identity(host, vm)?;
    let mut state = vm.edit(host);
    let resuming = state.power == Power::Suspended;
    let suspend_dir = vm.suspend_dir();
    let standby = state.standby.take();
    let process = launch(
        host,
        vm,
        &mut state,
        resuming.then_some(&*suspend_dir),
        standby,
    )?;
    if resuming {
        // Set aside, so that the VM can be suspended again while this VMM maps the file.
        if let Some(aside) = paced_delete::set_aside_or_remove(&suspend_dir) {
            process.after_exit.delete_later(aside);
        }
        state.suspend_time = None;
    }
    state.boot_time = Some(now_micros());
    started(host, vm, &mut state, process);
    let name = state.spec.name.clone();
    let (ty, what) = if resuming {
        ("VmResumingEvent", "resumed")
    } else {
        ("VmPoweredOnEvent", "powered on")
    };
    post_vm_event(
        host,
        vm,
        &state,
        ty,
        format!("{name} on {} is {what}", "ha-host"),
        user,
    );
    Ok(())
}

/// Deletes the saved states set aside and left (vireod stopped before their VMM did; a
/// re-adopted VMM may still map one, so they are only unlinked).
fn remove_discarded(vm: &Vm) {
    let Ok(entries) = std::fs::read_dir(&vm.dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if paced_delete::is_set_aside(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Starts the VM from a machine state saved in `dir` (a memory snapshot being reverted to),
/// through `standby` if it fits.
pub fn resume_from(
    host: &Arc<Host>,
    vm: &Arc<Vm>,
    state: &mut VmState,
    dir: &Path,
    standby: Option<Standby>,
    user: &str,
) -> Result<(), Fault> {
    check_memory(host, state.spec.memory_mb)?;
    let process = launch(host, vm, state, Some(dir), standby)?;
    state.boot_time = Some(now_micros());
    started(host, vm, state, process);
    let name = state.spec.name.clone();
    post_vm_event(
        host,
        vm,
        state,
        "VmResumingEvent",
        format!("{name} on ha-host is resumed from a snapshot"),
        user,
    );
    Ok(())
}

/// InsufficientMemoryResourcesFault when the host has less available memory than asked for.
fn check_memory(host: &Host, memory_mb: i64) -> Result<(), Fault> {
    let available_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
        })
        .map(|kib| kib / 1024);
    match available_mb {
        Some(available) if available < memory_mb => Err(faults::insufficient_memory(
            host.schema,
            available,
            memory_mb,
        )),
        _ => Ok(()),
    }
}

/// Records a started VMM, gives its cgroup the VM's limits and starts watching it and its tools
/// channel (the watch thread moves the VMM into the cgroup first); once it has exited, the
/// saved states handed to its `after_exit` are deleted (step by step: [`paced_delete`]).
fn started(host: &Arc<Host>, vm: &Arc<Vm>, state: &mut VmState, process: VmmProcess) {
    let process = Arc::new(process);
    state.power = Power::On;
    state.process = Some(process.clone());
    state.generation += 1;
    state.stopping = None;
    cgroup::enforce_running(vm, state);
    let generation = state.generation;
    let (watch_host, watch_vm) = (host.clone(), vm.clone());
    let _ = std::thread::Builder::new()
        .name(format!("vmm-vm{}", vm.id))
        .spawn(move || {
            if let Err(error) = cgroup::join(&watch_vm, process.pid) {
                tracing::warn!(
                    vm = watch_vm.id,
                    "cannot move the VMM into its cgroup: {error}"
                );
            }
            let exit = process.wait();
            ended(&watch_host, &watch_vm, &process, exit);
            process.after_exit.run();
        });
    tools_host::spawn(
        host.clone(),
        vm.clone(),
        vm.run_dir.join("tools.sock"),
        generation,
    );
    question::watch_stalls(host.clone(), vm.clone(), generation);
    vm.notify();
}

/// The `vireo-vmm` binary: `$VIREO_VMM`, else next to vireod.
pub(super) fn vmm_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("VIREO_VMM") {
        return path.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("vireo-vmm")))
        .unwrap_or_else(|| "vireo-vmm".into())
}

/// The command line of a fresh boot on these disk images.
fn boot_args(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    disk_paths: &[(PathBuf, ImageFormat)],
) -> Result<VmmArgs, Fault> {
    let schema = host.schema;
    let spec = &state.spec;
    let kernel = spec.extra(BOOT_KERNEL).ok_or_else(|| {
        faults::invalid_vm_config(
            schema,
            BOOT_KERNEL,
            format!(
                "{} has no boot source: set extraConfig {BOOT_KERNEL} to a datastore path",
                spec.name
            ),
        )
    })?;
    let initrd = spec
        .extra(BOOT_INITRD)
        .map(|initrd| disks::boot_file(host, vm, BOOT_INITRD, initrd))
        .transpose()?;
    let net = network::Network::of(&host.config.data_dir)
        .map_err(|e| Fault::system_error(schema, e.to_string()))?;
    let nets = spec
        .nics
        .iter()
        .enumerate()
        .map(|(n, nic)| {
            let link = if nic.start_connected { "up" } else { "down" };
            format!("tap={},mac={},link={link}", net.tap_name(vm.id, n), nic.mac)
                .parse::<NetConfig>()
                .map_err(|e| Fault::system_error(schema, e))
        })
        .collect::<Result<_, _>>()?;
    Ok(VmmArgs {
        kernel: Some(disks::boot_file(host, vm, BOOT_KERNEL, kernel)?),
        initrd,
        cmdline: spec.extra(BOOT_CMDLINE).unwrap_or_default().into(),
        vcpus: out_of_range(schema, spec.num_cpus.try_into(), "numCPUs", spec.num_cpus)?,
        memory_mib: out_of_range(
            schema,
            spec.memory_mb.try_into(),
            "memoryMB",
            spec.memory_mb,
        )?,
        cores_per_socket: sockets_of(spec),
        disks: disk_configs(disk_paths, true),
        nets,
        ..VmmArgs::default()
    })
}

/// The cores per socket the guest is shown (numCoresPerSocket): the VMM lays sockets out on
/// APIC id bits, so a count that is not a power of two is recorded but shown as one socket.
fn sockets_of(spec: &VmSpec) -> Option<u8> {
    u8::try_from(super::reconfig::config::cores_per_socket(spec))
        .ok()
        .filter(|cores| cores.is_power_of_two() && spec.num_cpus % i32::from(*cores) == 0)
}

/// `converted`, or InvalidVmConfig naming `property` when `value` does not fit the VMM's range.
fn out_of_range<T, E>(
    schema: &vireo_api::Schema,
    converted: Result<T, E>,
    property: &str,
    value: impl std::fmt::Display,
) -> Result<T, Fault> {
    converted.map_err(|_| {
        faults::invalid_vm_config(
            schema,
            property,
            format!("{property} {value} is out of range"),
        )
    })
}

/// The disks on these images, in order; `serial` gives each the serial number the guest reads.
fn disk_configs(layers: &[(PathBuf, ImageFormat)], serial: bool) -> Vec<DiskConfig> {
    layers
        .iter()
        .enumerate()
        .map(|(n, (path, format))| DiskConfig {
            path: path.clone(),
            format: Some(disks::vmm_format(*format)),
            read_only: false,
            serial: serial.then(|| format!("vireo-disk{n}")),
            no_medium: false,
            cache: Default::default(),
        })
        .collect()
}

/// What a jailed VMM sees: its run directory (sockets, framebuffer), nothing else. Every file
/// it needs on a datastore is handed to it open ([`hand_over`]), so no folder of a datastore
/// is shown, not even the VM's own.
pub(super) fn jail_dirs(vm: &Vm) -> Vec<PathBuf> {
    vec![vm.run_dir.clone()]
}

/// Opens every file on a datastore that `args` names — each disk's whole chain, media, the
/// kernel and initrd, the saved state it resumes from, the serial log and its older files —
/// for the VMM, and makes `args` name them by the host paths the VMM gets them at.
fn hand_over(host: &Host, args: &mut VmmArgs) -> Result<Handoff, Fault> {
    let datastores = &host.datastores();
    let refused = |path: &Path, e: HandoffError| {
        faults::file_fault(
            host.schema,
            &path.display().to_string(),
            format!("cannot open the file for the VM: {e}"),
        )
    };
    let mut handoff = Handoff::default();
    for disk in args.disks.iter_mut().filter(|d| !d.no_medium) {
        let format = match disk.format {
            Some(DiskFormat::Raw) => ImageFormat::Raw,
            Some(DiskFormat::Qcow2) => ImageFormat::Qcow2,
            None => vireo_disk::open::probe_format(&disk.path)
                .map_err(|e| refused(&disk.path, HandoffError::Chain(e)))?,
        };
        disk.path = handoff
            .add_chain(datastores, &disk.path, format, disk.read_only)
            .map_err(|e| refused(&disk.path, e))?;
    }
    for file in [&mut args.kernel, &mut args.initrd].into_iter().flatten() {
        *file = handoff
            .add_file(datastores, file)
            .map_err(|e| refused(file, e))?;
    }
    if let Some(dir) = &mut args.restore {
        let mut handed = Vec::new();
        for name in SAVED_FILES {
            let path = dir.join(name);
            handed.push(
                handoff
                    .add_file(datastores, &path)
                    .map_err(|e| refused(&path, e))?,
            );
        }
        // The folder as the VMM knows the handed files.
        if let Some(folder) = handed.first().and_then(|state| state.parent()) {
            *dir = folder.to_owned();
        }
    }
    let rotation = args.serial_log_rotation();
    if let Some(log) = &mut args.serial_log {
        *log = logs::hand_serial_log(&mut handoff, datastores, log, rotation)
            .map_err(|e| refused(log, e))?;
    }
    args.files = handoff.args();
    Ok(handoff)
}

/// Creates the TAPs, starts the VMM (booting, or restoring the machine state saved in
/// `restore`, on the disks' current writable layers — through `standby` if it fits) and
/// waits until it answers on its control socket.
fn launch(
    host: &Host,
    vm: &Vm,
    state: &mut VmState,
    restore: Option<&Path>,
    standby: Option<Standby>,
) -> Result<VmmProcess, Fault> {
    let schema = host.schema;
    let system_error = |e: String| Fault::system_error(schema, e);
    let began = Instant::now();
    // Only a resume from the VM's own suspended state runs on its nonpersistent disks'
    // overlays; a boot, or a snapshot's saved state, starts from the disks as they are.
    let fresh = restore != Some(vm.suspend_dir().as_path());
    disks::redo::prepare(host, vm, &state.spec, fresh)?;
    let disk_paths = disks::prepare_launch(host, vm, state)?;
    let mut args = match restore {
        Some(dir) => VmmArgs {
            restore: Some(dir.to_owned()),
            disks: disk_configs(&disk_paths, false),
            ..VmmArgs::default()
        },
        None => boot_args(host, vm, state, &disk_paths)?,
    };
    for (disk, spec) in args.disks.iter_mut().zip(&state.spec.disks) {
        disk.cache = spec.cache;
    }
    let (drives, media) = cdroms::vmm_drives(host, vm, &state.spec.cdroms, args.disks.len())?;
    args.disks.extend(drives);
    let rotation = logs::rotation(host, &state.spec);
    args.serial_log = Some(vm.file(logs::SERIAL_LOG));
    args.serial_log_rotate_size = rotation.size;
    args.serial_log_keep_old = rotation.keep;
    let handoff = hand_over(host, &mut args)?;
    jail::ensure_private_dir(&vm.run_dir).map_err(|e| system_error(e.to_string()))?;
    let control_socket = vm.run_dir.join("control.sock");
    let tools_socket = vm.run_dir.join("tools.sock");
    if control_socket.as_os_str().len() >= 108 {
        return Err(system_error(format!(
            "the data directory path is too long for a Unix socket: {}",
            control_socket.display()
        )));
    }
    args.control = Some(control_socket.clone());
    args.tools_socket = Some(tools_socket);
    args.framebuffer_file = Some(crate::console::framebuffer::file_of(vm));
    let files_ready = began.elapsed();
    let jail = VmmJail::of(&host.config, vm.id)
        .map_err(|e| system_error(format!("cannot reserve the VM's user: {e}")))?;
    if let Some(jail) = jail {
        let dirs = jail_dirs(vm);
        jail.confine(&mut args, dirs)
            .map_err(|e| system_error(format!("cannot prepare the VM's jail: {e}")))?;
    }
    let net =
        network::Network::of(&host.config.data_dir).map_err(|e| system_error(e.to_string()))?;
    let taps: Vec<String> = (0..state.spec.nics.len())
        .map(|i| net.tap_name(vm.id, i))
        .collect();
    let ports = {
        let switches = crate::locks::lock(&host.switches);
        state
            .spec
            .nics
            .iter()
            .map(|nic| {
                let security = switches.security_of(switches.portgroup(&nic.network)?);
                Ok((switches.attachment(&nic.network)?, security))
            })
            .collect::<Result<Vec<_>, network::switches::SwitchError>>()
            .map_err(|e| faults::invalid_vm_config(schema, "deviceChange", e.to_string()))?
    };
    for ((tap, (attachment, security)), nic) in taps.iter().zip(ports).zip(&state.spec.nics) {
        let made = net
            .create_tap(tap, attachment)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let port = network::security::Port {
                    mac: &nic.mac,
                    security,
                    vlan: attachment.vlan,
                };
                network::security::guard(net, tap, &port).map_err(|e| e.to_string())
            });
        if let Err(error) = made {
            delete_taps(&taps);
            return Err(system_error(error));
        }
    }
    let _ = std::fs::remove_file(&control_socket);
    let vmm_log = vm.file(logs::VMM_LOG);
    if let Err(error) = logs::rotate_when_full(&vmm_log, rotation) {
        tracing::warn!(vm = vm.id, "cannot rotate {}: {error}", vmm_log.display());
    }
    let jailed = began.elapsed();
    let standby = standby.filter(|s| restore.is_some() && s.fits(state.spec.memory_mb));
    let mut process = start_vmm(vm, &args, &handoff, standby, &vmm_log)
        .map_err(|e| system_error(format!("cannot start vireo-vmm: {e}")))?;
    if let Some(dir) = restore {
        let [_, memory_name] = SAVED_FILES;
        process.after_exit = AfterExit::new(Maps::file(&dir.join(memory_name)));
    }
    let spawned = began.elapsed();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if control::status(&control_socket, Duration::from_secs(5)).is_ok() {
            let answered = began.elapsed();
            tracing::info!(
                vm = vm.id,
                restore = restore.is_some(),
                "VMM answering {:.1} ms after its launch began: disks and media {:.1} ms, jail and TAPs {:.1} ms, spawn {:.1} ms, VMM start {:.1} ms",
                ms(answered),
                ms(files_ready),
                ms(jailed - files_ready),
                ms(spawned - jailed),
                ms(answered - spawned),
            );
            state.taps = taps;
            state.cdroms = media;
            plug_nics(state, &control_socket, restore.is_some());
            return Ok(process);
        }
        let exited = process.has_exited();
        if exited || Instant::now() > deadline {
            if !exited {
                process.killer().signal(nix::sys::signal::Signal::SIGKILL);
            }
            let why = match process.wait() {
                VmmExit::Failed(why) => why,
                // A guest quick enough to power off (or reboot) before the first status
                // request still ran: the watch thread reports how it ended.
                _ => {
                    state.taps = taps;
                    state.cdroms = media;
                    return Ok(process);
                }
            };
            delete_taps(&taps);
            return Err(faults::generic_vm_config_fault(schema, &why));
        }
        std::thread::sleep(START_POLL);
    }
}

/// A standby VMM for the next restore of `vm` (None, with a warning, when none can start:
/// the restore then starts its VMM itself).
pub(super) fn standby_for(host: &Host, vm: &Vm, memory_mb: i64) -> Option<Standby> {
    Standby::start(host, vm, memory_mb)
        .map_err(|error| tracing::warn!(vm = vm.id, "{error}"))
        .ok()
}

/// Starts, on a thread, a standby VMM that a running `vm` keeps for its next revert to a memory
/// snapshot (or its next suspend); it is dropped when the VM powers off. `state` is the VM's,
/// as the caller holds it: a VM that is off or keeps one already starts none.
pub(super) fn keep_standby_ready(host: &Arc<Host>, vm: &Arc<Vm>, state: &VmState) {
    let wanted = |state: &VmState| state.power == Power::On && state.standby.is_none();
    if !wanted(state) {
        return;
    }
    let (for_host, for_vm, memory_mb) = (host.clone(), vm.clone(), state.spec.memory_mb);
    let started = std::thread::Builder::new()
        .name("standby".into())
        .spawn(move || {
            let Some(standby) = standby_for(&for_host, &for_vm, memory_mb) else {
                return;
            };
            let mut state = for_vm.state();
            if wanted(&state) {
                state.standby = Some(standby);
            }
        });
    if let Err(error) = started {
        tracing::warn!(vm = vm.id, "cannot start a standby VMM: {error}");
    }
}

/// The VMM for `args`: `standby` handed them when there is one, else a new process.
fn start_vmm(
    vm: &Vm,
    args: &VmmArgs,
    handoff: &Handoff,
    standby: Option<Standby>,
    vmm_log: &Path,
) -> std::io::Result<VmmProcess> {
    if let Some(standby) = standby {
        match standby.restore(args, &handoff.fds(), &vm.run_dir) {
            Ok(process) => return Ok(process),
            Err(error) => tracing::warn!(vm = vm.id, "{error}; starting a new VMM"),
        }
    }
    let argv = args.to_argv();
    VmmProcess::spawn(&vmm_binary(), &argv, &handoff.fds(), &vm.run_dir, vmm_log)
}

/// `duration` in milliseconds, for the timing lines of the VM's log.
pub(super) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Records each NIC's link as it starts (startConnected); a VMM restored from a saved state
/// still has the links of its first boot, so it is told each one.
fn plug_nics(state: &mut VmState, control_socket: &Path, restored: bool) {
    state.nic_links = state.spec.nics.iter().map(|n| n.start_connected).collect();
    if !restored {
        return;
    }
    for (nic, &connected) in state.nic_links.iter().enumerate() {
        let request = vireo_vmm_protocol::Request::SetLink { nic, connected };
        if let Err(error) = control::command(control_socket, request, Duration::from_secs(5)) {
            tracing::warn!("cannot set the link of NIC {nic}: {error}");
        }
    }
}

fn delete_taps(taps: &[String]) {
    for tap in taps {
        if let Err(error) = network::delete_tap(tap) {
            tracing::warn!("{error}");
        }
    }
}

/// Called on the watch thread when a VMM ends.
fn ended(host: &Arc<Host>, vm: &Arc<Vm>, process: &Arc<VmmProcess>, exit: VmmExit) {
    let mut state = vm.edit(host);
    if !state
        .process
        .as_ref()
        .is_some_and(|p| Arc::ptr_eq(p, process))
    {
        // A VMM let go of early (see `power_off_released`): its cgroup goes with it, unless
        // the VM's next VMM runs in it by now.
        if state.process.is_none() {
            cgroup::remove(vm);
        }
        return;
    }
    forget_process(vm, &mut state);
    cgroup::remove(vm);
    let stopping = state.stopping.take();
    let name = state.spec.name.clone();
    tracing::info!(vm = vm.id, ?exit, ?stopping, "VMM ended");
    match (exit, stopping) {
        (_, Some(Stopping::Suspend)) if vm.suspend_dir().join("vm.state").exists() => {
            state.power = Power::Suspended;
            state.suspend_time = Some(now_micros());
            post_vm_event(
                host,
                vm,
                &state,
                "VmSuspendedEvent",
                format!("{name} is suspended"),
                "",
            );
            let memory_mb = state.spec.memory_mb;
            let kept = state.standby.take().filter(|s| s.fits(memory_mb));
            state.standby = kept.or_else(|| standby_for(host, vm, memory_mb));
        }
        (VmmExit::Reset { by_guest }, None) => {
            let (ty, what) = if by_guest {
                ("VmGuestRebootEvent", "restarted by its guest")
            } else {
                ("VmResettingEvent", "reset")
            };
            post_vm_event(host, vm, &state, ty, format!("{name} is {what}"), "");
            match launch(host, vm, &mut state, None, None) {
                Ok(process) => {
                    state.boot_time = Some(now_micros());
                    started(host, vm, &mut state, process);
                }
                Err(fault) => {
                    powered_off(
                        host,
                        vm,
                        &mut state,
                        Some(format!(
                            "{name} could not restart after a reset: {}",
                            fault.message
                        )),
                    );
                }
            }
        }
        (VmmExit::Failed(why), None) => {
            tracing::warn!(vm = vm.id, "VM process failed: {why}");
            powered_off(host, vm, &mut state, Some(format!("{name}: {why}")));
        }
        _ => powered_off(host, vm, &mut state, None),
    }
    if state.power != Power::On {
        state.boot_time = None;
    }
    drop(state);
    vm.notify();
}

/// Marks the VM powered off (what the guest wrote to nonpersistent disks gone) and records
/// it: an error event first when `error` says why.
fn powered_off(host: &Host, vm: &Vm, state: &mut VmState, error: Option<String>) {
    state.power = Power::Off;
    state.standby = None;
    disks::redo::discard(host, vm, &state.spec);
    if let Some(message) = error {
        post_vm_event(host, vm, state, "VmMessageErrorEvent", message, "");
    }
    let message = format!("{} is powered off", state.spec.name);
    post_vm_event(host, vm, state, "VmPoweredOffEvent", message, "");
}

/// Drops what the VM held of its running VMM: the process, its tools channel, links, media,
/// question, TAPs, pid file and framebuffer (a new generation starts).
fn forget_process(vm: &Vm, state: &mut VmState) {
    state.process = None;
    state.generation += 1;
    state.tools.disconnect();
    state.nic_links.clear();
    state.cdroms = cdroms::Drives::default();
    state.question = None;
    let taps = std::mem::take(&mut state.taps);
    delete_taps(&taps);
    let _ = std::fs::remove_file(vm.run_dir.join("vmm.pid"));
    let _ = std::fs::remove_file(crate::console::framebuffer::file_of(vm));
}

/// Asks the running VMM to end for `why`, then waits for it (killing it if it lingers).
fn stop(
    host: &Host,
    vm: &Vm,
    why: Stopping,
    ask: impl FnOnce(&VmState) -> Result<(), Fault>,
) -> Result<(), Fault> {
    let mut state = vm.state();
    if state.power != Power::On {
        let requested = match why {
            Stopping::PowerOff => Power::Off,
            Stopping::Suspend => Power::Suspended,
        };
        return Err(faults::invalid_power_state(
            host.schema,
            Some(requested),
            state.power,
        ));
    }
    let generation = state.generation;
    state.stopping = Some(why);
    if let Err(fault) = ask(&state) {
        state.stopping = None;
        return Err(fault);
    }
    let (state, done) = vm.wait_until(state, STOP_TIMEOUT, |s| s.generation != generation);
    if !done {
        if let Some(process) = &state.process {
            process.killer().signal(nix::sys::signal::Signal::SIGKILL);
        }
        let (_state, done) = vm.wait_until(state, STOP_TIMEOUT, |s| s.generation != generation);
        if !done {
            return Err(Fault::system_error(
                host.schema,
                "the VM's process does not end",
            ));
        }
    }
    Ok(())
}

/// Pauses the VM (unless `paused` already) and closes its disk images, so that they are
/// flushed and their change-tracking bitmaps stored before the VMM exits (it does not close
/// them on exit).
fn close_disks(socket: &Path, paused: bool) {
    let commands = if paused {
        vec![Request::DetachDisks]
    } else {
        vec![Request::Pause, Request::DetachDisks]
    };
    for command in commands {
        if let Err(error) = control::command(socket, command, Duration::from_secs(10)) {
            tracing::warn!("cannot close the disks before stopping: {error}");
            return;
        }
    }
}

/// PowerOffVM: hard power-off; a suspended VM is powered off by discarding its saved state
/// (as ESXi does).
pub fn power_off(host: &Host, vm: &Vm) -> Result<(), Fault> {
    if discard_suspended_state(host, vm) {
        return Ok(());
    }
    stop(host, vm, Stopping::PowerOff, |state| {
        let socket = vm.run_dir.join("control.sock");
        close_disks(&socket, false);
        if control::command(&socket, Request::PowerOff, Duration::from_secs(10)).is_err() {
            kill(state);
        }
        Ok(())
    })
}

/// PowerOffVM for a VM about to start again from saved state (a revert): returns as soon as
/// the VMM has let go of the VM's disks, TAPs and sockets, without waiting for it to free its
/// memory (hundreds of milliseconds for a large working set). Falls back to [`power_off`]
/// when the VMM does not answer so.
pub fn power_off_released(host: &Host, vm: &Vm) -> Result<(), Fault> {
    let mut state = vm.edit(host);
    let running = state.process.clone().filter(|_| state.power == Power::On);
    if let Some(process) = running {
        let socket = vm.run_dir.join("control.sock");
        close_disks(&socket, false);
        if control::command(&socket, Request::PowerOff, Duration::from_secs(10)).is_ok() {
            process.run_when_idle();
            forget_process(vm, &mut state);
            powered_off(host, vm, &mut state, None);
            state.boot_time = None;
            drop(state);
            vm.notify();
            return Ok(());
        }
    }
    drop(state);
    power_off(host, vm)
}

/// Powers off a suspended VM (its `suspend/` goes); false when it is not suspended.
fn discard_suspended_state(host: &Host, vm: &Vm) -> bool {
    let mut state = vm.edit(host);
    if state.power != Power::Suspended {
        return false;
    }
    if let Err(error) = std::fs::remove_dir_all(vm.suspend_dir()) {
        tracing::warn!(vm = vm.id, "cannot remove the suspended state: {error}");
    }
    state.standby = None;
    state.suspend_time = None;
    powered_off(host, vm, &mut state, None);
    true
}

/// TerminateVM: SIGKILL of the VM's process.
pub fn terminate(host: &Host, vm: &Vm) -> Result<(), Fault> {
    stop(host, vm, Stopping::PowerOff, |state| {
        kill(state);
        Ok(())
    })
}

fn kill(state: &VmState) {
    if let Some(process) = &state.process {
        process.killer().signal(nix::sys::signal::Signal::SIGKILL);
    }
}

/// SuspendVM: saves state and memory into `suspend/`, then the process ends (journaled:
/// `saved`, `vmm-stopping`).
pub fn suspend(host: &Host, vm: &Vm) -> Result<(), Fault> {
    let schema = host.schema;
    let mut journal = None;
    let stopped = stop(host, vm, Stopping::Suspend, |_| {
        let journal =
            journal.insert(Journal::begin(&vm.dir, Intent::Suspend).map_err(|e| e.fault(schema))?);
        let socket = vm.run_dir.join("control.sock");
        let dir = vm.suspend_dir();
        let _ = std::fs::remove_dir_all(&dir);
        let saved = snapshots::live::save(host, &socket, &dir, false)
            .and_then(|unsynced| unsynced.keep(host))
            .and_then(|()| journal.step("saved").map_err(|e| e.fault(schema)));
        if let Err(fault) = saved {
            let _ = control::command(&socket, Request::Resume, Duration::from_secs(10));
            let _ = std::fs::remove_dir_all(&dir);
            return Err(fault);
        }
        close_disks(&socket, true);
        control::command(&socket, Request::PowerOff, Duration::from_secs(10))
            .map_err(|e| Fault::system_error(schema, e.to_string()))?;
        journal.step("vmm-stopping").map_err(|e| e.fault(schema))
    });
    if let Some(journal) = journal {
        journal.finish();
    }
    stopped
}

/// ResetVM: hard reset; the VMM exits and vireod boots it again.
pub fn reset(host: &Host, vm: &Vm) -> Result<(), Fault> {
    let state = vm.state();
    if state.power != Power::On {
        return Err(faults::invalid_power_state(
            host.schema,
            Some(Power::On),
            state.power,
        ));
    }
    let generation = state.generation;
    let socket = vm.run_dir.join("control.sock");
    control::command(&socket, Request::Reset, Duration::from_secs(10))
        .map_err(|e| Fault::system_error(host.schema, e.to_string()))?;
    let (state, done) = vm.wait_until(state, START_TIMEOUT + STOP_TIMEOUT, |s| {
        s.generation >= generation + 2 || s.power != Power::On
    });
    if !done || state.power != Power::On {
        return Err(Fault::system_error(
            host.schema,
            "the VM did not come back after the reset",
        ));
    }
    Ok(())
}

/// Re-evaluates every VM's heartbeat colour once a second, publishing changes, forever.
pub fn watch_heartbeats(host: Arc<Host>) {
    let _ = std::thread::Builder::new()
        .name("heartbeats".into())
        .spawn(move || {
            let mut colors = std::collections::HashMap::new();
            loop {
                std::thread::sleep(Duration::from_secs(1));
                for vm in host.vms.all() {
                    let mut state = vm.edit(&host);
                    let expired = state.tools.expire();
                    let color = state.tools.heartbeat_color();
                    if colors.insert(vm.id, color) == Some(color) && !expired {
                        state.unpublished();
                    }
                }
            }
        });
}
