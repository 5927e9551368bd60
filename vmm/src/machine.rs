//! A built VM and its run: one thread per vCPU, the console input and control socket threads,
//! and the main thread waiting for the guest to end, then making sure every vCPU has left.

use std::io::{Read, Write};
use std::os::unix::thread::JoinHandleExt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vm_memory::GuestMemoryMmap;

use crate::arch::emulate::Counts;
use crate::config::VmConfig;
use crate::control;
use crate::device_manager::{register_io_events, MachineDevices, PendingIoEvent};
use crate::devices::bus::{lock, Buses};
use crate::devices::framebuffer::FramebufferInfo;
use crate::devices::legacy::pit::Pit;
use crate::devices::legacy::pm::PowerManagement;
use crate::devices::legacy::rtc::Cmos;
use crate::devices::legacy::serial::SerialPort;
use crate::devices::virtio::block::DiskSlot;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::NicLink;
use crate::handle::{ignore_kick, kick_signal, VcpuKicker, VmHandle, KICK_INTERVAL};
use crate::io_stall::IoStalls;
use crate::run_state::{RunState, VmExit};
use crate::vstate::vcpu::{Completion, Vcpu};
use crate::vstate::vm::Vm;

/// Longest the ending VMM waits for the control clients told of its release to be answered.
const ANSWER_RELEASE_WAIT: Duration = Duration::from_secs(1);

/// A VM ready to run.
pub struct Machine {
    // Field order is drop order: vCPUs and the VM go before the memory they map.
    vcpus: Vec<Vcpu>,
    vm: Vm,
    memory: GuestMemoryMmap,
    buses: Arc<Buses>,
    run_state: Arc<RunState>,
    serial: Arc<Mutex<SerialPort>>,
    pm: Arc<Mutex<PowerManagement>>,
    cmos: Arc<Mutex<Cmos>>,
    pit: Arc<Mutex<Pit>>,
    transports: Vec<Arc<Mutex<MmioTransport>>>,
    disk_slots: Vec<DiskSlot>,
    nic_links: Vec<NicLink>,
    stalls: Arc<IoStalls>,
    framebuffer: FramebufferInfo,
    /// Handed to KVM once the vCPUs run.
    io_events: Vec<PendingIoEvent>,
    config: VmConfig,
    /// Instructions completed for kvm-pvm, per kind.
    completed: Arc<Counts>,
}

impl Machine {
    pub(crate) fn new(
        memory: GuestMemoryMmap,
        vm: Vm,
        vcpus: Vec<Vcpu>,
        devices: MachineDevices,
        run_state: Arc<RunState>,
        config: VmConfig,
    ) -> Self {
        let MachineDevices {
            legacy,
            mmio,
            transports,
            disk_slots,
            nic_links,
            stalls,
            framebuffer,
            io_events,
        } = devices;
        Machine {
            vcpus,
            vm,
            memory,
            buses: Arc::new(Buses {
                pio: legacy.bus,
                mmio,
            }),
            run_state,
            serial: legacy.serial,
            pm: legacy.pm,
            cmos: legacy.cmos,
            pit: legacy.pit,
            transports,
            disk_slots,
            nic_links,
            stalls,
            framebuffer,
            io_events,
            config,
            completed: Arc::default(),
        }
    }

    /// The run state (for embedding callers and tests).
    pub fn run_state(&self) -> Arc<RunState> {
        self.run_state.clone()
    }

