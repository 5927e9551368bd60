//! guest (GuestInfo with its NICs) and summary.guest, from what the guest tools last said and
//! the DHCP leases vireod's dnsmasq holds for the VM's NICs (`network::leases`): a leased
//! address carries origin `dhcp` and its lease's end; a NIC the tools say nothing of (no tools,
//! or none running) is shown with its leased address in state `unknown`, and that address is
//! `ipAddress` when the tools give none.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Value};

use super::devices::NIC_KEY;
use super::enum_value;
use crate::host::Host;
use crate::vm::network::leases::Lease;
use crate::vm::{guest_os, Power, VmState};

pub(super) fn guest_full_name(state: &VmState) -> String {
    state
        .tools
        .info
        .as_ref()
        .map(|i| i.os_name.clone())
        .unwrap_or_else(|| guest_os::full_name(&state.spec.guest_id))
}

/// guest.toolsStatus and guest.toolsRunningStatus.
pub(super) fn tools_status(state: &VmState) -> (&'static str, &'static str) {
    match (&state.tools.version, state.tools.running) {
        (Some(_), true) => ("toolsOk", "guestToolsRunning"),
        (Some(_), false) => ("toolsNotRunning", "guestToolsNotRunning"),
        (None, _) => ("toolsNotInstalled", "guestToolsNotRunning"),
    }
}

/// A tools version (`major.minor.patch`) as VMware numbers them in guest.toolsVersion:
/// `major << 10 | minor << 5 | patch`; None when it is not one.
fn version_number(version: &str) -> Option<u32> {
    let parts: Vec<u32> = version
        .trim()
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    match parts[..] {
        [major, minor, patch] if minor < 32 && patch < 32 => {
            Some(major.checked_mul(1024)? + minor * 32 + patch)
        }
        _ => None,
    }
}

/// The tools version this host installs: its tools ISO's, else (no ISO) that of the
/// vireo-tools it was built with.
pub(super) fn offered_tools_version(host: &Host) -> &str {
    host.tools_image
        .as_ref()
        .map_or(vireo_tools::protocol::TOOLS_VERSION, |image| {
            image.version.as_str()
        })
}

/// guest.toolsVersionStatus2: the guest's tools compared with the `offered` ones.
fn tools_version_status(state: &VmState, offered: &str) -> &'static str {
    match &state.tools.version {
        Some(version) => compare_versions(version, offered),
        None => "guestToolsNotInstalled",
    }
}

/// The VirtualMachineToolsVersionStatus of a guest's tools `guest` beside the host's `host`.
fn compare_versions(guest: &str, host: &str) -> &'static str {
    match (version_number(guest), version_number(host)) {
        (Some(guest), Some(host)) if guest == host => "guestToolsCurrent",
        (Some(guest), Some(host)) if guest < host => "guestToolsNeedUpgrade",
        (Some(_), Some(_)) => "guestToolsTooNew",
        _ => "guestToolsUnmanaged",
    }
}

/// guest.toolsVersionStatus (the older field): no "too new" there.
fn old_tools_version_status(state: &VmState, offered: &str) -> &'static str {
    match tools_version_status(state, offered) {
        "guestToolsTooNew" => "guestToolsUnmanaged",
        status => status,
    }
}

/// The guest tools' facts, while they run.
fn tools_info(state: &VmState) -> Option<&vireo_tools::protocol::GuestInfo> {
    state.tools.info.as_ref().filter(|_| state.tools.running)
}

/// The leases of the VM's NICs while it runs.
fn leases(state: &VmState) -> &[Lease] {
    match state.power {
        Power::On => &state.leases,
        _ => &[],
    }
}

/// The address clients show: the tools' first IPv4, else their first non-link-local address,
/// else the first address leased to one of its NICs.
pub(super) fn primary_ip(state: &VmState) -> Option<String> {
    let reported = tools_info(state).and_then(|info| {
        let all: Vec<&str> = info
            .nics
            .iter()
            .flat_map(|n| n.ips.iter())
            .map(|ip| ip.split('/').next().unwrap_or(ip))
            .collect();
        all.iter()
            .find(|ip| ip.contains('.'))
            .or_else(|| all.iter().find(|ip| !ip.starts_with("fe80")))
            .map(|ip| ip.to_string())
    });
    reported.or_else(|| leases(state).first().map(|lease| lease.ip.to_string()))
}

