//! What an EnvironmentBrowser tells clients before they create or change a VM: the hardware
//! versions this host runs (QueryConfigOptionDescriptor), each version's options — guest OS
//! descriptors, CPU and memory ranges (QueryConfigOption), and the host's datastores and
//! networks a VM may use (QueryConfigTarget). The limits are the ones ReconfigVM enforces.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, MoRef, Value};

use super::guest_os;
use super::reconfig::config::{
    max_memory_mb, max_vcpus, MAX_VCPUS, MEMORY_GRANULE_MB, NEWEST_HW_VERSION, OLDEST_HW_VERSION,
};
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::host_facts::HostFacts;

/// Hardware versions a VM here may have, oldest first, with the ESXi release that brought each.
const HW_VERSIONS: &[(i32, &str)] = &[
    (4, "ESX 3.x"),
    (7, "ESX/ESXi 4.x"),
    (8, "ESXi 5.0"),
    (9, "ESXi 5.1"),
    (10, "ESXi 5.5"),
    (11, "ESXi 6.0"),
    (13, "ESXi 6.5"),
    (14, "ESXi 6.7"),
    (15, "ESXi 6.7 U2"),
    (17, "ESXi 7.0"),
    (18, "ESXi 7.0 U1"),
    (19, "ESXi 7.0 U2"),
    (20, "ESXi 8.0"),
    (21, "ESXi 8.0 U2"),
];

/// The guest OS a new VM gets when its spec names none.
const DEFAULT_GUEST: &str = "otherLinux64Guest";
/// The disk controller every disk sits on.
const DISK_CONTROLLER: &str = "ParaVirtualSCSIController";
/// The NIC models a client may ask for (the guest always sees virtio-net).
const ETHERNET_CARDS: &[&str] = &["VirtualVmxnet3", "VirtualE1000e", "VirtualE1000"];

/// QueryConfigOptionDescriptor: one VirtualMachineConfigOptionDescriptor per hardware version.
pub fn descriptors(schema: &Schema) -> Value {
    let items = HW_VERSIONS
        .iter()
        .map(|&(version, release)| {
            DataObject::of(schema, "VirtualMachineConfigOptionDescriptor")
                .with(schema, "key", format!("vmx-{version:02}"))
                .with(schema, "description", format!("{release} virtual machine"))
                .with(schema, "host", Value::refs(schema, [&refs::host()]))
                .with(schema, "createSupported", true)
                .with(schema, "defaultConfigOption", version == NEWEST_HW_VERSION)
                .with(schema, "runSupported", true)
                .with(schema, "upgradeSupported", version < NEWEST_HW_VERSION)
                .into()
        })
        .collect();
    Value::Array(
        schema.known_type("VirtualMachineConfigOptionDescriptor"),
        items,
    )
}

/// The hardware version a config option key names (`vmx-21`, `vmx-07`); the newest without one.
fn version_of(schema: &Schema, key: Option<&str>) -> Result<i32, Fault> {
    let Some(key) = key else {
        return Ok(NEWEST_HW_VERSION);
    };
    key.strip_prefix("vmx-")
        .and_then(|n| n.parse().ok())
        .filter(|n| HW_VERSIONS.iter().any(|(v, _)| v == n))
        .ok_or_else(|| {
            Fault::invalid_argument(
                schema,
                "key",
                format!(
                    "'{key}' is not a hardware version of this host (vmx-{OLDEST_HW_VERSION:02}..vmx-{NEWEST_HW_VERSION})"
                ),
            )
        })
}

