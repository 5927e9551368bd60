//! Per-host MAC uniqueness, as ESXi keeps it: no two NICs of the VMs registered on this host
//! have one MAC. Generated MACs are drawn until none has them; a manual MAC another VM's NIC
//! has is refused (`device_change`); a copy or a clone keeps a manual MAC only when no other VM
//! has it ([`crate::vm::spec::VmSpec::renew_identity`]).
//!
//! Two changes in flight at once (CreateVM, ReconfigVM) could each find a MAC free and both
//! take it, so each [`claim`]s its new MACs before it commits: the claim checks them against
//! the registered VMs and the other claims under one lock, and holds them until the change is
//! committed (the VM then has them) or has failed.
//!
//! The MACs in use are read from each VM's state in turn, never with a VM's lock held by the
//! caller (two such callers could otherwise wait on each other).

use std::collections::HashMap;
use std::sync::Mutex;

use vireo_api::schema::Schema;
use vireo_api::{Fault, Value};

use super::spec::random_mac;
use crate::faults;
use crate::host::Host;
use crate::locks::lock;

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

/// The MACs changes in flight are giving to NICs (MAC → the VM being given it).
#[derive(Debug, Default)]
pub struct Claims {
    pending: Mutex<MacsInUse>,
}

/// MACs held for one change until it is dropped.
#[derive(Debug)]
pub struct Claim<'a> {
    claims: &'a Claims,
    macs: Vec<String>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut pending = lock(&self.claims.pending);
        for mac in &self.macs {
            pending.remove(mac);
        }
    }
}

/// A MAC another VM has, or another change in flight is giving.
#[derive(Debug, thiserror::Error)]
#[error("The MAC address {mac} is in use by the virtual machine {owner}.")]
pub struct MacTaken {
    /// The MAC.
    pub mac: String,
    /// The VM that has it or is being given it.
    pub owner: String,
}

/// Holds `macs` for VM `claimant` until the claim is dropped, unless a VM of `host` other than
/// `except` has one of them or another claim holds it. The caller holds no VM's lock.
pub fn claim<'a>(
    host: &'a Host,
    except: Option<u32>,
    claimant: &str,
    macs: Vec<String>,
) -> Result<Claim<'a>, MacTaken> {
    let claims = &host.vms.macs;
    if macs.is_empty() {
        return Ok(Claim { claims, macs });
    }
    let mut pending = lock(&claims.pending);
    let used = in_use(host, except);
    for mac in &macs {
        if let Some(owner) = pending.get(mac).or_else(|| used.get(mac)) {
            return Err(MacTaken {
                mac: mac.clone(),
                owner: owner.clone(),
            });
        }
    }
    for mac in &macs {
        pending.insert(mac.clone(), claimant.to_string());
    }
    Ok(Claim { claims, macs })
}

/// InvalidDeviceSpec for `taken`, on the device change among `changes` that sets its MAC.
pub fn taken_fault(schema: &Schema, changes: &[&Value], taken: &MacTaken) -> Fault {
    let sets_it = |change: &&Value| {
        let device = change
            .as_data()
            .and_then(|c| c.get(schema, "device"))
            .and_then(Value::as_data);
        let mac = device.and_then(|d| d.lookup(schema, "macAddress")?.as_str());
        mac.is_some_and(|mac| mac.eq_ignore_ascii_case(&taken.mac))
    };
    let index = changes.iter().position(sets_it).unwrap_or(0);
    faults::invalid_device_spec(schema, "InvalidDeviceSpec", index, taken.to_string())
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
