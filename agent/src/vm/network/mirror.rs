//! Promiscuous ports (HostNetworkSecurityPolicy.allowPromiscuous). A Linux bridge sends a port
//! only the unicast it learnt there, so a promiscuous port is given every frame of its VLAN on
//! its vSwitch as a copy instead: an nftables netdev table per vireod instance
//! (`vireo_<id>_mirror`) duplicates to it what enters its bridge through every other port of
//! its VLAN (guests' TAPs and, for the untagged VLAN, uplinks: their ingress hooks) and, on
//! the untagged VLAN, what the host sends on the bridge (the bridge's egress hook); a trunk
//! port (VLAN 4095) sees every port. Its bridged deliveries are dropped so that nothing
//! arrives twice ([`super::security`]). The table is rebuilt whole from the bridges' ports of
//! the moment whenever a port's policy is applied; with no promiscuous port there is none.

use std::collections::BTreeMap;

use super::nat::{nft, NatError};
use super::switches::TRUNK;
use super::{bridge, Network};

/// Where copies are taken: a hook ("ingress" of a bridge port, "egress" of the bridge) and its
/// device.
type Source = (&'static str, String);

/// The instance's mirror table.
pub fn table_name(network: Network) -> String {
    format!("vireo_{:04x}_mirror", network.instance)
}

/// Gives each TAP of `promiscuous` that exists a copy of every frame of its VLAN on its
/// bridge; `vlans` holds the VLAN of each TAP kept apart by VLAN (every other port: 0).
pub fn rebuild(
    network: Network,
    promiscuous: &[String],
    vlans: &BTreeMap<String, u16>,
) -> Result<(), NatError> {
    let table = table_name(network);
    nft(
        &script(&table, &copies(promiscuous, vlans)),
        "mirror ports in",
        &table,
    )
    .map(drop)
}

/// Removes the instance's mirror table (nothing missing is an error).
pub fn remove(network: Network) -> Result<(), NatError> {
    rebuild(network, &[], &BTreeMap::new())
}

/// Which sources copy to which promiscuous TAPs: for each TAP on a bridge, every other port
/// of its VLAN's ingress, and the bridge's egress when the TAP is on the host's untagged VLAN.
fn copies(promiscuous: &[String], vlans: &BTreeMap<String, u16>) -> BTreeMap<Source, Vec<String>> {
    let vlan_of = |port: &str| vlans.get(port).copied().unwrap_or(0);
    let mut copies: BTreeMap<Source, Vec<String>> = BTreeMap::new();
    for tap in promiscuous {
        let Some(bridge) = bridge::master_of(tap) else {
            continue;
        };
        let watched = vlan_of(tap);
        let sees = |vlan: u16| watched == TRUNK || vlan == watched;
        let ports = bridge::ports(&bridge)
            .into_iter()
            .filter(|port| port != tap && sees(vlan_of(port)));
        let sources = ports.map(|port| ("ingress", port));
        let host = sees(0).then(|| ("egress", bridge.clone()));
        for source in sources.chain(host) {
            copies.entry(source).or_default().push(tap.clone());
        }
    }
    copies
}

/// The table's replacement: one base chain per source, duplicating to its TAPs.
fn script(table: &str, copies: &BTreeMap<Source, Vec<String>>) -> String {
    let mut script = format!("table netdev {table}\ndelete table netdev {table}\n");
    if copies.is_empty() {
        return script;
    }
    script.push_str(&format!("table netdev {table} {{\n"));
    for (n, ((hook, device), taps)) in copies.iter().enumerate() {
        script.push_str(&format!(
            "chain c{n} {{ type filter hook {hook} device \"{device}\" priority 0;"
        ));
        for tap in taps {
            script.push_str(&format!(" dup to \"{tap}\";"));
        }
        script.push_str(" }\n");
    }
    script.push_str("}\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_copies_to_its_promiscuous_taps() {
        let mut copies = BTreeMap::new();
        copies.insert(("egress", "vbr1".to_string()), vec!["vt1p".to_string()]);
        copies.insert(
            ("ingress", "vt1a".to_string()),
            vec!["vt1p".to_string(), "vt1q".to_string()],
        );
        let script = script("t", &copies);
        assert!(script.starts_with("table netdev t\ndelete table netdev t\n"));
        assert!(script.contains(
            "chain c0 { type filter hook egress device \"vbr1\" priority 0; dup to \"vt1p\"; }"
        ));
        assert!(script.contains(
            "chain c1 { type filter hook ingress device \"vt1a\" priority 0; \
             dup to \"vt1p\"; dup to \"vt1q\"; }"
        ));
        assert_eq!(
            super::script("t", &BTreeMap::new()),
            "table netdev t\ndelete table netdev t\n"
        );
    }
}
