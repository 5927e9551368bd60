//! Port-group security policy and VLANs enforced per TAP (HostNetworkSecurityPolicy, vlanId):
//! an nftables bridge-family table per vireod instance (`vireo_<id>_ports`) maps each guarded
//! TAP to its own two chains. Frames a guest sends with a source MAC other than its NIC's are
//! dropped unless forged transmits are allowed; unicast frames for another MAC are not
//! delivered to it unless MAC address changes are allowed (a Linux bridge floods unicast it has
//! not learnt; a guest that changed its MAC receives for the new one only when MAC changes are
//! allowed). Broadcast and multicast pass. A promiscuous port is in the table's `promiscuous`
//! set: it gets a copy of every frame of its VLAN on its vSwitch ([`super::mirror`]) and none
//! of the bridge's own deliveries.
//!
//! VLANs: where the kernel's bridges filter VLANs (CONFIG_BRIDGE_VLAN_FILTERING) the bridge
//! keeps them apart ([`super::bridge`]). Where they cannot, this table does: a TAP of a port
//! group on VLAN `n` (1-4094) is in the set `vlan_<n>`, and its chains drop what it sends to,
//! or is sent from, any port outside that set — other VLANs, the untagged ports (VLAN 0,
//! uplinks) and the host itself. Ports on VLAN 0 and the trunk (4095) share the untagged
//! segment; 802.1Q-tagged frames pass only between trunk ports and uplinks, as nothing here
//! can add or strip a tag (every non-trunk TAP is in the set `access`).
//!
//! A TAP's chains and sets are rewritten whenever it is made and when its port group changes;
//! the tables go with the rest of the instance's network ([`super::teardown`]).

use std::collections::BTreeMap;

use super::nat::{nft, NatError};
use super::switches::{Security, Switches, TRUNK};
use super::{bridge, mirror, Network};
use crate::host::Host;

/// What guards one TAP: its card's MAC, and its port group's policy and VLAN id.
#[derive(Debug, Clone, Copy)]
pub struct Port<'a> {
    /// The card's MAC.
    pub mac: &'a str,
    /// The policy in force on its port group.
    pub security: Security,
    /// Its port group's VLAN id.
    pub vlan: u16,
}

/// The instance's table of TAP guards.
pub fn table_name(network: Network) -> String {
    format!("vireo_{:04x}_ports", network.instance)
}

/// The table with its two verdict maps (TAP → its chain), its sets, and the base chains
/// consulting them (frames between ports, to the host, from the host); safe to load again.
fn table_script(table: &str) -> String {
    format!(
        "table bridge {table} {{\n\
         map from_port {{ type ifname : verdict; }}\n\
         map to_port {{ type ifname : verdict; }}\n\
         set promiscuous {{ type ifname; }}\n\
         set access {{ type ifname; }}\n\
         set trunk {{ type ifname; }}\n\
         chain forward {{ type filter hook forward priority 0; policy accept; }}\n\
         chain input {{ type filter hook input priority 0; policy accept; }}\n\
         chain output {{ type filter hook output priority 0; policy accept; }}\n\
         }}\n\
         flush chain bridge {table} forward\n\
         flush chain bridge {table} input\n\
         flush chain bridge {table} output\n\
         add rule bridge {table} forward iifname @access ether type {{ 8021q, 8021ad }} drop\n\
         add rule bridge {table} forward oifname @access ether type {{ 8021q, 8021ad }} drop\n\
         add rule bridge {table} forward iifname vmap @from_port\n\
         add rule bridge {table} forward oifname vmap @to_port\n\
         add rule bridge {table} input iifname vmap @from_port\n\
         add rule bridge {table} output oifname vmap @to_port\n"
    )
}

/// The set holding the TAPs of VLAN `vlan` (1-4094).
fn vlan_set(vlan: u16) -> String {
    format!("vlan_{vlan}")
}

/// The VLAN id a set of the table stands for (`vlan_<n>`: n, `trunk`: 4095).
fn vlan_of_set(name: &str) -> Option<u16> {
    match name {
        "trunk" => Some(TRUNK),
        other => other.strip_prefix("vlan_")?.parse().ok(),
    }
}

