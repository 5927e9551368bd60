//! Port-group security policy enforced per TAP (HostNetworkSecurityPolicy): an nftables
//! bridge-family table per vireod instance (`vireo_<id>_ports`) maps each guarded TAP to its own
//! two chains. Frames a guest sends with a source MAC other than its NIC's are dropped unless
//! forged transmits are allowed; unicast frames for another MAC are not delivered to it unless
//! MAC address changes are allowed (a Linux bridge floods unicast it has not learnt; a guest
//! that changed its MAC receives for the new one only when MAC changes are allowed). Broadcast
//! and multicast pass. A promiscuous port is in the table's `promiscuous` set: it gets a copy
//! of every frame of its vSwitch ([`super::mirror`]) and none of the bridge's own deliveries.
//! A TAP's chains are rewritten whenever it is made and when its port group's policy changes;
//! the tables go with the rest of the instance's network ([`super::teardown`]).

use super::mirror;
use super::nat::{nft, NatError};
use super::switches::{Security, Switches};
use super::Network;
use crate::host::Host;

/// The instance's table of TAP guards.
pub fn table_name(network: Network) -> String {
    format!("vireo_{:04x}_ports", network.instance)
}

/// The table with its two verdict maps (TAP → its chain) and the base chains consulting them
/// (frames between ports, to the host, from the host); safe to load again.
fn table_script(table: &str) -> String {
    format!(
        "table bridge {table} {{\n\
         map from_port {{ type ifname : verdict; }}\n\
         map to_port {{ type ifname : verdict; }}\n\
         set promiscuous {{ type ifname; }}\n\
         chain forward {{ type filter hook forward priority 0; policy accept; }}\n\
         chain input {{ type filter hook input priority 0; policy accept; }}\n\
         chain output {{ type filter hook output priority 0; policy accept; }}\n\
         }}\n\
         flush chain bridge {table} forward\n\
         flush chain bridge {table} input\n\
         flush chain bridge {table} output\n\
         add rule bridge {table} forward iifname vmap @from_port\n\
         add rule bridge {table} forward oifname vmap @to_port\n\
         add rule bridge {table} input iifname vmap @from_port\n\
         add rule bridge {table} output oifname vmap @to_port\n"
    )
}

/// The rules guarding `tap`, whose card has MAC `mac`, under `security`.
fn tap_script(table: &str, tap: &str, mac: &str, security: Security) -> String {
    let mut script = String::new();
    for (map, chain) in [
        ("from_port", format!("from_{tap}")),
        ("to_port", format!("to_{tap}")),
    ] {
        script.push_str(&format!(
            "add chain bridge {table} {chain}\nflush chain bridge {table} {chain}\n\
             add element bridge {table} {map} {{ \"{tap}\" : jump {chain} }}\n"
        ));
    }
    if !security.forged_transmits {
        script.push_str(&format!(
            "add rule bridge {table} from_{tap} ether saddr != {mac} drop\n"
        ));
    }
    // Added first so that the delete always finds it.
    script.push_str(&format!(
        "add element bridge {table} promiscuous {{ \"{tap}\" }}\n"
    ));
    if security.allow_promiscuous {
        script.push_str(&format!("add rule bridge {table} to_{tap} drop\n"));
        return script;
    }
    script.push_str(&format!(
        "delete element bridge {table} promiscuous {{ \"{tap}\" }}\n"
    ));
    if !security.mac_changes {
        script.push_str(&format!(
            "add rule bridge {table} to_{tap} ether daddr != {mac} \
             ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 drop\n"
        ));
    }
    script
}

/// Guards `tap` (a NIC with MAC `mac`) by `security`, replacing what guarded it before, and
/// brings the instance's mirrors up to date with the bridges' ports.
pub fn guard(network: Network, tap: &str, mac: &str, security: Security) -> Result<(), NatError> {
    let table = table_name(network);
    let script = table_script(&table) + &tap_script(&table, tap, mac, security);
    nft(&script, "guard a port in", &table)?;
    let listed = nft(
        &format!("list set bridge {table} promiscuous\n"),
        "read the promiscuous ports of",
        &table,
    )?;
    mirror::rebuild(network, &set_elements(&listed))
}

/// The quoted names in nft's listing of a set's `elements = { "a", "b" }`.
fn set_elements(listing: &str) -> Vec<String> {
    let Some((_, elements)) = listing.split_once("elements") else {
        return Vec::new();
    };
    elements
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Guards every TAP of the running VMs by the policy its port group has now in `switches`
/// (after a port group or vSwitch changed); failures are logged.
pub fn refresh(host: &Host, switches: &Switches) {
    let Ok(network) = Network::of(&host.config.data_dir) else {
        return;
    };
    for vm in host.vms.all() {
        let state = vm.state();
        for (tap, nic) in state.taps.iter().zip(&state.spec.nics) {
            let Ok(portgroup) = switches.portgroup(&nic.network) else {
                continue;
            };
            let security = switches.security_of(portgroup);
            if let Err(error) = guard(network, tap, &nic.mac, security) {
                tracing::error!(vm = vm.id, "{error}");
            }
        }
    }
}

/// Removes the instance's tables (nothing missing is an error).
pub fn remove(network: Network) -> Result<(), NatError> {
    mirror::remove(network)?;
    let table = table_name(network);
    let script = format!("table bridge {table}\ndelete table bridge {table}\n");
    nft(&script, "delete", &table).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strict_port_drops_forged_sources_and_foreign_unicast_only() {
        let strict = tap_script("t", "vt1n0", "00:50:56:00:00:01", Security::STRICT);
        assert!(strict.contains("from_vt1n0 ether saddr != 00:50:56:00:00:01 drop"));
        assert!(strict.contains(
            "to_vt1n0 ether daddr != 00:50:56:00:00:01 ether daddr & 01:00:00:00:00:00 == \
             00:00:00:00:00:00 drop"
        ));
        let open = Security {
            allow_promiscuous: false,
            mac_changes: true,
            forged_transmits: true,
        };
        let lax = tap_script("t", "vt1n0", "00:50:56:00:00:01", open);
        assert!(!lax.contains("drop") && lax.contains("jump from_vt1n0"));
        assert!(lax.contains("delete element bridge t promiscuous { \"vt1n0\" }"));
    }

    #[test]
    fn a_promiscuous_port_takes_only_mirrored_frames() {
        let promiscuous = Security {
            allow_promiscuous: true,
            ..Security::STRICT
        };
        let script = tap_script("t", "vt1n0", "00:50:56:00:00:01", promiscuous);
        assert!(script.contains("add element bridge t promiscuous { \"vt1n0\" }"));
        assert!(script.contains("add rule bridge t to_vt1n0 drop\n"));
        assert!(!script.contains("delete element"));
        let listing = "table bridge t {\n\tset promiscuous {\n\t\ttype ifname\n\t\t\
                       elements = { \"vt1a\",\n\t\t\t     \"vt1b\" }\n\t}\n}\n";
        assert_eq!(set_elements(listing), ["vt1a", "vt1b"]);
        assert!(set_elements("table bridge t { set promiscuous { type ifname } }").is_empty());
    }
}
