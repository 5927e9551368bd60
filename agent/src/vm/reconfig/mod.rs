//! ReconfigVM_Task, Rename_Task and UpgradeVM_Task: one pipeline for every change to a VM's
//! configuration.
//!
//! 1. every ConfigSpec field set must be one a module here reads (NotSupported otherwise);
//! 2. [`config::apply`] (and, beside it, the device changes) build the VM's next configuration
//!    from a copy of the current one, refusing bad values;
//! 3. [`config::check`] and the checks across VMs (names, instance UUIDs) judge the change;
//! 4. the `.vmx` is written once, and only then does the VM take the new configuration.
//!
//! A spec that fails anywhere leaves the VM, its `.vmx` and its files as they were.

pub mod config;
pub mod settings;

use std::sync::Arc;

use vireo_api::{DataObject, Fault, Value};

use super::spec::VmSpec;
use super::{create, lifecycle, properties, Vm};
use crate::host::Host;

/// ReconfigVM_Task: applies `config` (a VirtualMachineConfigSpec) to the VM.
pub fn reconfigure(
    host: &Arc<Host>,
    vm: &Arc<Vm>,
    config: &DataObject,
    user: &str,
) -> Result<(), Fault> {
    refuse_unread_fields(host, config)?;
    let now = vm.state().spec.clone();
    check_change_version(host, vm, config)?;
    let mut next = now.clone();
    config::apply(host, config, &mut next)?;
    commit(host, vm, &now, next, user, Change::Reconfigure(config))
}

/// Rename_Task: the VM's display name changes; its folder and files keep theirs (as on ESXi).
pub fn rename(host: &Arc<Host>, vm: &Arc<Vm>, name: &str, user: &str) -> Result<(), Fault> {
    let now = vm.state().spec.clone();
    let next = VmSpec {
        name: name.to_string(),
        ..now.clone()
    };
    commit(host, vm, &now, next, user, Change::Rename)
}

/// UpgradeVM_Task: records virtual hardware version `version` (`vmx-NN`; the newest when
/// None). AlreadyUpgraded when the VM has it or a newer one; the VM must be powered off.
pub fn upgrade(
    host: &Arc<Host>,
    vm: &Arc<Vm>,
    version: Option<&str>,
    user: &str,
) -> Result<(), Fault> {
    let schema = host.schema;
    let target = match version {
        None => config::NEWEST_HW_VERSION,
        Some(text) => text
            .strip_prefix("vmx-")
            .and_then(|n| n.parse().ok())
            .filter(|n| (config::OLDEST_HW_VERSION..=config::NEWEST_HW_VERSION).contains(n))
            .ok_or_else(|| {
                Fault::invalid_argument(
                    schema,
                    "version",
                    format!(
                        "'{text}' is not a hardware version this host runs (vmx-{}..vmx-{})",
                        config::OLDEST_HW_VERSION,
                        config::NEWEST_HW_VERSION
                    ),
                )
            })?,
    };
    let now = vm.state().spec.clone();
    if now.hw_version >= target {
        return Err(Fault::new(
            schema,
            "AlreadyUpgraded",
            format!(
                "{} already has hardware version vmx-{}.",
                now.name, now.hw_version
            ),
        ));
    }
    let next = VmSpec {
        hw_version: target,
        ..now.clone()
    };
    commit(host, vm, &now, next, user, Change::Upgrade)
}

/// What a commit is, for its events.
enum Change<'a> {
    /// ReconfigVM_Task with this spec.
    Reconfigure(&'a DataObject),
    /// Rename_Task.
    Rename,
    /// UpgradeVM_Task.
    Upgrade,
}

