//! What the guest reports about itself: host name (/proc/sys/kernel/hostname), OS name
//! (/etc/os-release) and, from getifaddrs, each non-loopback interface's MAC and addresses.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::net::{Ipv4Addr, Ipv6Addr};

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
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: cursor walks the list getifaddrs returned; it stays valid until freeifaddrs.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_flags & libc::IFF_LOOPBACK as u32 != 0 {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let nic = nics.entry(name.clone()).or_insert_with(|| NicInfo {
            name,
            ..NicInfo::default()
        });
        // SAFETY: ifa_addr is non-null and its family says which sockaddr it is.
        unsafe { describe_address(entry, nic) };
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    nics.into_values().collect()
}

/// Adds the MAC (AF_PACKET) or address/prefix (AF_INET, AF_INET6) of one ifaddrs entry.
///
/// # Safety
/// `entry.ifa_addr` must be non-null and, with `ifa_netmask`, point at sockaddrs of its family.
unsafe fn describe_address(entry: &libc::ifaddrs, nic: &mut NicInfo) {
    match i32::from((*entry.ifa_addr).sa_family) {
        libc::AF_PACKET => {
            let ll = &*(entry.ifa_addr as *const libc::sockaddr_ll);
            if ll.sll_halen == 6 {
                nic.mac = ll.sll_addr[..6]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
            }
        }
        libc::AF_INET => {
            let addr = &*(entry.ifa_addr as *const libc::sockaddr_in);
            let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            let prefix = if entry.ifa_netmask.is_null() {
                32
            } else {
                let mask = &*(entry.ifa_netmask as *const libc::sockaddr_in);
                u32::from_be(mask.sin_addr.s_addr).count_ones()
            };
            nic.ips.push(format!("{ip}/{prefix}"));
        }
        libc::AF_INET6 => {
            let addr = &*(entry.ifa_addr as *const libc::sockaddr_in6);
            let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
            let prefix: u32 = if entry.ifa_netmask.is_null() {
                128
            } else {
                let mask = &*(entry.ifa_netmask as *const libc::sockaddr_in6);
                mask.sin6_addr.s6_addr.iter().map(|b| b.count_ones()).sum()
            };
            nic.ips.push(format!("{ip}/{prefix}"));
        }
        _ => {}
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
