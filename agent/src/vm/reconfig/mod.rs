//! ReconfigVM_Task, Rename_Task and UpgradeVM_Task: one pipeline for every change to a VM's
//! configuration.
//!
//! 1. every ConfigSpec field set must be one a module here reads (NotSupported otherwise);
//! 2. [`config::apply`] and [`device_change::plan`] build the VM's next configuration from a
//!    copy of the current one, refusing bad values (new disk files are made here);
//! 3. [`config::check`] and the checks across VMs (names, instance UUIDs) judge the change;
//! 4. the `.vmx` is written once (disks grown just before), and only then does the VM take the
//!    new configuration (removed disks' files go and NIC links change just after).
//!
//! A spec that fails anywhere leaves the VM, its `.vmx` and its files as they were.

pub mod allocation;
pub mod config;
pub mod settings;

use std::sync::Arc;

use vireo_api::{DataObject, Fault, Value};

use super::device_change::{self, DevicePlan};
use super::spec::VmSpec;
use super::{create, lifecycle, macs, properties, Vm};
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
    let changes = device_change::changes_of(host.schema, config);
    let (next, plan) = if changes.is_empty() {
        (next, None)
    } else {
        // Read before this VM's lock is taken (macs::in_use locks the others in turn).
        let used = macs::in_use(host, Some(vm.id));
        let plan = device_change::plan(host, vm, &vm.state(), next, &changes, used)?;
        (plan.spec.clone(), Some(plan))
    };
    // The new MACs stay claimed until the change is committed or has failed.
    let new_macs = next.nics.iter().map(|n| n.mac.clone());
    let new_macs = new_macs.filter(|mac| !now.nics.iter().any(|n| n.mac == *mac));
    let claim = macs::claim(host, Some(vm.id), &next.name, new_macs.collect());
    let claim = claim.map_err(|taken| macs::taken_fault(host.schema, &changes, &taken));
    let claim = match claim {
        Ok(claim) => claim,
        Err(fault) => {
            if let Some(plan) = plan {
                plan.abandon();
            }
            return Err(fault);
        }
    };
    let change = Change::Reconfigure(config);
    let committed = commit(host, vm, &now, next, user, change, plan);
    drop(claim);
    committed
}

/// Rename_Task: the VM's display name changes; its folder and files keep theirs (as on ESXi).
pub fn rename(host: &Arc<Host>, vm: &Arc<Vm>, name: &str, user: &str) -> Result<(), Fault> {
    let now = vm.state().spec.clone();
    let next = VmSpec {
        name: name.to_string(),
        ..now.clone()
    };
    commit(host, vm, &now, next, user, Change::Rename, None)
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
        return Err(crate::faults::already_upgraded(
            schema,
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
    commit(host, vm, &now, next, user, Change::Upgrade, None)
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
    plan: Option<DevicePlan>,
) -> Result<(), Fault> {
    match write_spec(host, vm, now, next, plan)? {
        Some(old_name) => post_events(host, vm, old_name, user, change),
        None => Ok(()),
    }
}

/// Judges the change, writes the `.vmx` once (with the device plan carried out around the
/// write) and lets the VM take `next`; returns the VM's old name, or None when nothing
/// changed. A failure abandons the plan.
fn write_spec(
    host: &Arc<Host>,
    vm: &Arc<Vm>,
    now: &VmSpec,
    next: VmSpec,
    plan: Option<DevicePlan>,
) -> Result<Option<String>, Fault> {
    let checked = check_across_vms(host, vm, now, &next);
    let mut state = vm.edit(host);
    let judged = checked.and_then(|()| {
        if state.removed || state.spec != *now {
            return Err(crate::faults::concurrent_access(
                host.schema,
                "The VM's configuration changed while this change was checked.",
            ));
        }
        config::check(host, now, &next, state.power)
    });
    let unchanged = next == state.spec && !plan.as_ref().is_some_and(DevicePlan::has_effects);
    let written = judged.and_then(|()| {
        if unchanged {
            return Ok(());
        }
        if let Some(plan) = &plan {
            plan.grow_disks(host, vm, &state)?;
            plan.change_media(host, vm, &mut state)?;
        }
        next.to_vmx()
            .write(&vm.vmx_file)
            .map_err(|e| create::io_fault(host.schema, &vm.vmx_path.to_string(), e))
    });
    if let Err(fault) = written {
        if let Some(plan) = plan {
            plan.abandon();
        }
        return Err(fault);
    }
    if unchanged {
        return Ok(None);
    }
    let old_name = std::mem::replace(&mut state.spec, next).name;
    crate::vm::cgroup::enforce_running(vm, &state);
    if let Some(plan) = plan {
        plan.finish(host, vm, &mut state)?;
    }
    Ok(Some(old_name))
}

/// DuplicateName and a taken instance UUID, judged against the other VMs.
fn check_across_vms(
    host: &Arc<Host>,
    vm: &Arc<Vm>,
    now: &VmSpec,
    next: &VmSpec,
) -> Result<(), Fault> {
    if next.name != now.name {
        create::check_new_name(host, &next.name, Some(vm))?;
    }
    if next.instance_uuid != now.instance_uuid {
        check_instance_uuid_free(host, vm, &next.instance_uuid)?;
    }
    Ok(())
}

/// The events of a committed change (after its properties were published).
fn post_events(
    host: &Arc<Host>,
    vm: &Arc<Vm>,
    old_name: String,
    user: &str,
    change: Change<'_>,
) -> Result<(), Fault> {
    let schema = host.schema;
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
            !config::FIELDS.contains(name)
                && *name != "deviceChange"
                && !allocation::FIELDS.contains(name)
                && !settings::spec_fields().any(|s| s == *name)
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
    Err(crate::faults::concurrent_access(
        schema,
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
