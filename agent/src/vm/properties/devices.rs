//! config.hardware.device: the PCI, IDE and SCSI controllers, the video card, each virtual disk
//! (with its backing chain and changeId), each network adapter and each CD-ROM drive, under
//! ESXi's device keys.

use std::path::PathBuf;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, MoRef, Value};

use super::layout::layer_name;
use super::{datastore, enum_value};
use crate::host::Host;
use crate::inventory::esxi::DatastoreDir;
use crate::vm::cdroms::{self, CDROM_KEY, IDE_KEY};
use crate::vm::datastore_path::DatastorePath;
use crate::vm::disks::trees::DiskState;
use crate::vm::slots::{Bus, SATA_KEY, SCSI_KEY};
use crate::vm::spec::{CdromBus, IDE_CONTROLLERS};
use crate::vm::{Power, Vm, VmState};

/// Device keys, as ESXi numbers them.
const PCI_KEY: i32 = 100;
const VIDEO_KEY: i32 = 500;
/// PCI unit of the SATA controller.
const SATA_PCI_UNIT: i32 = 24;
/// Key of the first virtual disk (the others follow in device order).
pub const DISK_KEY: i32 = 2000;
/// Key of the first NIC (the others follow in device order).
pub const NIC_KEY: i32 = 4000;

pub(super) fn description(schema: &Schema, label: &str, summary: &str) -> DataObject {
    DataObject::of(schema, "Description")
        .with(schema, "label", label)
        .with(schema, "summary", summary)
}

/// A disk's backing: its top layer, the layers below as `parent`s, the top's changeId.
pub(super) fn disk_backing(
    schema: &Schema,
    vm: &Vm,
    datastores: &[DatastoreDir],
    state: &VmState,
    index: usize,
    disk: &DiskState,
) -> DataObject {
    let file_name = &state.spec.disks[index].file_name;
    let mut backing: Option<DataObject> = None;
    let base = vec![PathBuf::from(file_name)];
    let chain = if disk.chain.is_empty() {
        &base
    } else {
        &disk.chain
    };
    for (depth, layer) in chain.iter().enumerate().rev() {
        let name = if disk.chain.is_empty() {
            vm.datastore_path_of(file_name)
        } else {
            layer_name(vm, datastores, file_name, layer)
        };
        let mut info = DataObject::of(schema, "VirtualDiskFlatVer2BackingInfo")
            .with(schema, "fileName", name)
            .with(schema, "datastore", datastore(vm))
            .with(schema, "diskMode", state.spec.disks[index].mode.api_name())
            .with(schema, "thinProvisioned", true)
            .with(schema, "split", false)
            .with(schema, "writeThrough", false)
            .with(schema, "uuid", disk_uuid(&state.spec.uuid, index));
        if depth > 0 || chain.len() > 1 {
            info.set(schema, "deltaDiskFormat", "redoLogFormat");
        }
        if depth == 0 {
            if let Some(change_id) = &disk.change_id {
                info.set(schema, "changeId", change_id.as_str());
            }
        }
        if let Some(parent) = backing.take() {
            info.set(schema, "parent", parent);
        }
        backing = Some(info);
    }
    backing.expect("a chain has a top")
}

