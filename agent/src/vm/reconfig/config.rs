//! ReconfigVM's settings that are not devices: name, annotation, guest OS, CPUs and memory,
//! identities, extraConfig, change tracking and the `.vmx`-key settings of [`settings`]. Each
//! is read from the spec into the VM's next configuration ([`apply`]); [`check`] then judges
//! the change as a whole against the VM's power state and the host's limits.

use vireo_api::{DataObject, Fault, Value};

use super::allocation;
use super::settings::{self, CORES_PER_SOCKET, CPU_HOT_ADD, MEMORY_HOT_ADD};
use crate::faults;
use crate::host::Host;
use crate::inventory::host_facts::HostFacts;
use crate::vm::create::apply_extra_config;
use crate::vm::disks::CTK_ENABLED;
use crate::vm::spec::VmSpec;
use crate::vm::{guest_os, uuid, Power};

/// The ConfigSpec fields this module reads (besides those of [`settings::SETTINGS`]).
pub const FIELDS: &[&str] = &[
    "changeVersion",
    "name",
    "version",
    "uuid",
    "instanceUuid",
    "guestId",
    "annotation",
    "numCPUs",
    "memoryMB",
    "extraConfig",
    "changeTrackingEnabled",
];

/// Smallest memory size ESXi accepts, in MB; sizes are multiples of it.
pub const MEMORY_GRANULE_MB: i64 = 4;
/// Newest virtual hardware version (ESXi 8.0 U2 and later).
pub const NEWEST_HW_VERSION: i32 = 21;
/// Oldest virtual hardware version a VM may have.
pub const OLDEST_HW_VERSION: i32 = 4;
/// Most vCPUs the VMM runs.
pub const MAX_VCPUS: i64 = 64;

/// Reads the non-device settings of `config` into `next` (the VM's configuration so far).
pub fn apply(host: &Host, config: &DataObject, next: &mut VmSpec) -> Result<(), Fault> {
    let schema = host.schema;
    let get = |name: &str| config.get(schema, name);
    let text = |name: &str| -> Result<Option<String>, Fault> {
        match get(name) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| Fault::invalid_argument(schema, name, "not a string")),
        }
    };
    let number = |name: &str| get(name).and_then(Value::as_i64);
    if let Some(version) = text("version")? {
        if version != format!("vmx-{}", next.hw_version) {
            return Err(Fault::invalid_argument(
                schema,
                "version",
                "the hardware version changes only through UpgradeVM_Task",
            ));
        }
    }
    if let Some(name) = text("name")? {
        next.name = name;
    }
    if let Some(annotation) = text("annotation")? {
        next.annotation = annotation;
    }
    if let Some(guest_id) = text("guestId")? {
        next.guest_id = guest_id;
    }
    if let Some(given) = text("uuid")? {
        next.uuid = checked_uuid(host, "uuid", &given)?;
    }
    if let Some(given) = text("instanceUuid")? {
        next.instance_uuid = checked_uuid(host, "instanceUuid", &given)?;
    }
    if let Some(n) = number("numCPUs") {
        next.num_cpus = i32::try_from(n).unwrap_or(i32::MAX);
    }
    if let Some(mb) = number("memoryMB") {
        next.memory_mb = mb;
    }
    apply_extra_config(host, next, config)?;
    if let Some(enabled) = get("changeTrackingEnabled").and_then(Value::as_bool) {
        next.set_extra(CTK_ENABLED, if enabled { "TRUE" } else { "FALSE" });
    }
    settings::apply(schema, config, next)?;
    allocation::apply(schema, config, next)
}

/// An API UUID a client gives (any spelling of 32 hex digits), or InvalidArgument.
fn checked_uuid(host: &Host, field: &str, given: &str) -> Result<String, Fault> {
    uuid::parse(given).ok_or_else(|| {
        Fault::invalid_argument(host.schema, field, format!("'{given}' is not a UUID"))
    })
}

/// Most vCPUs a VM may have here: the VMM's limit or the host's CPU threads, the fewer.
pub fn max_vcpus(facts: &HostFacts) -> i32 {
    MAX_VCPUS.min(i64::from(facts.cpu_threads).max(1)) as i32
}

/// Most memory a VM may have here, in MB: the host's.
pub fn max_memory_mb(facts: &HostFacts) -> i64 {
    facts.memory_bytes / (1024 * 1024)
}

/// A config's numCPUs, within the host's limits ([`max_vcpus`]); InvalidArgument otherwise.
pub fn checked_num_cpus(host: &Host, num_cpus: i64) -> Result<i32, Fault> {
    let max = max_vcpus(&HostFacts::read());
    if !(1..=i64::from(max)).contains(&num_cpus) {
        return Err(Fault::invalid_argument(
            host.schema,
            "numCPUs",
            format!("{num_cpus} vCPUs: this host runs 1 to {max} per VM"),
        ));
    }
    Ok(num_cpus as i32)
}

