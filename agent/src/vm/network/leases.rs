//! The DHCP leases of the NAT network, read back from the lease file of vireod's dnsmasq
//! (`<data dir>/network/dnsmasq-<bridge>.leases`, one `expiry mac ip hostname client-id` line
//! per lease). [`refresh`] (run by vireod's upkeep) gives each VM the active leases of its
//! NICs' MACs, which its `guest` properties show: a leased address with origin `dhcp` and the
//! lease's end as its lifetime, also for a NIC the guest's tools say nothing of (state
//! `unknown`: the host leased it; whether the guest uses it, only the guest can say).

use super::{nat, Network};
use crate::host::Host;
use std::net::Ipv4Addr;

/// One active lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The client's MAC (lower case).
    pub mac: String,
    /// The leased address.
    pub ip: Ipv4Addr,
    /// When it ends, seconds since the epoch (None: never).
    pub expires: Option<i64>,
}

/// The leases in dnsmasq's lease file `text` still active at `now` (epoch seconds); lines
/// that are not IPv4 leases (dnsmasq's DHCPv6 `duid` line and leases) are skipped.
pub fn parse(text: &str, now: i64) -> Vec<Lease> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let expiry: i64 = fields.next()?.parse().ok()?;
            let mac = fields.next()?.to_ascii_lowercase();
            let ip: Ipv4Addr = fields.next()?.parse().ok()?;
            let expires = (expiry != 0).then_some(expiry);
            let valid = mac.len() == 17 && expires.is_none_or(|end| end > now);
            valid.then_some(Lease { mac, ip, expires })
        })
        .collect()
}

/// Gives every VM the active leases of its NICs (publishing those whose leases changed). A
/// missing lease file (an internal network, or dnsmasq not started yet) holds none.
pub fn refresh(host: &Host) {
    let Ok(network) = Network::of(&host.config.data_dir) else {
        return;
    };
    let text = std::fs::read_to_string(nat::lease_file_of(network, &host.config.data_dir));
    let now = crate::inventory::now_micros() / 1_000_000;
    let leases = parse(&text.unwrap_or_default(), now);
    for vm in host.vms.all() {
        let held = |state: &crate::vm::VmState| -> Vec<Lease> {
            let ours = |lease: &&Lease| state.spec.nics.iter().any(|n| n.mac == lease.mac);
            leases.iter().filter(ours).cloned().collect()
        };
        let changed = {
            let state = vm.state();
            let now_held = held(&state);
            (now_held != state.leases).then_some(now_held)
        };
        if let Some(now_held) = changed {
            vm.edit(host).leases = now_held;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_ipv4_leases_are_read() {
        let text = "1796630000 00:50:56:AA:bb:01 172.16.5.23 guest 01:00:50:56:aa:bb:01\n\
                    1796000000 00:50:56:aa:bb:02 172.16.5.24 * *\n\
                    0 00:50:56:aa:bb:03 172.16.5.25 * *\n\
                    duid 00:01:00:01:2c:1f:aa:bb\n\
                    1796630000 1234 fd00::5 * 00:01\n\
                    garbage\n";
        let leases = parse(text, 1796500000);
        assert_eq!(
            leases,
            [
                Lease {
                    mac: "00:50:56:aa:bb:01".into(),
                    ip: Ipv4Addr::new(172, 16, 5, 23),
                    expires: Some(1796630000),
                },
                Lease {
                    mac: "00:50:56:aa:bb:03".into(),
                    ip: Ipv4Addr::new(172, 16, 5, 25),
                    expires: None,
                },
            ]
        );
    }
}