/// QueryConfigOption(Ex): the options of hardware version `key` (the newest when None),
/// describing the guest OSes `guest_ids` (all when empty).
pub fn config_option(
    host: &Host,
    key: Option<&str>,
    guest_ids: &[String],
) -> Result<DataObject, Fault> {
    let schema = host.schema;
    let version = version_of(schema, key)?;
    let facts = HostFacts::read();
    let max_cpus = max_vcpus(&facts);
    let max_mb = max_memory_mb(&facts);
    let ids: Vec<&str> = if guest_ids.is_empty() {
        guest_os::all(schema).iter().map(|id| &**id).collect()
    } else {
        guest_ids.iter().map(String::as_str).collect()
    };
    for id in &ids {
        if !guest_os::is_known(schema, id) {
            return Err(Fault::invalid_argument(
                schema,
                "spec.guestId",
                format!("'{id}' is not a guest OS this host knows"),
            ));
        }
    }
    let descriptors: Vec<Value> = ids
        .iter()
        .map(|id| guest_descriptor(schema, id, max_cpus, max_mb).into())
        .collect();
    let default_index = ids.iter().position(|id| *id == DEFAULT_GUEST).unwrap_or(0);
    let release = HW_VERSIONS
        .iter()
        .find(|(v, _)| *v == version)
        .map_or("", |(_, r)| r);
    Ok(DataObject::of(schema, "VirtualMachineConfigOption")
        .with(schema, "version", format!("vmx-{version:02}"))
        .with(schema, "description", format!("{release} virtual machine"))
        .with(
            schema,
            "guestOSDescriptor",
            Value::Array(schema.known_type("GuestOsDescriptor"), descriptors),
        )
        .with(schema, "guestOSDefaultIndex", default_index as i32)
        .with(
            schema,
            "hardwareOptions",
            hardware(schema, version, max_cpus, max_mb),
        )
        .with(
            schema,
            "capabilities",
            super::properties::vm_capability(schema),
        )
        .with(
            schema,
            "datastore",
            DataObject::of(schema, "DatastoreOption").with(
                schema,
                "unsupportedVolumes",
                Value::Array(
                    schema.known_type("VirtualMachineDatastoreVolumeOption"),
                    Vec::new(),
                ),
            ),
        )
        .with(
            schema,
            "supportedMonitorType",
            Value::strings(schema, ["release"]),
        )
        .with(
            schema,
            "defaultDevice",
            Value::Array(schema.known_type("VirtualDevice"), Vec::new()),
        ))
}

/// An IntOption / LongOption `min..=max` with a default.
fn range(schema: &Schema, ty: &str, min: i64, max: i64, default: i64) -> DataObject {
    let number = |n: i64| {
        if ty == "IntOption" {
            Value::Int(n as i32)
        } else {
            Value::Long(n)
        }
    };
    DataObject::of(schema, ty)
        .with(schema, "valueIsReadonly", false)
        .with(schema, "min", number(min))
        .with(schema, "max", number(max))
        .with(schema, "defaultValue", number(default))
}

fn hardware(schema: &Schema, version: i32, max_cpus: i32, max_mb: i64) -> DataObject {
    let count = |n: i64| range(schema, "IntOption", 0, n, n);
    let cpus: Vec<Value> = (1..=max_cpus).map(Value::Int).collect();
    DataObject::of(schema, "VirtualHardwareOption")
        .with(schema, "hwVersion", version)
        .with(
            schema,
            "virtualDeviceOption",
            Value::Array(schema.known_type("VirtualDeviceOption"), Vec::new()),
        )
        .with(schema, "deviceListReadonly", false)
        .with(
            schema,
            "numCPU",
            Value::Array(schema.known_type("int"), cpus),
        )
        .with(
            schema,
            "numCoresPerSocket",
            range(schema, "IntOption", 1, i64::from(max_cpus), 1),
        )
        .with(schema, "numCpuReadonly", false)
        .with(
            schema,
            "memoryMB",
            range(
                schema,
                "LongOption",
                MEMORY_GRANULE_MB,
                max_mb,
                256.min(max_mb),
            )
            .with(schema, "valueIsReadonly", false),
        )
        .with(schema, "numPCIControllers", count(1))
        .with(schema, "numIDEControllers", count(2))
        .with(schema, "numUSBControllers", count(0))
        .with(schema, "numUSBXHCIControllers", count(0))
        .with(schema, "numSIOControllers", count(1))
        .with(schema, "numPS2Controllers", count(1))
        .with(
            schema,
            "resourceConfigOption",
            DataObject::of(schema, "ResourceConfigOption")
                .with(schema, "cpuAllocationOption", allocation_option(schema))
                .with(schema, "memoryAllocationOption", allocation_option(schema)),
        )
}

fn allocation_option(schema: &Schema) -> DataObject {
    DataObject::of(schema, "ResourceAllocationOption").with(schema, "sharesOption", {
        DataObject::of(schema, "SharesOption")
            .with(
                schema,
                "sharesOption",
                range(schema, "IntOption", 0, 1_000_000, 1000),
            )
            .with(
                schema,
                "defaultLevel",
                Value::enumeration(schema, "SharesLevel", "normal"),
            )
    })
}

