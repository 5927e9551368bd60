//! The host's management interface as the API shows it: `vmk0` in `networkInfo.vnic` (what
//! Ansible's host facts and vSphere clients read as the host's address). It is the host
//! interface holding the IPv4 address vireod listens on or, when vireod listens on every
//! address, the one the default route leaves through; its address, netmask, MAC and MTU are
//! read from the kernel. Nothing here changes the host.

use std::net::{IpAddr, Ipv4Addr};

use super::ifreq::{ipv4_of, Ipv4Setting};

/// The VMkernel device name the management interface is shown as.
pub const MANAGEMENT_DEVICE: &str = "vmk0";

/// A host interface with its IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterface {
    /// The interface's name (`eth0`, `lo`).
    pub name: String,
    /// Its primary IPv4 address.
    pub address: Ipv4Addr,
    /// Its netmask.
    pub netmask: Ipv4Addr,
    /// Its MAC address (`00:00:00:00:00:00` for loopback).
    pub mac: String,
    /// Its MTU.
    pub mtu: u32,
}

/// The interface behind `listen` (vireod's listening address); None for IPv6 or when no
/// interface holds it.
pub fn management(listen: IpAddr) -> Option<HostInterface> {
    let IpAddr::V4(listen) = listen else {
        return None;
    };
    let name = if listen.is_unspecified() {
        default_route_interface()?
    } else {
        interfaces()
            .into_iter()
            .find(|name| ipv4_of(name, Ipv4Setting::Address) == Some(listen))?
    };
    Some(HostInterface {
        address: ipv4_of(&name, Ipv4Setting::Address)?,
        netmask: ipv4_of(&name, Ipv4Setting::Netmask)?,
        mac: sys_attribute(&name, "address")?,
        mtu: sys_attribute(&name, "mtu")?.parse().ok()?,
        name,
    })
}

/// Every interface of this network namespace.
fn interfaces() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

fn sys_attribute(name: &str, attribute: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/{attribute}"))
        .ok()
        .map(|text| text.trim().to_string())
}

/// The interface of the IPv4 default route, from /proc/net/route.
fn default_route_interface() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    default_route_in(&text)
}

/// The interface of the first route to 0.0.0.0/0 in /proc/net/route's text.
fn default_route_in(text: &str) -> Option<String> {
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [name, "00000000", _, _, _, _, _, "00000000", ..] => Some(name.to_string()),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_interface_is_read_from_the_route_table() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_in(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_in("Iface\tDestination\n"), None);
    }

    #[test]
    fn loopback_is_found_by_its_address() {
        let lo = management(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("lo holds 127.0.0.1");
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.netmask, Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(lo.mac, "00:00:00:00:00:00");
        assert!(lo.mtu > 0);
        assert_eq!(management("::1".parse().unwrap()), None);
    }
}
