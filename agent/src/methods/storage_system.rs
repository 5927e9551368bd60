//! HostStorageSystem, read from the machine: `storageDeviceInfo` lists its physical block
//! devices as local SCSI disks (no host bus adapters or multipathing are modelled), and
//! `fileSystemVolumeInfo` its filesystems on block devices plus every datastore (a directory,
//! volume type OTHER, on the device of the filesystem holding it). The refresh and rescan
//! methods read them again; the VMFS, iSCSI and partitioning methods answer NotSupported.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::host::Host;
use crate::inventory::esxi::{refs, DatastoreDir};
use crate::inventory::host_config::set_section;
use crate::inventory::host_facts::filesystem_space;
use crate::inventory::machine::{self, BlockDevice, Mount};

/// HostStorageSystem's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostStorageSystem",
    methods: &[
        ("RefreshStorageSystem", Handler::Sync(refresh)),
        ("RescanAllHba", Handler::Sync(refresh)),
        ("RescanVmfs", Handler::Sync(refresh)),
    ],
};

fn refresh(call: &Call<'_>) -> MethodResult {
    publish(call.host);
    Ok(None)
}

/// Publishes the devices and volumes as they are now.
pub fn publish(host: &Host) {
    let schema = host.schema;
    let devices = machine::block_devices();
    let mounts = machine::mounts();
    let device_info = device_info(schema, &devices);
    let volumes = volume_info(schema, &mounts, &host.datastores());
    host.mutate(|inv| {
        let system = refs::storage_system();
        inv.set(schema, &system, "storageDeviceInfo", device_info.clone());
        inv.set(schema, &system, "fileSystemVolumeInfo", volumes.clone());
        set_section(schema, inv, "storageDevice", device_info);
        set_section(schema, inv, "fileSystemVolume", volumes);
    });
}

fn device_info(schema: &Schema, devices: &[BlockDevice]) -> DataObject {
    let disks = devices
        .iter()
        .map(|d| scsi_disk(schema, d).into())
        .collect();
    DataObject::of(schema, "HostStorageDeviceInfo")
        .with(
            schema,
            "scsiLun",
            Value::Array(schema.known_type("ScsiLun"), disks),
        )
        .with(schema, "softwareInternetScsiEnabled", false)
}

/// A block device as ESXi describes a local disk; its key and canonical name are the kernel's.
fn scsi_disk(schema: &Schema, device: &BlockDevice) -> DataObject {
    let described = [device.vendor.as_str(), device.model.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let capacity = DataObject::of(schema, "HostDiskDimensionsLba")
        .with(schema, "blockSize", device.block_size)
        .with(schema, "block", device.blocks);
    DataObject::of(schema, "HostScsiDisk")
        .with(schema, "deviceName", format!("/dev/{}", device.name))
        .with(schema, "deviceType", "disk")
        .with(
            schema,
            "key",
            format!("key-vim.host.ScsiDisk-{}", device.name),
        )
        .with(schema, "uuid", device.name.as_str())
        .with(schema, "canonicalName", device.name.as_str())
        .with(
            schema,
            "displayName",
            format!("Local {described} Disk ({})", device.name),
        )
        .with(schema, "lunType", "disk")
        .with(schema, "vendor", device.vendor.as_str())
        .with(schema, "model", device.model.as_str())
        .with(schema, "operationalState", Value::strings(schema, ["ok"]))
        .with(schema, "capacity", capacity)
        .with(schema, "devicePath", format!("/dev/{}", device.name))
        .with(schema, "ssd", !device.rotational)
        .with(schema, "localDisk", true)
}

fn volume_info(schema: &Schema, mounts: &[Mount], datastores: &[DatastoreDir]) -> DataObject {
    let machine_volumes = mounts.iter().filter(|m| m.on_disk()).map(|m| {
        let capacity = filesystem_space(m.point.as_ref()).map_or(0, |(capacity, _)| capacity);
        mount_info(schema, &m.point, &m.point, m, capacity, true)
    });
    let datastore_volumes = datastores.iter().filter_map(|ds| {
        let holder = machine::mount_of(mounts, &ds.dir)?;
        let space = filesystem_space(&ds.dir);
        let capacity = space.as_ref().map_or(0, |(capacity, _)| *capacity);
        let path = ds.dir.display().to_string();
        Some(mount_info(
            schema,
            &ds.name,
            &path,
            holder,
            capacity,
            space.is_ok(),
        ))
    });
    let all = datastore_volumes
        .chain(machine_volumes)
        .map(Value::from)
        .collect();
    DataObject::of(schema, "HostFileSystemVolumeInfo")
        .with(schema, "volumeTypeList", Value::strings(schema, ["OTHER"]))
        .with(
            schema,
            "mountInfo",
            Value::Array(schema.known_type("HostFileSystemMountInfo"), all),
        )
}

fn mount_info(
    schema: &Schema,
    name: &str,
    path: &str,
    holder: &Mount,
    capacity: i64,
    accessible: bool,
) -> DataObject {
    let access = if holder.read_only {
        "readOnly"
    } else {
        "readWrite"
    };
    let mount = DataObject::of(schema, "HostMountInfo")
        .with(schema, "path", path)
        .with(schema, "accessMode", access)
        .with(schema, "mounted", true)
        .with(schema, "accessible", accessible);
    let volume = DataObject::of(schema, "HostLocalFileSystemVolume")
        .with(schema, "type", "OTHER")
        .with(schema, "name", name)
        .with(schema, "capacity", capacity)
        .with(schema, "device", holder.source.as_str());
    DataObject::of(schema, "HostFileSystemMountInfo")
        .with(schema, "mountInfo", mount)
        .with(schema, "volume", volume)
}