/// `object` (a GuestInfo or a guest summary) with the tools' status, running status and
/// version status against the `offered` version.
fn with_tools_status(
    object: DataObject,
    schema: &Schema,
    state: &VmState,
    offered: &str,
) -> DataObject {
    let (status, running) = tools_status(state);
    object
        .with(
            schema,
            "toolsStatus",
            enum_value(schema, "VirtualMachineToolsStatus", status),
        )
        .with(schema, "toolsRunningStatus", running)
        .with(
            schema,
            "toolsVersionStatus",
            old_tools_version_status(state, offered),
        )
        .with(
            schema,
            "toolsVersionStatus2",
            tools_version_status(state, offered),
        )
}

/// guest, with the tools compared with the `offered` version.
pub(super) fn guest_info(schema: &Schema, state: &VmState, offered: &str) -> DataObject {
    let mut guest = with_tools_status(DataObject::of(schema, "GuestInfo"), schema, state, offered)
        .with(schema, "guestId", state.spec.guest_id.as_str())
        .with(
            schema,
            "guestState",
            if state.power == Power::On {
                "running"
            } else {
                "notRunning"
            },
        )
        .with(schema, "appHeartbeatStatus", "appStatusGray")
        .with(schema, "guestOperationsReady", false)
        .with(schema, "interactiveGuestOperationsReady", false)
        .with(schema, "guestStateChangeSupported", state.tools.running);
    if let Some(number) = state.tools.version.as_deref().and_then(version_number) {
        guest.set(schema, "toolsVersion", number.to_string());
    }
    let info = tools_info(state);
    if let Some(info) = info {
        guest.set(schema, "guestFullName", info.os_name.as_str());
        guest.set(schema, "guestFamily", format!("{}Guest", info.os_family));
        guest.set(schema, "hostName", info.hostname.as_str());
    }
    if let Some(ip) = primary_ip(state) {
        guest.set(schema, "ipAddress", ip);
    }
    let reported = info.map(|info| info.nics.as_slice()).unwrap_or_default();
    let mut nics: Vec<Value> = reported
        .iter()
        .map(|nic| guest_nic(schema, state, nic).into())
        .collect();
    let silent = |lease: &&Lease| {
        let told = |nic: &&vireo_tools::protocol::NicInfo| nic.mac.eq_ignore_ascii_case(&lease.mac);
        reported
            .iter()
            .find(told)
            .is_none_or(|nic| nic.ips.is_empty())
    };
    nics.extend(
        leases(state)
            .iter()
            .filter(silent)
            .map(|lease| leased_nic(schema, state, lease).into()),
    );
    if info.is_some() || !nics.is_empty() {
        guest.set(
            schema,
            "net",
            Value::Array(schema.known_type("GuestNicInfo"), nics),
        );
    }
    guest
}

/// One NetIpConfigInfoIpAddress: `ip` (`address/prefix`), `dhcp` with its lease's end when a
/// lease of `mac` holds it.
fn ip_config_address(schema: &Schema, state: &VmState, mac: &str, ip: &str, status: &str) -> Value {
    let (address, prefix) = ip.split_once('/').unwrap_or((ip, "0"));
    let mut config = DataObject::of(schema, "NetIpConfigInfoIpAddress")
        .with(schema, "ipAddress", address)
        .with(schema, "prefixLength", prefix.parse::<i32>().unwrap_or(0))
        .with(schema, "state", status);
    let leased = leases(state)
        .iter()
        .find(|lease| lease.mac.eq_ignore_ascii_case(mac) && lease.ip.to_string() == address);
    if let Some(lease) = leased {
        config.set(schema, "origin", "dhcp");
        if let Some(end) = lease.expires {
            config.set(schema, "lifetime", Value::DateTime(end * 1_000_000));
        }
    }
    config.into()
}

