//! The API's view of the host's networking, projected from [`Switches`]: one `Network` object
//! per port group (`HaNetwork-<name>`, in `ha-folder-network`, listed by the datacenter, the
//! compute resource and the host), the `ha-network-system` HostNetworkSystem (networkInfo,
//! networkConfig, capabilities) and `HostSystem.config.network`. `vnic` holds the management
//! interface (`vmk0`, see [`super::vnic`]); `consoleVnic` is empty, as on every ESXi (service
//! console NICs were ESX classic's).

use vireo_api::schema::Schema;
use vireo_api::{DataObject, MoRef, Value};

use super::switches::{PortGroup, SecurityOverride, Switches, VSwitch};
use super::vnic::{self, HostInterface};
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::Inventory;

/// The HostNetworkSystem.
pub fn network_system() -> MoRef {
    MoRef::new("HostNetworkSystem", "ha-network-system")
}

/// The Network object of port group `name`.
pub fn network_of(name: &str) -> MoRef {
    MoRef::new("Network", format!("HaNetwork-{name}"))
}

/// Rewrites every networking object from `switches` (Network objects of removed port groups
/// go; their VMs' lists are kept from the VMs' own links).
pub fn publish(host: &Host, switches: &Switches) {
    let schema = host.schema;
    host.mutate(|inv| {
        let wanted: Vec<MoRef> = switches
            .portgroups
            .iter()
            .map(|p| network_of(&p.name))
            .collect();
        for stale in inv.all_of_type(schema, schema.known_type("Network")) {
            if !wanted.contains(&stale) {
                inv.remove(&stale);
            }
        }
        for portgroup in &switches.portgroups {
            network_object(schema, inv, portgroup);
        }
        for holder in [refs::datacenter(), refs::compute_resource(), refs::host()] {
            inv.set(schema, &holder, "network", Value::refs(schema, &wanted));
        }
        let folder = refs::network_folder();
        inv.set(schema, &folder, "childEntity", Value::refs(schema, &wanted));
        let management = vnic::management(host.config.listen.ip());
        let info = network_info(schema, switches, management.as_ref());
        let config = network_config(schema, switches);
        let system = network_system();
        if inv.get(&system).is_none() {
            inv.insert(schema, system.clone(), None);
            inv.set(schema, &system, "capabilities", capabilities(schema));
        }
        inv.set(schema, &system, "networkInfo", info.clone());
        inv.set(schema, &system, "networkConfig", config);
        set_host_config_network(schema, inv, info);
    });
}

fn network_object(schema: &Schema, inv: &mut Inventory, portgroup: &PortGroup) {
    let obj = network_of(&portgroup.name);
    if inv.get(&obj).is_none() {
        inv.insert(schema, obj.clone(), None);
        let green = Value::enumeration(schema, "ManagedEntityStatus", "green");
        let gray = Value::enumeration(schema, "ManagedEntityStatus", "gray");
        inv.set(schema, &obj, "parent", refs::network_folder());
        inv.set(schema, &obj, "overallStatus", green);
        inv.set(schema, &obj, "configStatus", gray);
        inv.set(schema, &obj, "alarmActionsEnabled", false);
        inv.set(schema, &obj, "vm", Value::refs(schema, []));
    }
    inv.set(schema, &obj, "name", portgroup.name.as_str());
    inv.set(schema, &obj, "host", Value::refs(schema, [&refs::host()]));
    inv.set(
        schema,
        &obj,
        "summary",
        DataObject::of(schema, "NetworkSummary")
            .with(schema, "network", obj.clone())
            .with(schema, "name", portgroup.name.as_str())
            .with(schema, "accessible", true),
    );
}

/// `config.network` and `configManager.networkSystem` of the HostSystem (set inside whatever
/// HostConfigInfo and HostConfigManager the host has).
fn set_host_config_network(schema: &Schema, inv: &mut Inventory, info: DataObject) {
    let host = refs::host();
    let stored = |inv: &Inventory, name| {
        inv.stored(schema, &host, name)
            .and_then(Value::as_data)
            .cloned()
    };
    if let Some(config) = stored(inv, "config") {
        inv.set(
            schema,
            &host,
            "config",
            config.with(schema, "network", info),
        );
    }
    let managers =
        stored(inv, "configManager").unwrap_or_else(|| DataObject::of(schema, "HostConfigManager"));
    inv.set(
        schema,
        &host,
        "configManager",
        managers.with(schema, "networkSystem", network_system()),
    );
}