/// Takes `tap` out of every VLAN set of `listed` (and `access`, `trunk`), then places it on
/// `vlan` when this table keeps VLANs apart (`None`: the bridge does): its chains (just
/// flushed) drop frames to and from ports off its VLAN.
fn vlan_script(table: &str, tap: &str, vlan: Option<u16>, listed: &[String]) -> String {
    let mut script = String::new();
    let sets = listed.iter().filter(|name| name.starts_with("vlan_"));
    for set in sets.map(String::as_str).chain(["access", "trunk"]) {
        script.push_str(&format!(
            "add element bridge {table} {set} {{ \"{tap}\" }}\n\
             delete element bridge {table} {set} {{ \"{tap}\" }}\n"
        ));
    }
    let Some(vlan) = vlan else {
        return script;
    };
    if vlan == TRUNK {
        script.push_str(&format!(
            "add element bridge {table} trunk {{ \"{tap}\" }}\n"
        ));
        return script;
    }
    script.push_str(&format!(
        "add element bridge {table} access {{ \"{tap}\" }}\n"
    ));
    if vlan != 0 {
        let set = vlan_set(vlan);
        script.push_str(&format!(
            "add set bridge {table} {set} {{ type ifname; }}\n\
             add element bridge {table} {set} {{ \"{tap}\" }}\n\
             add rule bridge {table} from_{tap} oifname != @{set} drop\n\
             add rule bridge {table} to_{tap} iifname != @{set} drop\n"
        ));
    }
    script
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

/// Guards `tap` by its `port`'s policy and VLAN, replacing what guarded it before, and brings
/// the instance's mirrors up to date with the bridges' ports.
pub fn guard(network: Network, tap: &str, port: &Port<'_>) -> Result<(), NatError> {
    let table = table_name(network);
    // The table may not exist yet: then it has no sets.
    let before = nft(&format!("list table bridge {table}\n"), "read", &table).unwrap_or_default();
    let listed: Vec<String> = sets(&before).into_keys().collect();
    let bridge_filters = bridge::master_of(tap).is_some_and(|b| bridge::filters_vlans(&b));
    let vlan = (!bridge_filters).then_some(port.vlan);
    let script = table_script(&table)
        + &tap_script(&table, tap, port.mac, port.security)
        + &vlan_script(&table, tap, vlan, &listed);
    nft(&script, "guard a port in", &table)?;
    let after = nft(
        &format!("list table bridge {table}\n"),
        "read the ports of",
        &table,
    )?;
    let sets = sets(&after);
    let mut vlans = BTreeMap::new();
    for (set, taps) in &sets {
        if let Some(vlan) = vlan_of_set(set) {
            vlans.extend(taps.iter().map(|tap| (tap.clone(), vlan)));
        }
    }
    let promiscuous = sets.get("promiscuous").cloned().unwrap_or_default();
    mirror::rebuild(network, &promiscuous, &vlans)
}

/// The sets of nft's listing of a table, each with the quoted names of its
/// `elements = { "a", "b" }`.
fn sets(listing: &str) -> BTreeMap<String, Vec<String>> {
    let mut sets = BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in listing.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("set ").and_then(|l| l.strip_suffix(" {")) {
            current = Some((name.to_string(), Vec::new()));
        } else if line == "}" {
            if let Some((name, elements)) = current.take() {
                sets.insert(name, elements);
            }
        } else if let Some((_, elements)) = current.as_mut() {
            elements.extend(line.split('"').skip(1).step_by(2).map(str::to_string));
        }
    }
    sets
}

/// Puts every TAP of the running VMs in the VLAN and under the policy its port group has now
/// in `switches` (after a port group or vSwitch changed); failures are logged.
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
            let port = Port {
                mac: &nic.mac,
                security: switches.security_of(portgroup),
                vlan: portgroup.vlan,
            };
            let attached = switches.attachment(&nic.network).map_err(|e| e.to_string());
            let guarded = attached
                .and_then(|attachment| network.attach(tap, attachment).map_err(|e| e.to_string()))
                .and_then(|()| guard(network, tap, &port).map_err(|e| e.to_string()));
            if let Err(error) = guarded {
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
                       elements = { \"vt1a\",\n\t\t\t     \"vt1b\" }\n\t}\n\n\
                       \tset vlan_10 {\n\t\ttype ifname\n\t}\n\n\
                       \tchain from_vt1a {\n\t\toifname != @vlan_10 drop\n\t}\n}\n";
        let sets = sets(listing);
        assert_eq!(sets["promiscuous"], ["vt1a", "vt1b"]);
        assert!(sets["vlan_10"].is_empty());
        assert_eq!(sets.len(), 2);
    }

    #[test]
    fn a_vlan_port_reaches_only_its_vlan() {
        let listed = ["promiscuous".to_string(), "vlan_20".to_string()];
        let script = vlan_script("t", "vt1n0", Some(10), &listed);
        // Out of its old VLAN (and the other sets) first.
        for set in ["vlan_20", "access", "trunk"] {
            assert!(script.contains(&format!(
                "add element bridge t {set} {{ \"vt1n0\" }}\ndelete element bridge t {set} {{ \"vt1n0\" }}\n"
            )));
        }
        assert!(!script.contains("promiscuous"));
        assert!(script.ends_with(
            "add element bridge t access { \"vt1n0\" }\n\
             add set bridge t vlan_10 { type ifname; }\n\
             add element bridge t vlan_10 { \"vt1n0\" }\n\
             add rule bridge t from_vt1n0 oifname != @vlan_10 drop\n\
             add rule bridge t to_vt1n0 iifname != @vlan_10 drop\n"
        ));
        let untagged = vlan_script("t", "vt1n0", Some(0), &[]);
        assert!(untagged.ends_with("add element bridge t access { \"vt1n0\" }\n"));
        assert!(!untagged.contains("add rule"));
        let trunk = vlan_script("t", "vt1n0", Some(TRUNK), &[]);
        assert!(trunk.ends_with("add element bridge t trunk { \"vt1n0\" }\n"));
        // Not in `access`: only left.
        let access = |verb: &str| {
            trunk
                .matches(&format!("{verb} element bridge t access"))
                .count()
        };
        assert!(!trunk.contains("add rule") && access("add") == access("delete"));
        // Where the bridge filters VLANs the TAP only leaves the sets.
        assert!(!vlan_script("t", "vt1n0", None, &[]).contains("add rule"));
        assert_eq!(vlan_of_set("vlan_10"), Some(10));
        assert_eq!(vlan_of_set("trunk"), Some(TRUNK));
        assert_eq!(vlan_of_set("promiscuous"), None);
    }
}
