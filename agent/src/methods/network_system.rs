//! HostNetworkSystem: standard vSwitches and port groups (Add/Update/Remove for both, and
//! UpdateNetworkConfig's vSwitch and port group changes in one go), RefreshNetworkSystem,
//! QueryNetworkHint. Each change is checked against the model
//! (`vm::network::switches`), made on the host (bridges, VLANs, uplinks), kept, and published.
//! A port group that a powered-on VM's NIC is on cannot be removed (ResourceInUse).

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::faults::{already_exists, host_config_fault, resource_in_use};
use crate::locks::lock;
use crate::vm::network::switches::{
    PortGroup, Security, SecurityOverride, SwitchError, Switches, VSwitch,
};
use crate::vm::network::{objects, Network};
use crate::vm::Power;

/// HostNetworkSystem's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostNetworkSystem",
    methods: &[
        ("AddVirtualSwitch", Handler::Sync(add_virtual_switch)),
        ("UpdateVirtualSwitch", Handler::Sync(update_virtual_switch)),
        ("RemoveVirtualSwitch", Handler::Sync(remove_virtual_switch)),
        ("AddPortGroup", Handler::Sync(add_port_group)),
        ("UpdatePortGroup", Handler::Sync(update_port_group)),
        ("RemovePortGroup", Handler::Sync(remove_port_group)),
        ("UpdateNetworkConfig", Handler::Sync(update_network_config)),
        ("RefreshNetworkSystem", Handler::Sync(refresh)),
        ("QueryNetworkHint", Handler::Sync(query_network_hint)),
    ],
};