/// A HostNetworkPolicy whose security policy has the fields `security` sets (ESXi's port groups
/// show an empty one when they override nothing).
fn policy(schema: &Schema, security: SecurityOverride) -> DataObject {
    let mut fields = DataObject::of(schema, "HostNetworkSecurityPolicy");
    for (name, value) in [
        ("allowPromiscuous", security.allow_promiscuous),
        ("macChanges", security.mac_changes),
        ("forgedTransmits", security.forged_transmits),
    ] {
        if let Some(value) = value {
            fields.set(schema, name, value);
        }
    }
    DataObject::of(schema, "HostNetworkPolicy").with(schema, "security", fields)
}

/// The HostVirtualSwitchSpec of a vSwitch.
pub fn vswitch_spec(schema: &Schema, vswitch: &VSwitch) -> DataObject {
    let mut spec = DataObject::of(schema, "HostVirtualSwitchSpec")
        .with(schema, "numPorts", vswitch.ports as i32)
        .with(schema, "policy", policy(schema, vswitch.security.into()))
        .with(schema, "mtu", vswitch.mtu as i32);
    if !vswitch.uplinks.is_empty() {
        let bridge = DataObject::of(schema, "HostVirtualSwitchBondBridge").with(
            schema,
            "nicDevice",
            Value::strings(schema, vswitch.uplinks.iter().map(String::as_str)),
        );
        spec.set(schema, "bridge", bridge);
    }
    spec
}

/// The HostPortGroupSpec of a port group.
pub fn portgroup_spec(schema: &Schema, portgroup: &PortGroup) -> DataObject {
    DataObject::of(schema, "HostPortGroupSpec")
        .with(schema, "name", portgroup.name.as_str())
        .with(schema, "vlanId", i32::from(portgroup.vlan))
        .with(schema, "vswitchName", portgroup.vswitch.as_str())
        .with(schema, "policy", policy(schema, portgroup.security))
}

fn vswitch_key(name: &str) -> String {
    format!("key-vim.host.VirtualSwitch-{name}")
}

fn portgroup_key(name: &str) -> String {
    format!("key-vim.host.PortGroup-{name}")
}

fn pnic_key(device: &str) -> String {
    format!("key-vim.host.PhysicalNic-{device}")
}

/// ESXi's port group of the management VMkernel NIC.
const MANAGEMENT_PORT_GROUP: &str = "Management Network";

/// The management interface as a HostVirtualNic (`vmk0`): its address, netmask, MAC and MTU as
/// the kernel has them (vireod does not know whether the host's own DHCP client set them).
fn management_vnic(schema: &Schema, switches: &Switches, interface: &HostInterface) -> DataObject {
    let portgroup = switches
        .portgroups
        .iter()
        .find(|p| p.name == MANAGEMENT_PORT_GROUP)
        .map_or("", |p| p.name.as_str());
    let ip = DataObject::of(schema, "HostIpConfig")
        .with(schema, "dhcp", false)
        .with(schema, "ipAddress", interface.address.to_string())
        .with(schema, "subnetMask", interface.netmask.to_string());
    let spec = DataObject::of(schema, "HostVirtualNicSpec")
        .with(schema, "ip", ip)
        .with(schema, "mac", interface.mac.as_str())
        .with(schema, "mtu", interface.mtu as i32);
    DataObject::of(schema, "HostVirtualNic")
        .with(schema, "device", vnic::MANAGEMENT_DEVICE)
        .with(
            schema,
            "key",
            format!("key-vim.host.VirtualNic-{}", vnic::MANAGEMENT_DEVICE),
        )
        .with(schema, "portgroup", portgroup)
        .with(schema, "spec", spec)
}