fn guest_descriptor(schema: &Schema, id: &str, max_cpus: i32, max_mb: i64) -> DataObject {
    let types = |names: &[&str]| Value::strings(schema, names.iter().copied());
    let max_mb = i32::try_from(max_mb).unwrap_or(i32::MAX);
    DataObject::of(schema, "GuestOsDescriptor")
        .with(schema, "id", id)
        .with(schema, "family", guest_os::family(id))
        .with(schema, "fullName", guest_os::full_name(id))
        .with(schema, "supportedMaxCPUs", max_cpus)
        .with(schema, "numSupportedPhysicalSockets", max_cpus)
        .with(schema, "numSupportedCoresPerSocket", max_cpus)
        .with(schema, "supportedMinMemMB", MEMORY_GRANULE_MB as i32)
        .with(schema, "supportedMaxMemMB", max_mb)
        .with(schema, "recommendedMemMB", 1024.min(max_mb))
        .with(schema, "recommendedColorDepth", 32)
        .with(
            schema,
            "supportedDiskControllerList",
            types(&[DISK_CONTROLLER]),
        )
        .with(schema, "recommendedDiskController", DISK_CONTROLLER)
        .with(schema, "supportedNumDisks", super::spec::MAX_DISKS as i32)
        .with(schema, "recommendedDiskSizeMB", 16 * 1024)
        .with(schema, "recommendedCdromController", "VirtualIDEController")
        .with(schema, "supportedEthernetCard", types(ETHERNET_CARDS))
        .with(schema, "recommendedEthernetCard", ETHERNET_CARDS[0])
        .with(schema, "smcRequired", false)
        .with(schema, "supportsWakeOnLan", false)
        .with(schema, "supportsVMI", false)
        .with(schema, "supportsMemoryHotAdd", false)
        .with(schema, "supportsCpuHotAdd", false)
        .with(schema, "supportsCpuHotRemove", false)
        .with(
            schema,
            "supportedFirmware",
            Value::strings(schema, ["bios"]),
        )
        .with(schema, "recommendedFirmware", "bios")
        .with(schema, "supports3D", false)
        .with(schema, "recommended3D", false)
        .with(schema, "smcRecommended", false)
        .with(schema, "ich7mRecommended", false)
        .with(schema, "usbRecommended", false)
        .with(schema, "supportLevel", "supported")
        .with(schema, "supportedForCreate", true)
        .with(
            schema,
            "vRAMSizeInKB",
            range(schema, "IntOption", 16 * 1024, 16 * 1024, 16 * 1024),
        )
        .with(schema, "numSupportedFloppyDevices", 0)
        .with(schema, "supportsPvscsiControllerForBoot", true)
        .with(schema, "diskUuidEnabled", false)
        .with(schema, "supportsHotPlugPCI", false)
}

/// QueryConfigTarget: the host's CPUs and memory, and the datastores and networks a VM may use
/// (their summaries as the inventory holds them).
pub fn config_target(host: &Host) -> DataObject {
    let schema = host.schema;
    let facts = HostFacts::read();
    let inv = host.inventory();
    let summary = |obj: &MoRef| inv.stored(schema, obj, "summary").cloned();
    let datastores: Vec<Value> = host
        .datastores()
        .iter()
        .filter_map(|ds| {
            let obj = ds.moref();
            let capability = inv.stored(schema, &obj, "capability").cloned()?;
            Some(
                DataObject::of(schema, "VirtualMachineDatastoreInfo")
                    .with(schema, "name", ds.name.as_str())
                    .with(schema, "datastore", summary(&obj)?)
                    .with(schema, "capability", capability)
                    .with(schema, "maxFileSize", 62i64 << 40)
                    .with(schema, "maxVirtualDiskCapacity", 62i64 << 40)
                    .with(schema, "mode", "readWrite")
                    .into(),
            )
        })
        .collect();
    let network = refs::vm_network();
    let networks: Vec<Value> = summary(&network)
        .map(|s| {
            DataObject::of(schema, "VirtualMachineNetworkInfo")
                .with(schema, "name", "VM Network")
                .with(schema, "network", s)
                .into()
        })
        .into_iter()
        .collect();
    let max_mb = i32::try_from(max_memory_mb(&facts)).unwrap_or(i32::MAX);
    DataObject::of(schema, "ConfigTarget")
        .with(schema, "numCpus", i32::from(facts.cpu_threads))
        .with(schema, "numCpuCores", i32::from(facts.cpu_cores))
        .with(schema, "numNumaNodes", 1)
        .with(schema, "smcPresent", false)
        .with(
            schema,
            "datastore",
            Value::Array(schema.known_type("VirtualMachineDatastoreInfo"), datastores),
        )
        .with(
            schema,
            "network",
            Value::Array(schema.known_type("VirtualMachineNetworkInfo"), networks),
        )
        .with(schema, "maxMemMBOptimalPerf", max_mb)
        .with(schema, "supportedMaxMemMB", max_mb)
        .with(schema, "maxCpusPerHost", MAX_VCPUS as i32)
}