/// A GuestNicInfo for the NIC (of the VM's spec) `lease` was given to, which the tools do not
/// report: its leased address (a NAT network's /24), in state `unknown`.
fn leased_nic(schema: &Schema, state: &VmState, lease: &Lease) -> DataObject {
    let ip = lease.ip.to_string();
    let address = ip_config_address(schema, state, &lease.mac, &format!("{ip}/24"), "unknown");
    nic_info(schema, state, &lease.mac, &[ip.as_str()], vec![address])
}

pub(super) fn guest_nic(
    schema: &Schema,
    state: &VmState,
    nic: &vireo_tools::protocol::NicInfo,
) -> DataObject {
    let addresses: Vec<Value> = nic
        .ips
        .iter()
        .map(|ip| ip_config_address(schema, state, &nic.mac, ip, "preferred"))
        .collect();
    let ips: Vec<&str> = nic
        .ips
        .iter()
        .map(|ip| ip.split('/').next().unwrap_or(ip))
        .collect();
    nic_info(schema, state, &nic.mac, &ips, addresses)
}

/// A GuestNicInfo of the card with `mac`: `ips`, their `addresses` (NetIpConfigInfoIpAddress),
/// and its device and port group when a card of the VM has that MAC.
fn nic_info(
    schema: &Schema,
    state: &VmState,
    mac: &str,
    ips: &[&str],
    addresses: Vec<Value>,
) -> DataObject {
    let device = state
        .spec
        .nics
        .iter()
        .position(|n| n.mac.eq_ignore_ascii_case(mac));
    let mut info = DataObject::of(schema, "GuestNicInfo")
        .with(schema, "ipAddress", Value::strings(schema, ips))
        .with(schema, "macAddress", mac)
        .with(schema, "connected", true)
        .with(
            schema,
            "deviceConfigId",
            device.map_or(-1, |n| NIC_KEY + n as i32),
        )
        .with(
            schema,
            "ipConfig",
            DataObject::of(schema, "NetIpConfigInfo").with(
                schema,
                "ipAddress",
                Value::Array(schema.known_type("NetIpConfigInfoIpAddress"), addresses),
            ),
        );
    if let Some(n) = device {
        info.set(schema, "network", state.spec.nics[n].network.as_str());
    }
    info
}

/// summary.guest, with the tools compared with the `offered` version.
pub(super) fn guest_summary(schema: &Schema, state: &VmState, offered: &str) -> DataObject {
    let summary = DataObject::of(schema, "VirtualMachineGuestSummary")
        .with(schema, "guestId", state.spec.guest_id.as_str())
        .with(schema, "guestFullName", guest_full_name(state));
    let mut summary = with_tools_status(summary, schema, state, offered);
    if let Some(info) = state.tools.info.as_ref().filter(|_| state.tools.running) {
        summary.set(schema, "hostName", info.hostname.as_str());
    }
    if let Some(ip) = primary_ip(state) {
        summary.set(schema, "ipAddress", ip);
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::{compare_versions, version_number};

    #[test]
    fn guest_tools_compare_with_the_host_s() {
        assert_eq!(compare_versions("0.1.0", "0.1.0"), "guestToolsCurrent");
        assert_eq!(compare_versions("0.0.9", "0.1.0"), "guestToolsNeedUpgrade");
        assert_eq!(compare_versions("1.0.0", "0.1.0"), "guestToolsTooNew");
        assert_eq!(
            compare_versions("open-vm-tools", "0.1.0"),
            "guestToolsUnmanaged"
        );
    }

    #[test]
    fn tools_versions_are_numbered_as_vmware_numbers_them() {
        assert_eq!(version_number("12.1.5"), Some(12325));
        assert_eq!(version_number("0.1.0"), Some(32));
        for refused in ["", "1.2", "1.2.3.4", "1.32.0", "x.1.0", "1.0.-1"] {
            assert_eq!(version_number(refused), None, "{refused}");
        }
    }
}
