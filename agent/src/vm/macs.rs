//! Per-host MAC uniqueness, as ESXi keeps it: no two NICs of the VMs registered on this host
//! have one MAC. Generated MACs are drawn until none has them; a manual MAC another VM's NIC
//! has is refused (`device_change`); a copy or a clone keeps a manual MAC only when no other VM
//! has it ([`crate::vm::spec::VmSpec::renew_identity`]).
//!
//! The MACs in use are read from each VM's state in turn, never with a VM's lock held by the
//! caller (two such callers could otherwise wait on each other).

use std::collections::HashMap;

use super::spec::random_mac;
use crate::host::Host;

/// MAC (lower case) → the name of the VM whose NIC has it.
pub type MacsInUse = HashMap<String, String>;

/// The MACs of the NICs of every VM registered on `host` but VM `except`.
pub fn in_use(host: &Host, except: Option<u32>) -> MacsInUse {
    let mut used = MacsInUse::new();
    for vm in host.vms.all() {
        if Some(vm.id) == except {
            continue;
        }
        let state = vm.state();
        for nic in state.spec.nics.iter().filter(|n| !n.mac.is_empty()) {
            used.insert(nic.mac.clone(), state.spec.name.clone());
        }
    }
    used
}

/// A random MAC of VMware's OUI that no NIC in `used` has.
pub fn unique(used: &MacsInUse) -> String {
    loop {
        let mac = random_mac();
        if !used.contains_key(&mac) {
            return mac;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drawn_mac_is_none_of_those_in_use() {
        // Every MAC of the range but one is taken: the one left is drawn.
        let mut used = MacsInUse::new();
        let free = "00:50:56:3f:ff:fe";
        for low in 0..=0xffu8 {
            let mac = format!("00:50:56:3f:ff:{low:02x}");
            if mac != free {
                used.insert(mac, "other".into());
            }
        }
        let restricted = |mac: &str| mac.starts_with("00:50:56:3f:ff:");
        let drawn = std::iter::repeat_with(|| unique(&used))
            .find(|mac| restricted(mac))
            .unwrap();
        assert_eq!(drawn, free);
    }
}
