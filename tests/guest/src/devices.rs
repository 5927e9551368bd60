//! The virtio devices of the command line (`virtio_mmio.device=` words, in order), started
//! for the shell: block devices become blk0, blk1, ... Devices that fail to start are
//! reported on the console and left alone.

use crate::blk::commands::Disks;
use crate::blk::Disk;
use crate::io::Io;
use crate::virtio::mmio::Transport;
use crate::virtio::{self, DEVICE_BLOCK};
use crate::{say, Machine};

/// The started devices the shell commands use.
pub struct Devices {
    /// Block devices.
    pub disks: Disks,
}

impl Devices {
    /// Probes and starts every device of `cmdline` (needs the MADT to route interrupts).
    pub fn start(io: &mut Io, cmdline: &str, machine: &Machine) -> Devices {
        let mut devices = Devices {
            disks: Disks::new(),
        };
        let Some(madt) = machine.madt.as_ref() else {
            if virtio::slots(cmdline).next().is_some() {
                say!(
                    io,
                    "virtio devices ignored: no MADT to route their interrupts"
                );
            }
            return devices;
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
            match transport.device_type() {
                DEVICE_BLOCK => {
                    let index = devices.disks.len();
                    match Disk::start(io, transport, madt, apic_id) {
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
                0 => {}
                other => say!(
                    io,
                    "virtio device type {other} at {base:#x} gsi {gsi}: no driver"
                ),
            }
        }
        io.flush();
        devices
    }
}