pub(super) fn devices(host: &Host, vm: &Vm, state: &VmState, disks: &[DiskState]) -> Vec<Value> {
    let schema = host.schema;
    let disk_keys = |bus: Bus| -> Vec<i32> {
        (DISK_KEY..)
            .zip(&state.spec.disks)
            .filter(|(_, d)| d.slot.bus == bus)
            .map(|(key, _)| key)
            .collect()
    };
    let int_array = |keys: &[i32]| {
        Value::Array(
            schema.known_type("int"),
            keys.iter().map(|&k| Value::Int(k)).collect(),
        )
    };
    let mut pci_devices = vec![VIDEO_KEY, SCSI_KEY];
    if state.spec.sata {
        pci_devices.push(SATA_KEY);
    }
    let mut devices: Vec<Value> = vec![
        DataObject::of(schema, "VirtualPCIController")
            .with(schema, "key", PCI_KEY)
            .with(
                schema,
                "deviceInfo",
                description(schema, "PCI controller 0", "PCI controller 0"),
            )
            .with(schema, "busNumber", 0)
            .with(schema, "device", int_array(&pci_devices))
            .into(),
        DataObject::of(schema, "VirtualMachineVideoCard")
            .with(schema, "key", VIDEO_KEY)
            .with(
                schema,
                "deviceInfo",
                description(schema, "Video card ", "Video card"),
            )
            .with(schema, "controllerKey", PCI_KEY)
            .with(schema, "unitNumber", 0)
            .with(schema, "videoRamSizeInKB", 4096i64)
            .with(schema, "numDisplays", 1)
            .with(schema, "useAutoDetect", false)
            .with(schema, "enable3DSupport", false)
            .into(),
        DataObject::of(schema, "ParaVirtualSCSIController")
            .with(schema, "key", SCSI_KEY)
            .with(
                schema,
                "deviceInfo",
                description(schema, "SCSI controller 0", "VMware paravirtual SCSI"),
            )
            .with(schema, "controllerKey", PCI_KEY)
            .with(schema, "unitNumber", 3)
            .with(schema, "busNumber", 0)
            .with(schema, "device", int_array(&disk_keys(Bus::Scsi)))
            .with(schema, "hotAddRemove", true)
            .with(
                schema,
                "sharedBus",
                enum_value(schema, "VirtualSCSISharing", "noSharing"),
            )
            .with(schema, "scsiCtlrUnitNumber", 7)
            .into(),
    ];
    if state.spec.sata {
        let mut sata_keys = disk_keys(Bus::Sata);
        sata_keys.extend(
            (CDROM_KEY..)
                .zip(&state.spec.cdroms)
                .filter(|(_, c)| c.bus == CdromBus::Sata)
                .map(|(key, _)| key),
        );
        devices.push(
            DataObject::of(schema, "VirtualAHCIController")
                .with(schema, "key", SATA_KEY)
                .with(
                    schema,
                    "deviceInfo",
                    description(schema, "SATA controller 0", "AHCI"),
                )
                .with(schema, "controllerKey", PCI_KEY)
                .with(schema, "unitNumber", SATA_PCI_UNIT)
                .with(schema, "busNumber", 0)
                .with(schema, "device", int_array(&sata_keys))
                .into(),
        );
    }
    for n in 0..state.spec.disks.len() {
        let capacity = state.disk_capacities.get(n).copied().unwrap_or(0) as i64;
        let shown = disks.get(n).cloned().unwrap_or_default();
        let backing = disk_backing(schema, vm, &host.datastores(), state, n, &shown);
        let label = format!("Hard disk {}", n + 1);
        let slot = state.spec.disks[n].slot;
        devices.push(
            DataObject::of(schema, "VirtualDisk")
                .with(schema, "key", DISK_KEY + n as i32)
                .with(
                    schema,
                    "deviceInfo",
                    description(schema, &label, &format!("{} KB", capacity / 1024)),
                )
                .with(schema, "backing", backing)
                .with(schema, "controllerKey", slot.bus.controller_key())
                .with(schema, "unitNumber", i32::from(slot.unit))
                .with(schema, "capacityInKB", capacity / 1024)
                .with(schema, "capacityInBytes", capacity)
                .into(),
        );
    }
    for (n, nic) in state.spec.nics.iter().enumerate() {
        let connected = state.power == Power::On && state.nic_links.get(n) == Some(&true);
        let ty = match nic.virtual_dev.as_str() {
            "e1000" => "VirtualE1000",
            "e1000e" => "VirtualE1000e",
            "vmxnet2" => "VirtualVmxnet2",
            "pcnet32" => "VirtualPCNet32",
            _ => "VirtualVmxnet3",
        };
        let backing = DataObject::of(schema, "VirtualEthernetCardNetworkBackingInfo")
            .with(schema, "deviceName", nic.network.as_str())
            .with(schema, "useAutoDetect", false)
            .with(
                schema,
                "network",
                crate::vm::network::objects::network_of(&nic.network),
            );
        let connectable = DataObject::of(schema, "VirtualDeviceConnectInfo")
            .with(schema, "startConnected", nic.start_connected)
            .with(schema, "allowGuestControl", true)
            .with(schema, "connected", connected)
            .with(schema, "status", "ok");
        let label = format!("Network adapter {}", n + 1);
        devices.push(
            DataObject::of(schema, ty)
                .with(schema, "key", NIC_KEY + n as i32)
                .with(
                    schema,
                    "deviceInfo",
                    description(schema, &label, &nic.network),
                )
                .with(schema, "backing", backing)
                .with(schema, "connectable", connectable)
                .with(schema, "controllerKey", PCI_KEY)
                .with(schema, "unitNumber", 7 + n as i32)
                .with(
                    schema,
                    "addressType",
                    if nic.generated_mac {
                        "generated"
                    } else {
                        "manual"
                    },
                )
                .with(schema, "macAddress", nic.mac.as_str())
                .with(schema, "wakeOnLanEnabled", false)
                .into(),
        );
    }
    devices.extend(ide_devices(schema, vm, state));
    devices
}