/// Why a change failed on the host itself.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    /// The model refused it.
    #[error(transparent)]
    Model(#[from] SwitchError),
    /// The host's network refused it.
    #[error(transparent)]
    Host(#[from] crate::vm::network::NetworkError),
    /// The instance id could not be read.
    #[error(transparent)]
    Instance(#[from] crate::vm::network::InstanceError),
}

/// Runs `change` on a copy of the model, applies the result to the host, keeps and publishes
/// it; on any failure the model stays as it was.
fn change(
    call: &Call<'_>,
    change: impl FnOnce(&mut Switches, Network) -> Result<(), ApplyError>,
) -> MethodResult {
    let host = call.host;
    let mut switches = lock(&host.switches);
    let mut next = switches.clone();
    let network = Network::of(&host.config.data_dir).map_err(|e| fault(call.schema, e.into()))?;
    change(&mut next, network).map_err(|e| fault(call.schema, e))?;
    next.save(&host.config.data_dir)
        .map_err(|e| fault(call.schema, e.into()))?;
    *switches = next;
    objects::publish(host, &switches);
    // Running VMs' ports follow their port group's policy (VM locks taken without this one).
    let current = switches.clone();
    drop(switches);
    crate::vm::network::security::refresh(host, &current);
    Ok(None)
}

fn fault(schema: &Schema, error: ApplyError) -> Fault {
    match error {
        ApplyError::Model(SwitchError::AlreadyExists { ref name, .. }) => {
            already_exists(schema, name, error.to_string())
        }
        ApplyError::Model(SwitchError::NotFound { .. }) => {
            Fault::not_found(schema, error.to_string())
        }
        ApplyError::Model(SwitchError::InUse { kind, ref name, .. }) => {
            let ty = match kind {
                "vSwitch" => "HostVirtualSwitch",
                "port group" => "HostPortGroup",
                _ => "PhysicalNic",
            };
            resource_in_use(schema, ty, name, error.to_string())
        }
        ApplyError::Model(SwitchError::Invalid { field, .. }) => {
            Fault::invalid_argument(schema, field, error.to_string())
        }
        other => host_config_fault(schema, other.to_string()),
    }
}

fn add_virtual_switch(call: &Call<'_>) -> MethodResult {
    let name = call.str_arg("vswitchName")?.to_string();
    let spec = call.arg("spec").and_then(Value::as_data);
    let vswitch = vswitch_from(call.schema, name, spec, None);
    change(call, |switches, network| {
        add_vswitch(switches, network, vswitch)
    })
}

fn update_virtual_switch(call: &Call<'_>) -> MethodResult {
    let name = call.str_arg("vswitchName")?.to_string();
    let spec = call.arg("spec").and_then(Value::as_data);
    change(call, |switches, network| {
        update_vswitch(call.schema, switches, network, &name, spec)
    })
}

fn remove_virtual_switch(call: &Call<'_>) -> MethodResult {
    let name = call.str_arg("vswitchName")?.to_string();
    change(call, |switches, network| {
        remove_vswitch(switches, network, name)
    })
}

/// Adds `vswitch` to the model and makes its bridge.
fn add_vswitch(
    switches: &mut Switches,
    network: Network,
    vswitch: VSwitch,
) -> Result<(), ApplyError> {
    let added = switches.add_vswitch(vswitch)?;
    network.ensure_switch(added, &[])?;
    Ok(())
}

/// Changes vSwitch `name` to what `spec` sets (the rest stays) and its bridge with it.
fn update_vswitch(
    schema: &Schema,
    switches: &mut Switches,
    network: Network,
    name: &str,
    spec: Option<&DataObject>,
) -> Result<(), ApplyError> {
    let current = switches.vswitch(name)?.clone();
    let update = vswitch_from(schema, name.to_string(), spec, Some(&current));
    switches.update_vswitch(name, update)?;
    ensure(switches, network, name)
}

/// Removes vSwitch `name` (not the default bridge's) and its bridge.
fn remove_vswitch(
    switches: &mut Switches,
    network: Network,
    name: String,
) -> Result<(), ApplyError> {
    let removed = switches.remove_vswitch(&name)?;
    if removed.slot == 0 {
        return Err(SwitchError::InUse {
            kind: "vSwitch",
            name,
            by: "the host's default bridge".into(),
        }
        .into());
    }
    network.remove_switch(removed.slot)?;
    Ok(())
}

/// One `changeOperation` of a HostNetworkConfig entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Operation {
    Add,
    Edit,
    Remove,
}

/// An entry's changeOperation (required in modify mode).
fn operation_of(
    schema: &Schema,
    entry: &DataObject,
    field: &'static str,
) -> Result<Operation, Fault> {
    match entry.get(schema, "changeOperation").and_then(Value::as_str) {
        Some("add") => Ok(Operation::Add),
        Some("edit") => Ok(Operation::Edit),
        Some("remove") => Ok(Operation::Remove),
        other => Err(Fault::invalid_argument(
            schema,
            field,
            format!("changeOperation {other:?} is not add, edit or remove"),
        )),
    }
}

/// UpdateNetworkConfig in `modify` mode: its vSwitch and port group changes, checked and made
/// as one change (vSwitches added or edited first, then port groups, then vSwitches removed).
/// Other parts of a HostNetworkConfig (physical NICs, VMkernel NICs, DNS, routes...) belong
/// to the machine and are refused, as is `replace` mode.
fn update_network_config(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let config = call.arg("config").and_then(Value::as_data).ok_or_else(|| {
        Fault::invalid_argument(schema, "config", "a HostNetworkConfig is required")
    })?;
    let mode = call.str_arg("changeMode")?;
    if mode != "modify" {
        return Err(Fault::not_supported(
            schema,
            format!("changeMode {mode}: this host applies network changes in modify mode only"),
        ));
    }
    let set: Vec<&str> = schema
        .fields(config.ty)
        .iter()
        .zip(&config.fields)
        .filter(|(_, value)| value.is_some())
        .map(|(field, _)| &*field.name)
        .filter(|name| !matches!(*name, "vswitch" | "portgroup"))
        .collect();
    if !set.is_empty() {
        return Err(crate::faults::machine_owned(
            schema,
            &format!("The host's {}", set.join(", ")),
        ));
    }
    let entries = |field: &str| -> Vec<&DataObject> {
        let items = config
            .get(schema, field)
            .map(Value::items)
            .unwrap_or_default();
        items.iter().filter_map(Value::as_data).collect()
    };
    let mut vswitches = Vec::new();
    for entry in entries("vswitch") {
        let operation = operation_of(schema, entry, "config.vswitch")?;
        let name = entry
            .get(schema, "name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let spec = entry.get(schema, "spec").and_then(Value::as_data);
        vswitches.push((operation, name.to_string(), spec));
    }
    let mut portgroups = Vec::new();
    for entry in entries("portgroup") {
        let operation = operation_of(schema, entry, "config.portgroup")?;
        let portgroup = portgroup_of(schema, entry.get(schema, "spec").and_then(Value::as_data))?;
        if operation != Operation::Add {
            refuse_if_used(call, &portgroup.name)?;
        }
        portgroups.push((operation, portgroup));
    }
    change(call, |switches, network| {
        for (operation, name, spec) in &vswitches {
            match operation {
                Operation::Add => {
                    let vswitch = vswitch_from(schema, name.clone(), *spec, None);
                    add_vswitch(switches, network, vswitch)?;
                }
                Operation::Edit => update_vswitch(schema, switches, network, name, *spec)?,
                Operation::Remove => {}
            }
        }
        for (operation, portgroup) in &portgroups {
            let vswitch = portgroup.vswitch.clone();
            match operation {
                Operation::Add => switches.add_portgroup(portgroup.clone())?,
                Operation::Edit => switches.update_portgroup(&portgroup.name, portgroup.clone())?,
                Operation::Remove => drop(switches.remove_portgroup(&portgroup.name)?),
            }
            if switches.vswitch(&vswitch).is_ok() {
                ensure(switches, network, &vswitch)?;
            }
        }
        for (operation, name, _) in &vswitches {
            if *operation == Operation::Remove {
                remove_vswitch(switches, network, name.clone())?;
            }
        }
        Ok(())
    })?;
    Ok(Some(
        DataObject::of(schema, "HostNetworkConfigResult").into(),
    ))
}

/// Makes vSwitch `name`'s bridge match the model.
fn ensure(switches: &Switches, network: Network, name: &str) -> Result<(), ApplyError> {
    let vswitch = switches.vswitch(name)?;
    network.ensure_switch(vswitch, &switches.vlans_on(name))?;
    Ok(())
}

fn add_port_group(call: &Call<'_>) -> MethodResult {
    let portgroup = portgroup_from(call)?;
    change(call, |switches, network| {
        let vswitch = portgroup.vswitch.clone();
        switches.add_portgroup(portgroup)?;
        ensure(switches, network, &vswitch)
    })
}

fn update_port_group(call: &Call<'_>) -> MethodResult {
    let name = call.str_arg("pgName")?.to_string();
    let portgroup = portgroup_from(call)?;
    if portgroup.name != name {
        refuse_if_used(call, &name)?;
    }
    change(call, |switches, network| {
        let vswitch = portgroup.vswitch.clone();
        switches.update_portgroup(&name, portgroup)?;
        ensure(switches, network, &vswitch)
    })
}

fn remove_port_group(call: &Call<'_>) -> MethodResult {
    let name = call.str_arg("pgName")?.to_string();
    refuse_if_used(call, &name)?;
    change(call, |switches, _| {
        switches.remove_portgroup(&name)?;
        Ok(())
    })
}

/// ResourceInUse if a powered-on VM has a NIC on port group `name`.
fn refuse_if_used(call: &Call<'_>, name: &str) -> Result<(), Fault> {
    let users: Vec<String> = call
        .host
        .vms
        .all()
        .iter()
        .filter_map(|vm| {
            let state = vm.state();
            let on = state.power == Power::On && state.spec.nics.iter().any(|n| n.network == name);
            on.then(|| state.spec.name.clone())
        })
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    Err(resource_in_use(
        call.schema,
        "Network",
        name,
        format!(
            "port group {name} is in use by the running VMs {}",
            users.join(", ")
        ),
    ))
}

fn refresh(call: &Call<'_>) -> MethodResult {
    let switches = lock(&call.host.switches);
    let network = Network::of(&call.host.config.data_dir)
        .map_err(|e| host_config_fault(call.schema, e.to_string()))?;
    crate::vm::network::reconcile_switches(network, &switches)
        .map_err(|e| host_config_fault(call.schema, e.to_string()))?;
    objects::publish(call.host, &switches);
    Ok(None)
}

/// One PhysicalNicHintInfo per uplink asked for (every uplink when none is named): vireod
/// observes no CDP/LLDP or subnet hints, so each carries only its device.
fn query_network_hint(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let switches = lock(&call.host.switches);
    let uplinks: Vec<&String> = switches
        .vswitches
        .iter()
        .flat_map(|v| v.uplinks.iter())
        .collect();
    let asked: Vec<String> = call
        .arg("device")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    for device in &asked {
        if !uplinks.contains(&device) {
            return Err(Fault::not_found(
                schema,
                format!("no physical NIC {device}"),
            ));
        }
    }
    let hints: Vec<Value> = uplinks
        .into_iter()
        .filter(|u| asked.is_empty() || asked.contains(u))
        .map(|device| {
            DataObject::of(schema, "PhysicalNicHintInfo")
                .with(schema, "device", device.as_str())
                .into()
        })
        .collect();
    Ok(Some(Value::Array(
        schema.known_type("PhysicalNicHintInfo"),
        hints,
    )))
}

/// A vSwitch from a HostVirtualSwitchSpec (absent fields, security ones included: `current`'s,
/// else ESXi's defaults).
fn vswitch_from(
    schema: &Schema,
    name: String,
    spec: Option<&DataObject>,
    current: Option<&VSwitch>,
) -> VSwitch {
    let int = |field: &str| {
        spec.and_then(|s| s.get(schema, field))
            .and_then(Value::as_i64)
            .map(|n| u32::try_from(n).unwrap_or(0))
    };
    let uplinks = spec
        .and_then(|s| s.get(schema, "bridge"))
        .and_then(Value::as_data)
        .and_then(|b| b.get(schema, "nicDevice"))
        .map(|devices| {
            devices
                .items()
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        });
    let security = spec
        .and_then(|s| s.get(schema, "policy"))
        .and_then(Value::as_data)
        .and_then(|p| security_from(schema, p))
        .unwrap_or_default();
    VSwitch {
        name,
        slot: current.map_or(0, |c| c.slot),
        ports: int("numPorts").or(current.map(|c| c.ports)).unwrap_or(128),
        mtu: int("mtu").or(current.map(|c| c.mtu)).unwrap_or(1500),
        uplinks: uplinks
            .or_else(|| current.map(|c| c.uplinks.clone()))
            .unwrap_or_default(),
        security: security.over(current.map_or(Security::STRICT, |c| c.security)),
    }
}

/// The security part of a HostNetworkPolicy (unset booleans stay unset).
fn security_from(schema: &Schema, policy: &DataObject) -> Option<SecurityOverride> {
    let security = policy.get(schema, "security")?.as_data()?;
    let flag = |name: &str| security.get(schema, name).and_then(Value::as_bool);
    Some(SecurityOverride {
        allow_promiscuous: flag("allowPromiscuous"),
        mac_changes: flag("macChanges"),
        forged_transmits: flag("forgedTransmits"),
    })
}

/// The `portgrp` HostPortGroupSpec.
fn portgroup_from(call: &Call<'_>) -> Result<PortGroup, Fault> {
    portgroup_of(call.schema, call.arg("portgrp").and_then(Value::as_data))
}

/// The port group a HostPortGroupSpec describes.
fn portgroup_of(schema: &Schema, spec: Option<&DataObject>) -> Result<PortGroup, Fault> {
    let spec = spec.ok_or_else(|| {
        Fault::invalid_argument(schema, "portgrp", "a HostPortGroupSpec is required")
    })?;
    let text = |name: &str| {
        spec.get(schema, name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                Fault::invalid_argument(schema, "portgrp", format!("portgrp.{name} is required"))
            })
    };
    let vlan = spec
        .get(schema, "vlanId")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let vlan = u16::try_from(vlan)
        .map_err(|_| Fault::invalid_argument(schema, "portgrp.vlanId", format!("{vlan}")))?;
    Ok(PortGroup {
        name: text("name")?,
        vswitch: text("vswitchName")?,
        vlan,
        security: spec
            .get(schema, "policy")
            .and_then(Value::as_data)
            .and_then(|p| security_from(schema, p))
            .unwrap_or_default(),
    })
}
