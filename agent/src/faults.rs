//! The vim25 faults the agent raises, one typed constructor each, so a fault's name and its
//! fields are written once. Protocol-level faults (NotAuthenticated, NoPermission,
//! InvalidArgument, NotSupported, NotFound, ManagedObjectNotFound, SystemError...) are
//! `vireo_api::Fault`'s own constructors.

use std::fmt::Display;

use vireo_api::schema::Schema;
use vireo_api::{Fault, MoRef, Value};

use crate::vm::Power;

/// `InvalidPowerState`: an operation wanting `requested` (if it names one) on a VM that is
/// `existing`.
pub fn invalid_power_state(schema: &Schema, requested: Option<Power>, existing: Power) -> Fault {
    let state =
        |power: Power| Value::enumeration(schema, "VirtualMachinePowerState", power.as_str());
    let fault = Fault::new(
        schema,
        "InvalidPowerState",
        "The attempted operation cannot be performed in the current state",
    )
    .with(schema, "existingState", state(existing));
    match requested {
        Some(requested) => fault.with(schema, "requestedState", state(requested)),
        None => fault,
    }
}

/// `InvalidState`: the object is not in a state that allows the operation.
pub fn invalid_state(schema: &Schema, why: impl Into<String>) -> Fault {
    Fault::new(schema, "InvalidState", why)
}

/// `TaskInProgress`: `task` already changes `entity`.
pub fn task_in_progress(schema: &Schema, entity: &MoRef, task: &MoRef) -> Fault {
    Fault::new(
        schema,
        "TaskInProgress",
        format!("Another task is already in progress on {entity}."),
    )
    .with(schema, "task", task.clone())
}

/// `RequestCanceled`: a client cancelled the request or task.
pub fn request_canceled(schema: &Schema, why: impl Into<String>) -> Fault {
    Fault::new(schema, "RequestCanceled", why)
}

/// `InvalidCollectorVersion`: a PropertyCollector version this collector never returned.
pub fn invalid_collector_version(schema: &Schema, version: &str) -> Fault {
    Fault::new(
        schema,
        "InvalidCollectorVersion",
        format!("unknown collector version {version}"),
    )
}

/// `FileFault` on `file` (a datastore path or a host path), with why.
pub fn file_fault(schema: &Schema, file: &str, why: impl Display) -> Fault {
    Fault::new(schema, "FileFault", why.to_string()).with(schema, "file", file)
}

/// `FileNotFound`: `file` does not exist (`why` says what needed it).
pub fn file_not_found(schema: &Schema, file: &str, why: impl Display) -> Fault {
    Fault::new(schema, "FileNotFound", why.to_string()).with(schema, "file", file)
}

/// `FileAlreadyExists`: `file` would be overwritten.
pub fn file_already_exists(schema: &Schema, file: &str) -> Fault {
    Fault::new(
        schema,
        "FileAlreadyExists",
        format!("The file {file} already exists"),
    )
    .with(schema, "file", file)
}

/// `InvalidDatastore`: the datastore `name` ("" when none was named) cannot be used.
pub fn invalid_datastore(schema: &Schema, name: &str, why: impl Display) -> Fault {
    let fault = Fault::new(schema, "InvalidDatastore", why.to_string());
    if name.is_empty() {
        return fault;
    }
    fault
        .with(schema, "name", name)
        .with(schema, "datastore", MoRef::new("Datastore", name))
}

/// `InvalidDatastorePath`: `path` is not a usable datastore path (malformed, leaving its
/// datastore, or naming the datastore itself).
pub fn invalid_datastore_path(schema: &Schema, path: &str, why: impl Display) -> Fault {
    Fault::new(schema, "InvalidDatastorePath", why.to_string())
        .with(schema, "name", datastore_name(path))
        .with(schema, "datastorePath", path)
}

/// `NoDiskSpace`: the datastore holding `file` is full.
pub fn no_disk_space(schema: &Schema, file: &str, why: impl Display) -> Fault {
    Fault::new(schema, "NoDiskSpace", why.to_string())
        .with(schema, "file", file)
        .with(schema, "datastore", datastore_name(file))
}

/// The datastore name of a `[name] path` ("" for anything else).
fn datastore_name(path: &str) -> &str {
    path.trim()
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .map_or("", |(name, _)| name)
}