/// Judges the change from `now` to `next`, writes the `.vmx` once and publishes the VM.
fn commit(
    host: &Arc<Host>,
    vm: &Arc<Vm>,
    now: &VmSpec,
    next: VmSpec,
    user: &str,
    change: Change<'_>,
) -> Result<(), Fault> {
    let schema = host.schema;
    if next.name != now.name {
        create::check_new_name(host, &next.name, Some(vm))?;
    }
    if next.instance_uuid != now.instance_uuid {
        check_instance_uuid_free(host, vm, &next.instance_uuid)?;
    }
    let mut state = vm.edit(host);
    if state.removed || state.spec != *now {
        return Err(Fault::new(
            schema,
            "ConcurrentAccess",
            "The VM's configuration changed while this change was checked.",
        ));
    }
    config::check(host, now, &next, state.power)?;
    if next == state.spec {
        return Ok(());
    }
    next.to_vmx()
        .write(&vm.vmx_file)
        .map_err(|e| create::io_fault(schema, &vm.vmx_path.to_string(), e))?;
    let old_name = std::mem::replace(&mut state.spec, next).name;
    drop(state);
    // The events follow the published change.
    let state = vm.state();
    let name = state.spec.name.clone();
    if old_name != name {
        let event = DataObject::of(schema, "VmRenamedEvent")
            .with(schema, "oldName", old_name.as_str())
            .with(schema, "newName", name.as_str());
        lifecycle::post_vm_event_object(
            host,
            vm,
            &state,
            event,
            format!("Renamed {old_name} to {name} in ha-datacenter"),
            user,
        );
    }
    let (event, message) = match change {
        Change::Reconfigure(config) => (
            DataObject::of(schema, "VmReconfiguredEvent").with(
                schema,
                "configSpec",
                config.clone(),
            ),
            format!("Reconfigured {name} on ha-host in ha-datacenter"),
        ),
        Change::Upgrade => {
            let version = format!("vmx-{}", state.spec.hw_version);
            (
                DataObject::of(schema, "VmUpgradeCompleteEvent").with(
                    schema,
                    "version",
                    version.as_str(),
                ),
                format!("Virtual machine compatibility upgraded to {version}"),
            )
        }
        Change::Rename => return Ok(()),
    };
    lifecycle::post_vm_event_object(host, vm, &state, event, message, user);
    Ok(())
}

/// NotSupported naming the ConfigSpec fields set that no module here reads.
fn refuse_unread_fields(host: &Host, config: &DataObject) -> Result<(), Fault> {
    let schema = host.schema;
    let unread: Vec<&str> = schema
        .fields(config.ty)
        .iter()
        .zip(&config.fields)
        .filter(|(_, value)| value.is_some())
        .map(|(field, _)| &*field.name)
        .filter(|name| {
            !config::FIELDS.contains(name) && !settings::spec_fields().any(|s| s == *name)
        })
        .collect();
    if unread.is_empty() {
        return Ok(());
    }
    Err(Fault::not_supported(
        schema,
        format!("This host does not reconfigure {}.", unread.join(", ")),
    ))
}

/// ConcurrentAccess when the spec names a changeVersion other than the VM's.
fn check_change_version(host: &Host, vm: &Vm, config: &DataObject) -> Result<(), Fault> {
    let schema = host.schema;
    let Some(asked) = config.get(schema, "changeVersion").and_then(Value::as_str) else {
        return Ok(());
    };
    if asked == properties::change_version(vm) {
        return Ok(());
    }
    Err(Fault::new(
        schema,
        "ConcurrentAccess",
        format!("The VM's configuration is no longer at changeVersion {asked}."),
    ))
}

/// InvalidArgument when another VM has `instance_uuid`.
fn check_instance_uuid_free(host: &Host, vm: &Vm, instance_uuid: &str) -> Result<(), Fault> {
    let taken = host
        .vms
        .all()
        .into_iter()
        .any(|other| other.id != vm.id && other.state().spec.instance_uuid == instance_uuid);
    if taken {
        return Err(Fault::invalid_argument(
            host.schema,
            "instanceUuid",
            format!("another VM has instance UUID {instance_uuid}"),
        ));
    }
    Ok(())
}