/// A config's memoryMB: a multiple of [`MEMORY_GRANULE_MB`] (the smallest size ESXi accepts)
/// up to the host's memory; InvalidArgument otherwise.
pub fn checked_memory_mb(host: &Host, memory_mb: i64) -> Result<i64, Fault> {
    let max = max_memory_mb(&HostFacts::read());
    if memory_mb < MEMORY_GRANULE_MB || memory_mb % MEMORY_GRANULE_MB != 0 || memory_mb > max {
        return Err(Fault::invalid_argument(
            host.schema,
            "memoryMB",
            format!(
                "{memory_mb} MB: memory is a multiple of {MEMORY_GRANULE_MB} MB, at most the host's {max} MB"
            ),
        ));
    }
    Ok(memory_mb)
}

/// Judges the change from `now` to `next` for a VM that is `power`: sizes within the host's
/// limits, a coherent CPU topology, a known guest OS, and no hardware change while the VM
/// runs or is suspended: CPUs or memory of a running VM without hot add get ESXi's
/// CpuHotPlugNotSupported / MemoryHotPlugNotSupported, with hot add NotSupported (this host's
/// VMM adds neither), other settings InvalidPowerState.
pub fn check(host: &Host, now: &VmSpec, next: &VmSpec, power: Power) -> Result<(), Fault> {
    let schema = host.schema;
    checked_num_cpus(host, i64::from(next.num_cpus))?;
    checked_memory_mb(host, next.memory_mb)?;
    let cores = cores_per_socket(next);
    if next.num_cpus % cores != 0 {
        return Err(Fault::invalid_argument(
            schema,
            "numCoresPerSocket",
            format!(
                "{} vCPUs cannot be split into sockets of {cores} cores",
                next.num_cpus
            ),
        ));
    }
    if next.guest_id != now.guest_id && !guest_os::is_known(schema, &next.guest_id) {
        return Err(Fault::invalid_argument(
            schema,
            "guestId",
            format!("'{}' is not a guest OS this host knows", next.guest_id),
        ));
    }
    match cold_change(now, next) {
        Some(_) if power == Power::Off => Ok(()),
        Some(field @ ("numCPUs" | "memoryMB")) if hot_add_enabled(now, field) => {
            Err(Fault::not_supported(
                schema,
                format!("This host's VMM cannot change {field} of a running VM; power it off."),
            ))
        }
        Some("numCPUs") if power == Power::On => Err(faults::cpu_hot_plug_not_supported(schema)),
        Some("memoryMB") if power == Power::On => {
            Err(faults::memory_hot_plug_not_supported(schema))
        }
        Some(_) => Err(faults::invalid_power_state(schema, Some(Power::Off), power)),
        None => Ok(()),
    }
}

/// The first setting changed from `now` to `next` that ESXi changes only on a powered-off VM
/// (CPUs and memory too, since this host's VMM adds neither while running).
fn cold_change(now: &VmSpec, next: &VmSpec) -> Option<&'static str> {
    let flag = |spec: &VmSpec, key: &str| settings::setting(key).value(spec);
    [
        ("numCPUs", now.num_cpus != next.num_cpus),
        ("memoryMB", now.memory_mb != next.memory_mb),
        ("guestId", now.guest_id != next.guest_id),
        ("version", now.hw_version != next.hw_version),
        ("uuid", now.uuid != next.uuid),
        (
            "numCoresPerSocket",
            cores_per_socket(now) != cores_per_socket(next),
        ),
        (
            "cpuHotAddEnabled",
            flag(now, CPU_HOT_ADD) != flag(next, CPU_HOT_ADD),
        ),
        (
            "memoryHotAddEnabled",
            flag(now, MEMORY_HOT_ADD) != flag(next, MEMORY_HOT_ADD),
        ),
    ]
    .into_iter()
    .find_map(|(field, changed)| changed.then_some(field))
}

/// Whether hot add of `field` (numCPUs or memoryMB) is enabled in `spec`.
fn hot_add_enabled(spec: &VmSpec, field: &str) -> bool {
    let key = if field == "numCPUs" {
        CPU_HOT_ADD
    } else {
        MEMORY_HOT_ADD
    };
    settings::setting(key).value(spec) == Value::Bool(true)
}

/// The VM's cores per socket.
pub fn cores_per_socket(spec: &VmSpec) -> i32 {
    settings::setting(CORES_PER_SOCKET)
        .value(spec)
        .as_i64()
        .map_or(1, |n| n as i32)
}