/// `FileLocked`: `file` is open in a running VM.
pub fn file_locked(schema: &Schema, file: &str, why: impl Display) -> Fault {
    Fault::new(schema, "FileLocked", why.to_string()).with(schema, "file", file)
}

/// `AlreadyExists`: `name` is already there.
pub fn already_exists(schema: &Schema, name: &str, why: impl Into<String>) -> Fault {
    Fault::new(schema, "AlreadyExists", why).with(schema, "name", name)
}

/// `UserNotFound`: `principal` names no local account (nor group: local accounts have none).
pub fn user_not_found(schema: &Schema, principal: &str) -> Fault {
    Fault::new(schema, "UserNotFound", format!("no user {principal}"))
        .with(schema, "principal", principal)
        .with(schema, "unresolved", false)
}

/// `AuthMinimumAdminPermission`: the change would remove the last Admin permission.
pub fn auth_minimum_admin_permission(schema: &Schema, why: impl Into<String>) -> Fault {
    Fault::new(schema, "AuthMinimumAdminPermission", why)
}

/// `RemoveFailed`: something cannot be removed (a role permissions still use).
pub fn remove_failed(schema: &Schema, why: impl Into<String>) -> Fault {
    Fault::new(schema, "RemoveFailed", why)
}

/// `InvalidName`: `name` is not an acceptable name.
pub fn invalid_name(schema: &Schema, name: &str, why: impl Into<String>) -> Fault {
    Fault::new(schema, "InvalidName", why).with(schema, "name", name)
}

/// `DuplicateName`: `object` already has the name `name`.
pub fn duplicate_name(schema: &Schema, name: &str, object: &MoRef) -> Fault {
    Fault::new(
        schema,
        "DuplicateName",
        format!("The name '{name}' already exists."),
    )
    .with(schema, "name", name)
    .with(schema, "object", object.clone())
}

/// `InvalidName`: `name` is empty or longer than 80 characters.
pub fn invalid_snapshot_name(schema: &Schema, name: &str) -> Fault {
    Fault::new(
        schema,
        "InvalidName",
        format!("'{name}' is not a valid snapshot name"),
    )
    .with(schema, "name", name)
}

/// `ResourceInUse`: the `ty` objects `names` use the resource.
pub fn resource_in_use(schema: &Schema, ty: &str, names: &str, why: impl Into<String>) -> Fault {
    Fault::new(schema, "ResourceInUse", why)
        .with(schema, "type", ty)
        .with(schema, "name", names)
}

/// `ToolsUnavailable`: the guest tools are not running, so the guest cannot `operation`.
pub fn tools_unavailable(schema: &Schema, operation: &str) -> Fault {
    Fault::new(
        schema,
        "ToolsUnavailable",
        format!("Cannot {operation}: VMware Tools is not running in this virtual machine."),
    )
}

/// `SnapshotFault`: the snapshot could not be taken.
pub fn snapshot_fault(schema: &Schema, why: impl Into<String>) -> Fault {
    Fault::new(schema, "SnapshotFault", why)
}

/// `InsufficientMemoryResourcesFault`: the VM needs `requested_mb`, the host has `available_mb`.
pub fn insufficient_memory(schema: &Schema, available_mb: i64, requested_mb: i64) -> Fault {
    Fault::new(
        schema,
        "InsufficientMemoryResourcesFault",
        format!("The host has {available_mb} MB available; the VM needs {requested_mb} MB."),
    )
    .with(schema, "unreserved", available_mb * 1024 * 1024)
    .with(schema, "requested", requested_mb * 1024 * 1024)
}

/// `LimitExceeded`: the caller already holds `limit` of something.
pub fn limit_exceeded(schema: &Schema, limit: usize, why: impl Into<String>) -> Fault {
    Fault::new(schema, "LimitExceeded", why).with(
        schema,
        "limit",
        i32::try_from(limit).unwrap_or(i32::MAX),
    )
}

/// `InvalidVmConfig`: the configuration's `property` is unusable.
pub fn invalid_vm_config(schema: &Schema, property: &str, why: impl Into<String>) -> Fault {
    Fault::new(schema, "InvalidVmConfig", why).with(schema, "property", property)
}

/// `GenericVmConfigFault`: the VM could not start with its configuration.
pub fn generic_vm_config_fault(schema: &Schema, reason: &str) -> Fault {
    Fault::new(schema, "GenericVmConfigFault", reason).with(schema, "reason", reason)
}

