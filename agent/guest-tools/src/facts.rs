//! What the guest reports about itself: host name (/proc/sys/kernel/hostname), OS name
//! (/etc/os-release) and, from getifaddrs (nix's), each non-loopback interface's MAC and addresses.

use std::collections::BTreeMap;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::SockaddrStorage;

use crate::protocol::{GuestInfo, NicInfo};

/// Reads the guest's current facts.
pub fn read_guest_info() -> GuestInfo {
    GuestInfo {
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        os_name: os_pretty_name(
            &std::fs::read_to_string("/etc/os-release")
                .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
                .unwrap_or_default(),
        ),
        os_family: "linux".into(),
        nics: interfaces(),
    }
}

/// `PRETTY_NAME` (else `NAME`, else "Linux") from os-release text.
fn os_pretty_name(os_release: &str) -> String {
    let field = |key: &str| {
        os_release.lines().find_map(|line| {
            line.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
    };
    field("PRETTY_NAME")
        .or_else(|| field("NAME"))
        .unwrap_or_else(|| "Linux".into())
}

/// Every interface but loopback, by name, with its MAC and addresses.
fn interfaces() -> Vec<NicInfo> {
    let mut nics: BTreeMap<String, NicInfo> = BTreeMap::new();
    let Ok(entries) = getifaddrs() else {
        return Vec::new();
    };
    for entry in entries {
        if entry.flags.contains(InterfaceFlags::IFF_LOOPBACK) {
            continue;
        }
        let Some(address) = entry.address else {
            continue;
        };
        let name = entry.interface_name;
        let nic = nics.entry(name.clone()).or_insert_with(|| NicInfo {
            name,
            ..NicInfo::default()
        });
        describe_address(&address, entry.netmask.as_ref(), nic);
    }
    nics.into_values().collect()
}

/// Adds the MAC (a link address) or address/prefix (IPv4, IPv6) of one interface address.
fn describe_address(
    address: &SockaddrStorage,
    netmask: Option<&SockaddrStorage>,
    nic: &mut NicInfo,
) {
    if let Some(link) = address.as_link_addr() {
        if let Some(mac) = link.addr().filter(|_| link.halen() == 6) {
            nic.mac = mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
        }
    } else if let Some(v4) = address.as_sockaddr_in() {
        let prefix = netmask
            .and_then(SockaddrStorage::as_sockaddr_in)
            .map_or(32, |mask| mask.ip().to_bits().count_ones());
        nic.ips.push(format!("{}/{prefix}", v4.ip()));
    } else if let Some(v6) = address.as_sockaddr_in6() {
        let prefix = netmask
            .and_then(SockaddrStorage::as_sockaddr_in6)
            .map_or(128, |mask| mask.ip().to_bits().count_ones());
        nic.ips.push(format!("{}/{prefix}", v6.ip()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_name_prefers_pretty_name() {
        assert_eq!(
            os_pretty_name(
                "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"
            ),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(os_pretty_name("NAME=Alpine\n"), "Alpine");
        assert_eq!(os_pretty_name(""), "Linux");
    }

    #[test]
    fn this_machine_has_a_hostname_and_no_loopback_nic() {
        let info = read_guest_info();
        assert!(!info.hostname.is_empty());
        assert!(info.nics.iter().all(|n| n.name != "lo"));
    }
}
