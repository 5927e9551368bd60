//! Port-group security policy enforced per TAP (HostNetworkSecurityPolicy): an nftables
//! bridge-family table per vireod instance (`vireo_<id>_ports`) maps each guarded TAP to its own
//! two chains. Frames a guest sends with a source MAC other than its NIC's are dropped unless
//! forged transmits are allowed; unicast frames for another MAC are not delivered to it unless
//! promiscuous mode or MAC address changes are allowed (a Linux bridge floods unicast it has
//! not learnt, which only a promiscuous port may see; a guest that changed its MAC receives
//! for the new one only when MAC changes are allowed). Broadcast and multicast always pass.
//! A TAP's chains are rewritten whenever it is made and when its port group's policy changes;
//! the table goes with the rest of the instance's network ([`super::teardown`]).

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
    if !security.allow_promiscuous && !security.mac_changes {
        script.push_str(&format!(
            "add rule bridge {table} to_{tap} ether daddr != {mac} \
             ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 drop\n"
        ));
    }
    script
}

/// Guards `tap` (a NIC with MAC `mac`) by `security`, replacing what guarded it before.
pub fn guard(network: Network, tap: &str, mac: &str, security: Security) -> Result<(), NatError> {
    let table = table_name(network);
    let script = table_script(&table) + &tap_script(&table, tap, mac, security);
    nft(&script, "guard a port in", &table)
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

/// Removes the instance's table (nothing missing is an error).
pub fn remove(network: Network) -> Result<(), NatError> {
    let table = table_name(network);
    let script = format!("table bridge {table}\ndelete table bridge {table}\n");
    nft(&script, "delete", &table)
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
    }
}