/// `InvalidDeviceSpec` (or its subtype `ty`: DeviceHotPlugNotSupported,
/// InvalidDeviceOperation, InvalidDeviceBacking, ...): change `index` of a deviceChange
/// cannot be applied.
pub fn invalid_device_spec(
    schema: &Schema,
    ty: &str,
    index: usize,
    why: impl Into<String>,
) -> Fault {
    Fault::new(schema, ty, why)
        .with(
            schema,
            "property",
            format!("virtualDeviceSpec[{index}].device"),
        )
        .with(
            schema,
            "deviceIndex",
            i32::try_from(index).unwrap_or(i32::MAX),
        )
}

/// `NotSupported` for a change to something that belongs to the machine vireod runs on (its
/// clock, firmware, power policy, services): vireod shows it and leaves it to the machine.
pub fn machine_owned(schema: &Schema, what: &str) -> Fault {
    Fault::not_supported(
        schema,
        format!("{what} belongs to the machine vireod runs on; change it there."),
    )
}

/// `Timedout`: the operation (a lease, ...) ran out of time.
pub fn timed_out(schema: &Schema, why: impl Into<String>) -> Fault {
    Fault::new(schema, "Timedout", why)
}

/// `NotAFile`: `file` is a directory or another non-file.
pub fn not_a_file(schema: &Schema, file: &str, why: impl Into<String>) -> Fault {
    Fault::new(schema, "NotAFile", why).with(schema, "file", file)
}

/// `HostConfigFault`: the host's configuration could not be changed as asked.
pub fn host_config_fault(schema: &Schema, why: impl Into<String>) -> Fault {
    Fault::new(schema, "HostConfigFault", why)
}

/// `ConcurrentAccess`: someone else changed the object (or answered the question) first.
pub fn concurrent_access(schema: &Schema, why: impl Into<String>) -> Fault {
    Fault::new(schema, "ConcurrentAccess", why)
}

/// `AlreadyUpgraded`: the VM already has the hardware version asked for.
pub fn already_upgraded(schema: &Schema, why: impl Into<String>) -> Fault {
    Fault::new(schema, "AlreadyUpgraded", why)
}

/// `FileFault` or its subtype `ty` (FileNotFound, NotADirectory, DirectoryNotEmpty, ...) about
/// `file`, with the message of whoever found it (the guest, for guest operations).
pub fn file_fault_of_type(schema: &Schema, ty: &str, file: &str, why: impl Into<String>) -> Fault {
    Fault::new(schema, ty, why).with(schema, "file", file)
}

/// `GuestOperationsUnavailable`: the guest operations agent could not be reached.
pub fn guest_operations_unavailable(schema: &Schema, why: impl Display) -> Fault {
    Fault::new(
        schema,
        "GuestOperationsUnavailable",
        format!("The guest operations agent could not be contacted ({why})."),
    )
}

/// `InvalidGuestLogin`: the guest refused the credentials.
pub fn invalid_guest_login(schema: &Schema) -> Fault {
    Fault::new(
        schema,
        "InvalidGuestLogin",
        "Failed to authenticate with the guest operating system using the supplied credentials.",
    )
}

/// `GuestPermissionDenied`: the guest user may not do this.
pub fn guest_permission_denied(schema: &Schema, why: impl Into<String>) -> Fault {
    Fault::new(schema, "GuestPermissionDenied", why)
}

/// `GuestProcessNotFound`: the guest has no process `pid`.
pub fn guest_process_not_found(schema: &Schema, pid: i64, why: impl Into<String>) -> Fault {
    Fault::new(schema, "GuestProcessNotFound", why).with(schema, "pid", pid)
}

/// `OperationNotSupportedByGuest`: the guest's tools cannot do this operation.
pub fn operation_not_supported_by_guest(schema: &Schema, why: impl Into<String>) -> Fault {
    Fault::new(schema, "OperationNotSupportedByGuest", why)
}

/// `CpuHotPlugNotSupported`: a running VM's CPU count changed while cpuHotAddEnabled is off.
pub fn cpu_hot_plug_not_supported(schema: &Schema) -> Fault {
    Fault::new(
        schema,
        "CpuHotPlugNotSupported",
        "CPU hot plug is not supported for this virtual machine (cpuHotAddEnabled is off).",
    )
}