fn network_info(
    schema: &Schema,
    switches: &Switches,
    management: Option<&HostInterface>,
) -> DataObject {
    let vswitches: Vec<Value> = switches
        .vswitches
        .iter()
        .map(|vswitch| {
            let groups = switches
                .portgroups
                .iter()
                .filter(|p| p.vswitch == vswitch.name)
                .map(|p| portgroup_key(&p.name));
            let pnics = vswitch.uplinks.iter().map(|u| pnic_key(u));
            DataObject::of(schema, "HostVirtualSwitch")
                .with(schema, "name", vswitch.name.as_str())
                .with(schema, "key", vswitch_key(&vswitch.name))
                .with(schema, "numPorts", vswitch.ports as i32)
                .with(schema, "numPortsAvailable", vswitch.ports as i32)
                .with(schema, "mtu", vswitch.mtu as i32)
                .with(schema, "portgroup", Value::strings(schema, groups))
                .with(schema, "pnic", Value::strings(schema, pnics))
                .with(schema, "spec", vswitch_spec(schema, vswitch))
                .into()
        })
        .collect();
    let portgroups: Vec<Value> = switches
        .portgroups
        .iter()
        .map(|portgroup| {
            let computed = switches.security_of(portgroup).into();
            DataObject::of(schema, "HostPortGroup")
                .with(schema, "key", portgroup_key(&portgroup.name))
                .with(schema, "vswitch", vswitch_key(&portgroup.vswitch))
                .with(schema, "computedPolicy", policy(schema, computed))
                .with(schema, "spec", portgroup_spec(schema, portgroup))
                .into()
        })
        .collect();
    let pnics: Vec<Value> = switches
        .vswitches
        .iter()
        .flat_map(|v| v.uplinks.iter())
        .map(|device| physical_nic(schema, device).into())
        .collect();
    DataObject::of(schema, "HostNetworkInfo")
        .with(
            schema,
            "vswitch",
            Value::Array(schema.known_type("HostVirtualSwitch"), vswitches),
        )
        .with(
            schema,
            "portgroup",
            Value::Array(schema.known_type("HostPortGroup"), portgroups),
        )
        .with(
            schema,
            "pnic",
            Value::Array(schema.known_type("PhysicalNic"), pnics),
        )
        .with(
            schema,
            "vnic",
            Value::Array(
                schema.known_type("HostVirtualNic"),
                management
                    .map(|interface| management_vnic(schema, switches, interface).into())
                    .into_iter()
                    .collect(),
            ),
        )
        .with(
            schema,
            "consoleVnic",
            Value::Array(schema.known_type("HostVirtualNic"), Vec::new()),
        )
}

/// An uplink as a PhysicalNic: its device name and the MAC the host reads for it.
fn physical_nic(schema: &Schema, device: &str) -> DataObject {
    let mac = std::fs::read_to_string(format!("/sys/class/net/{device}/address"))
        .map(|text| text.trim().to_string())
        .unwrap_or_default();
    DataObject::of(schema, "PhysicalNic")
        .with(schema, "key", pnic_key(device))
        .with(schema, "device", device)
        .with(schema, "pci", "")
        .with(schema, "mac", mac)
        .with(schema, "spec", DataObject::of(schema, "PhysicalNicSpec"))
        .with(schema, "wakeOnLanSupported", false)
}

fn network_config(schema: &Schema, switches: &Switches) -> DataObject {
    let vswitches: Vec<Value> = switches
        .vswitches
        .iter()
        .map(|v| {
            DataObject::of(schema, "HostVirtualSwitchConfig")
                .with(schema, "name", v.name.as_str())
                .with(schema, "spec", vswitch_spec(schema, v))
                .into()
        })
        .collect();
    let portgroups: Vec<Value> = switches
        .portgroups
        .iter()
        .map(|p| {
            DataObject::of(schema, "HostPortGroupConfig")
                .with(schema, "spec", portgroup_spec(schema, p))
                .into()
        })
        .collect();
    DataObject::of(schema, "HostNetworkConfig")
        .with(
            schema,
            "vswitch",
            Value::Array(schema.known_type("HostVirtualSwitchConfig"), vswitches),
        )
        .with(
            schema,
            "portgroup",
            Value::Array(schema.known_type("HostPortGroupConfig"), portgroups),
        )
}

fn capabilities(schema: &Schema) -> DataObject {
    DataObject::of(schema, "HostNetCapabilities")
        .with(schema, "canSetPhysicalNicLinkSpeed", false)
        .with(schema, "supportsNicTeaming", false)
        .with(schema, "supportsVlan", true)
        .with(schema, "usesServiceConsoleNic", false)
        .with(schema, "supportsNetworkHints", false)
        .with(schema, "maxPortGroupsPerVswitch", 512)
        .with(schema, "vswitchConfigSupported", true)
        .with(schema, "vnicConfigSupported", false)
        .with(schema, "ipRouteConfigSupported", false)
        .with(schema, "dnsConfigSupported", false)
        .with(schema, "dhcpOnVnicSupported", false)
        .with(schema, "ipV6Supported", false)
}