    /// Runs the VM until the guest is gone, serving `control` if given; returns how it ended.
    pub fn run(mut self, control: Option<control::ControlListener>) -> VmExit {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(kick_signal(), ignore_kick) {
            return VmExit::Crashed {
                detail: format!("cannot install the vCPU kick handler: {e}"),
            };
        }
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut self.vcpus)
            .into_iter()
            .enumerate()
            .map(|(i, vcpu)| {
                let buses = self.buses.clone();
                let run_state = self.run_state.clone();
                let completion = Completion {
                    memory: self.memory.clone(),
                    counts: self.completed.clone(),
                };
                std::thread::Builder::new()
                    .name(format!("vcpu{i}"))
                    .spawn(move || match crate::seccomp::filter_this_thread() {
                        Ok(()) => vcpu.run(&buses, &run_state, &completion),
                        Err(e) => run_state.request_exit(VmExit::Crashed {
                            detail: format!("vCPU {i}: {e}"),
                        }),
                    })
            })
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| {
                self.run_state.request_exit(VmExit::Crashed {
                    detail: format!("cannot start vCPU thread: {e}"),
                });
                Vec::new()
            });
        let kicker = Arc::new(VcpuKicker::new(
            handles.iter().map(|h| h.as_pthread_t()).collect(),
        ));
        register_io_events(self.vm.fd.clone(), std::mem::take(&mut self.io_events));
        self.stalls.arm(self.run_state.clone(), kicker.clone());

        if self.config.serial_stdio {
            self.forward_stdin();
        }
        let control_server = control.map(|listener| {
            let handle = VmHandle {
                run_state: self.run_state.clone(),
                pm: self.pm.clone(),
                serial: self.serial.clone(),
                cmos: self.cmos.clone(),
                pit: self.pit.clone(),
                kicker: kicker.clone(),
                buses: self.buses.clone(),
                transports: self.transports.clone(),
                disk_slots: self.disk_slots.clone(),
                nic_links: self.nic_links.clone(),
                stalls: self.stalls.clone(),
                memory: self.memory.clone(),
                framebuffer: self.framebuffer,
                vm_fd: self.vm.fd.clone(),
                config: Arc::new(Mutex::new(self.config.clone())),
                completed: self.completed.clone(),
                saving: Default::default(),
            };
            control::serve(listener, handle)
        });
        if let Some(Err(e)) = &control_server {
            self.run_state.request_exit(VmExit::Crashed {
                detail: e.to_string(),
            });
        }

        let exit = self.run_state.wait_for_exit();
        // Every vCPU must leave KVM_RUN: some may be halted or waiting for a SIPI in the kernel.
        // Each kick is followed by a wait that ends as soon as the last vCPU has left its loop
        // (or its thread has ended some other way, such as a panic).
        while handles.iter().any(|h| !h.is_finished()) {
            kicker.kick();
            if self.run_state.wait_vcpus_left(handles.len(), KICK_INTERVAL) {
                break;
            }
        }
        for handle in handles {
            let _ = handle.join();
        }
        self.close_disks();
        if let Some(path) = &self.config.control_socket {
            let _ = std::fs::remove_file(path);
        }
        for transport in &self.transports {
            lock(transport).release();
        }
        self.run_state.mark_released(ANSWER_RELEASE_WAIT);
        exit
    }

    /// Stops the device workers and closes every disk image cleanly (qcow2: metadata and
    /// change-tracking bitmaps written back, in-use flags cleared), whatever ended the VM.
    fn close_disks(&self) {
        for transport in &self.transports {
            lock(transport).quiesce();
        }
        for (index, slot) in self.disk_slots.iter().enumerate() {
            if let Some(image) = lock(&slot.image).take() {
                if let Err(e) = image.flush() {
                    // Not eprintln!, which panics when the log's file system is full.
                    let line = format!("vireo-vmm: disk {index}: flush at exit failed: {e}");
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
            }
        }
    }

    /// Feeds stdin to COM1, waiting while the guest's receive FIFO is full.
    fn forward_stdin(&self) {
        let serial = self.serial.clone();
        let run_state = self.run_state.clone();
        let spawned = std::thread::Builder::new()
            .name("console-in".into())
            .spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut buf = [0u8; 256];
                while let Ok(n @ 1..) = stdin.read(&mut buf) {
                    let mut pending = &buf[..n];
                    while !pending.is_empty() {
                        let taken = lock(&serial).enqueue_input(pending);
                        pending = &pending[taken..];
                        if taken == 0 {
                            run_state.wait_change(KICK_INTERVAL);
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("vireo-vmm: console input disabled: {e}");
        }
    }
}