/// `MemoryHotPlugNotSupported`: a running VM's memory changed while memoryHotAddEnabled is off.
pub fn memory_hot_plug_not_supported(schema: &Schema) -> Fault {
    Fault::new(
        schema,
        "MemoryHotPlugNotSupported",
        "Memory hot plug is not supported for this virtual machine (memoryHotAddEnabled is off).",
    )
}

/// `VmConfigFault`: the VM's configuration lacks what the operation needs.
pub fn vm_config_fault(schema: &Schema, why: impl Into<String>) -> Fault {
    Fault::new(schema, "VmConfigFault", why)
}

/// `ToolsImageNotAvailable`: this host has no tools installer image.
pub fn tools_image_not_available(schema: &Schema) -> Fault {
    Fault::new(
        schema,
        "ToolsImageNotAvailable",
        "The VMware Tools (vireo-tools) installer image is not available on this host.",
    )
}

/// `ToolsAutoUpgradeNotSupported`: the guest's tools cannot upgrade themselves.
pub fn tools_auto_upgrade_not_supported(schema: &Schema) -> Fault {
    Fault::new(
        schema,
        "ToolsAutoUpgradeNotSupported",
        "The guest's tools cannot upgrade themselves; mount the installer \
         (MountToolsInstaller) and install them in the guest.",
    )
}

/// `VmToolsUpgradeFault`: the tools upgrade in the guest failed.
pub fn vm_tools_upgrade_fault(schema: &Schema, why: impl Into<String>) -> Fault {
    Fault::new(schema, "VmToolsUpgradeFault", why)
}

#[cfg(test)]
mod tests {
    use vireo_api::schema::vim25;

    use super::*;

    /// Every constructor builds its fault type with fields the schema has (`with` panics on a
    /// field the type lacks).
    #[test]
    fn constructors_build_their_types() {
        let schema = vim25();
        let vm = MoRef::new("VirtualMachine", "1");
        let faults = [
            (
                invalid_power_state(schema, Some(Power::Off), Power::On),
                "InvalidPowerState",
            ),
            (invalid_state(schema, "x"), "InvalidState"),
            (
                task_in_progress(schema, &vm, &MoRef::new("Task", "t")),
                "TaskInProgress",
            ),
            (request_canceled(schema, "x"), "RequestCanceled"),
            (
                invalid_collector_version(schema, "7"),
                "InvalidCollectorVersion",
            ),
            (file_fault(schema, "[ds] a", "x"), "FileFault"),
            (file_not_found(schema, "[ds] a", "x"), "FileNotFound"),
            (file_already_exists(schema, "[ds] a"), "FileAlreadyExists"),
            (timed_out(schema, "x"), "Timedout"),
            (not_a_file(schema, "/a", "x"), "NotAFile"),
            (host_config_fault(schema, "x"), "HostConfigFault"),
            (concurrent_access(schema, "x"), "ConcurrentAccess"),
            (already_upgraded(schema, "x"), "AlreadyUpgraded"),
            (invalid_datastore(schema, "ds", "x"), "InvalidDatastore"),
            (already_exists(schema, "a", "x"), "AlreadyExists"),
            (duplicate_name(schema, "a", &vm), "DuplicateName"),
            (invalid_snapshot_name(schema, ""), "InvalidName"),
            (
                resource_in_use(schema, "VirtualMachine", "a", "x"),
                "ResourceInUse",
            ),
            (
                tools_unavailable(schema, "shut down the guest"),
                "ToolsUnavailable",
            ),
            (snapshot_fault(schema, "x"), "SnapshotFault"),
            (
                insufficient_memory(schema, 1, 2),
                "InsufficientMemoryResourcesFault",
            ),
            (limit_exceeded(schema, 5, "x"), "LimitExceeded"),
            (
                invalid_device_spec(schema, "DeviceHotPlugNotSupported", 1, "x"),
                "DeviceHotPlugNotSupported",
            ),
            (user_not_found(schema, "x"), "UserNotFound"),
            (
                auth_minimum_admin_permission(schema, "x"),
                "AuthMinimumAdminPermission",
            ),
            (remove_failed(schema, "x"), "RemoveFailed"),
            (invalid_name(schema, "x", "y"), "InvalidName"),
            (invalid_vm_config(schema, "memSize", "x"), "InvalidVmConfig"),
            (generic_vm_config_fault(schema, "x"), "GenericVmConfigFault"),
        ];
        for (fault, ty) in faults {
            assert_eq!(fault.type_name(schema), ty);
        }
    }
}
