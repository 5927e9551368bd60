//! The virtio devices of the command line (`virtio_mmio.device=` words, in order), started
//! for the shell: block devices become blk0, blk1, ... Devices that fail to start are
//! reported on the console and left alone. `vireo.tools=on` runs the tools protocol on the
//! tools channel.

use crate::acpi::madt::Madt;
use crate::apic::{IrqRoute, Polarity, Trigger};
use crate::blk::commands::Disks;
use crate::blk::Disk;
use crate::cmdline;
use crate::io::Io;
use crate::net::card::NetCard;
use crate::net::stack::Address;
use crate::net::Net;
use crate::tools::agent::Nic;
use crate::tools::{Activity, ToolsChannel};
use crate::virtio::mmio::Transport;
use crate::virtio::{self, DEVICE_BLOCK, DEVICE_CONSOLE, DEVICE_NET};
use crate::{say, Machine};

/// The started devices the shell commands use.
pub struct Devices {
    /// Block devices.
    pub disks: Disks,
    /// The tools channel (the first console device).
    pub tools: Option<ToolsChannel>,
    /// The first network card, with the address of `vireo.ip=`.
    pub net: Option<Net>,
}

impl Devices {
    /// Probes and starts every device of `cmdline` (needs the MADT to route interrupts).
    pub fn start(io: &mut Io, cmdline: &str, machine: &Machine) -> Devices {
        let mut devices = Devices {
            disks: Disks::new(),
            tools: None,
            net: None,
        };
        let apic_id = machine.bsp_apic_id;
        for slot in virtio::slots(cmdline) {
            let transport = match Transport::probe(io, slot) {
                Ok(transport) => transport,
                Err(error) => {
                    say!(io, "{error}");
                    continue;
                }
            };
            let (base, gsi) = (transport.base(), transport.gsi());
            let Some(route) = interrupt_route(machine.madt.as_ref(), gsi) else {
                say!(io, "virtio device at {base:#x}: no IOAPIC serves GSI {gsi}");
                continue;
            };
            let route = &route;
            match transport.device_type() {
                DEVICE_BLOCK => {
                    let index = devices.disks.len();
                    match Disk::start(io, transport, route, apic_id) {
                        Ok(disk) => {
                            if devices.disks.add(disk) {
                                say!(io, "blk{index}: virtio-blk at {base:#x} gsi {gsi}");
                            } else {
                                say!(io, "virtio-blk at {base:#x}: too many disks");
                            }
                        }
                        Err(error) => say!(io, "virtio-blk at {base:#x}: {error}"),
                    }
                }
                DEVICE_CONSOLE if devices.tools.is_none() => {
                    match ToolsChannel::start(io, transport, route, apic_id) {
                        Ok(channel) => {
                            devices.tools = Some(channel);
                            say!(io, "tools: virtio-console at {base:#x} gsi {gsi}");
                        }
                        Err(error) => say!(io, "virtio-console at {base:#x}: {error}"),
                    }
                }
                DEVICE_NET if devices.net.is_none() => {
                    let address = cmdline::value(cmdline, "vireo.ip").and_then(Address::parse);
                    match NetCard::start(io, transport, route, apic_id) {
                        Ok(card) => {
                            devices.net = Some(Net::new(card, address));
                            say!(io, "net: virtio-net at {base:#x} gsi {gsi}");
                        }
                        Err(error) => say!(io, "virtio-net at {base:#x}: {error}"),
                    }
                }
                0 => {}
                other => say!(
                    io,
                    "virtio device type {other} at {base:#x} gsi {gsi}: no driver"
                ),
            }
        }
        if let (Some(net), Some("dhcp")) =
            (devices.net.as_mut(), cmdline::value(cmdline, "vireo.ip"))
        {
            net.lease(io);
        }
        if cmdline::value(cmdline, "vireo.tools") == Some("on") {
            crate::tools::guest_ops::configure(
                cmdline::value(cmdline, "vireo.guest-user"),
                cmdline::value(cmdline, "vireo.guest-password"),
                crate::rtc::unix_seconds(io),
            );
            let standby = cmdline::value(cmdline, "vireo.standby") == Some("ok");
            devices.start_tools_protocol(io, standby);
        }
        io.flush();
        devices
    }

    fn start_tools_protocol(&mut self, io: &mut Io, standby: bool) {
        let nic = self.net.as_ref().map(|net| Nic {
            mac: net.mac(),
            address: net.address(),
        });
        match self.tools.as_mut() {
            Some(tools) => tools.start_protocol(io, &mut self.disks, nic, standby),
            None => say!(io, "tools: no tools channel for vireo.tools=on"),
        }
    }

    /// Serves what the devices need while the shell is idle (tools protocol or echo, network
    /// replies). A power request from the tools host ends the service at once.
    pub fn service(&mut self, io: &mut Io) -> Activity {
        let tools = match self.tools.as_mut() {
            Some(tools) => tools.service(io, &mut self.disks),
            None => Activity::Idle,
        };
        if let Activity::Power(_) = tools {
            return tools;
        }
        let net = self.net.as_mut().is_some_and(|net| net.service(io));
        let disks = self.disks.service(io);
        match tools {
            Activity::Idle if !net && !disks => Activity::Idle,
            _ => Activity::Worked,
        }
    }

    /// Before the shell sleeps: acknowledges device interrupts (queued) and asks for the next
    /// ones. False if work arrived meanwhile (do not sleep).
    pub fn prepare_sleep(&mut self, io: &mut Io) -> bool {
        let tools = self
            .tools
            .as_mut()
            .is_none_or(|tools| tools.prepare_sleep(io));
        let net = self.net.as_mut().is_none_or(|net| net.prepare_sleep(io));
        tools && net
    }
}

/// Where a device GSI arrives: edge-triggered, active high, on the MADT's IOAPIC for it (or
/// the conventional IOAPIC when there is no MADT).
fn interrupt_route(madt: Option<&Madt>, gsi: u32) -> Option<IrqRoute> {
    match madt {
        Some(madt) => IrqRoute::for_gsi(madt, gsi, Trigger::Edge, Polarity::High).ok(),
        None => IrqRoute::on_default_ioapic(gsi, Trigger::Edge, Polarity::High),
    }
}