/// The two IDE controllers and the CD-ROM drives in their slots.
fn ide_devices(schema: &Schema, vm: &Vm, state: &VmState) -> Vec<Value> {
    let cdroms = &state.spec.cdroms;
    let controllers = (0..IDE_CONTROLLERS).map(|bus| {
        let keys: Vec<Value> = (CDROM_KEY..)
            .zip(cdroms)
            .filter(|(_, c)| c.bus == CdromBus::Ide && c.controller == bus)
            .map(|(key, _)| Value::Int(key))
            .collect();
        let label = format!("IDE {bus}");
        DataObject::of(schema, "VirtualIDEController")
            .with(schema, "key", IDE_KEY + i32::from(bus))
            .with(schema, "deviceInfo", description(schema, &label, &label))
            .with(schema, "busNumber", i32::from(bus))
            .with(
                schema,
                "device",
                Value::Array(schema.known_type("int"), keys),
            )
            .into()
    });
    let drives = cdroms.iter().enumerate().map(|(n, cdrom)| {
        let tools = state
            .cdroms
            .tools_installer
            .as_ref()
            .filter(|m| m.index == n);
        let (backing, summary) = match (tools, &cdrom.iso) {
            (Some(mount), _) => {
                let backing = DataObject::of(schema, "VirtualCdromIsoBackingInfo").with(
                    schema,
                    "fileName",
                    mount.file_name.as_str(),
                );
                (backing, format!("ISO {}", mount.file_name))
            }
            (None, Some(iso)) => {
                let file = vm.datastore_path_of(iso);
                let store = DatastorePath::parse(&file)
                    .map(|p| MoRef::new("Datastore", p.datastore.as_str()))
                    .unwrap_or_else(|_| datastore(vm));
                let backing = DataObject::of(schema, "VirtualCdromIsoBackingInfo")
                    .with(schema, "fileName", file.as_str())
                    .with(schema, "datastore", store);
                (backing, format!("ISO {file}"))
            }
            (None, None) => {
                let backing = DataObject::of(schema, "VirtualCdromRemotePassthroughBackingInfo")
                    .with(schema, "deviceName", "")
                    .with(schema, "useAutoDetect", false)
                    .with(schema, "exclusive", false);
                (backing, "Remote device".to_string())
            }
        };
        let connectable = DataObject::of(schema, "VirtualDeviceConnectInfo")
            .with(schema, "startConnected", cdrom.start_connected)
            .with(schema, "allowGuestControl", true)
            .with(
                schema,
                "connected",
                state.power == Power::On && state.cdroms.loaded(n),
            )
            .with(schema, "status", "ok");
        let label = format!("CD/DVD drive {}", n + 1);
        DataObject::of(schema, "VirtualCdrom")
            .with(schema, "key", CDROM_KEY + n as i32)
            .with(schema, "deviceInfo", description(schema, &label, &summary))
            .with(schema, "backing", backing)
            .with(schema, "connectable", connectable)
            .with(schema, "controllerKey", cdroms::controller_key(cdrom))
            .with(schema, "unitNumber", i32::from(cdrom.unit))
            .into()
    });
    controllers.chain(drives).collect()
}

/// A disk's backing UUID derived from the VM's UUID and its index.
pub(super) fn disk_uuid(vm_uuid: &str, index: usize) -> String {
    let mut uuid = vm_uuid.to_string();
    if uuid.len() == 36 {
        uuid.replace_range(34..36, &format!("{:02x}", index));
    }
    uuid
}
