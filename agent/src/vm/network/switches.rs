//! The host's standard vSwitches and port groups, as ESXi models them: each vSwitch has ports,
//! an MTU, uplinks (host interfaces bridged in) and a security policy; each port group sits on
//! one vSwitch with a VLAN id (0 none, 4095 trunk) and may override the policy. Kept in
//! `<data dir>/network-switches.json` (written whole through a temporary file); the first start
//! makes ESXi's default: `vSwitch0` with the port group "VM Network". Linux backing is `bridge`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Attachment;

/// The file in the data dir.
const FILE: &str = "network-switches.json";
/// The default vSwitch and port group.
pub const DEFAULT_SWITCH: &str = "vSwitch0";
/// The default port group.
pub const DEFAULT_PORT_GROUP: &str = "VM Network";
/// The trunk VLAN id (every VLAN, tagged).
pub const TRUNK: u16 = 4095;
/// Longest vSwitch or port group name (ESXi's limit).
const MAX_NAME: usize = 59;
/// Most vSwitches (each is a bridge named by its slot).
const MAX_SWITCHES: usize = 64;
/// ESXi's MTU range.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 1280..=9000;

/// Which frames ports may send and see (HostNetworkSecurityPolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// A port sees every frame on its VLAN, not only its own.
    pub allow_promiscuous: bool,
    /// A port receives frames for a MAC other than its card's.
    pub mac_changes: bool,
    /// A port may send frames whose source MAC is not its card's.
    pub forged_transmits: bool,
}

impl Security {
    /// ESXi's policy for a new vSwitch: everything rejected.
    pub const STRICT: Security = Security {
        allow_promiscuous: false,
        mac_changes: false,
        forged_transmits: false,
    };
}

/// A port group's own security choices (HostNetworkSecurityPolicy with optional fields): each
/// one left unset is its vSwitch's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityOverride {
    /// Promiscuous mode, if set here.
    pub allow_promiscuous: Option<bool>,
    /// MAC address changes, if set here.
    pub mac_changes: Option<bool>,
    /// Forged transmits, if set here.
    pub forged_transmits: Option<bool>,
}

impl SecurityOverride {
    /// The policy these choices make over `base`.
    pub fn over(self, base: Security) -> Security {
        Security {
            allow_promiscuous: self.allow_promiscuous.unwrap_or(base.allow_promiscuous),
            mac_changes: self.mac_changes.unwrap_or(base.mac_changes),
            forged_transmits: self.forged_transmits.unwrap_or(base.forged_transmits),
        }
    }
}

impl From<Security> for SecurityOverride {
    fn from(security: Security) -> SecurityOverride {
        SecurityOverride {
            allow_promiscuous: Some(security.allow_promiscuous),
            mac_changes: Some(security.mac_changes),
            forged_transmits: Some(security.forged_transmits),
        }
    }
}

/// One standard vSwitch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VSwitch {
    /// Its name (`vSwitch0`).
    pub name: String,
    /// The bridge slot: 0 is the instance's default bridge, others `vbr<id>s<slot>`.
    pub slot: u16,
    /// Ports (numPorts).
    pub ports: u32,
    /// MTU.
    pub mtu: u32,
    /// Host interfaces bridged in as uplinks (pnics).
    pub uplinks: Vec<String>,
    /// The policy its port groups inherit.
    pub security: Security,
}

/// One port group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortGroup {
    /// Its name (also the Network's name).
    pub name: String,
    /// The vSwitch it is on.
    pub vswitch: String,
    /// VLAN id: 0 none, 1-4094 one VLAN, 4095 every VLAN.
    pub vlan: u16,
    /// What of the vSwitch's policy it overrides.
    #[serde(default)]
    pub security: SecurityOverride,
}

/// Every vSwitch and port group of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switches {
    /// The vSwitches.
    pub vswitches: Vec<VSwitch>,
    /// The port groups.
    pub portgroups: Vec<PortGroup>,
}

/// Why a change to the vSwitches or port groups was refused.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The name is taken.
    #[error("{kind} {name} already exists")]
    AlreadyExists {
        /// "vSwitch" or "port group".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// Nothing has that name.
    #[error("{kind} {name} not found")]
    NotFound {
        /// "vSwitch", "port group" or "physical NIC".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// Something still uses it.
    #[error("{kind} {name} is in use: {by}")]
    InUse {
        /// "vSwitch", "port group" or "physical NIC".
        kind: &'static str,
        /// The name.
        name: String,
        /// What uses it.
        by: String,
    },
    /// A value is out of range.
    #[error("invalid {field}: {why}")]
    Invalid {
        /// The spec field.
        field: &'static str,
        /// Why.
        why: String,
    },
    /// The file could not be read or written.
    #[error("cannot keep the network configuration in {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Switches {
    /// ESXi's first-boot network: `vSwitch0` (128 ports, MTU 1500, MAC changes and forged
    /// transmits accepted as ESXi's installer sets them) with "VM Network" untagged.
    pub fn default_network() -> Switches {
        Switches {
            vswitches: vec![VSwitch {
                name: DEFAULT_SWITCH.into(),
                slot: 0,
                ports: 128,
                mtu: 1500,
                uplinks: Vec::new(),
                security: Security {
                    allow_promiscuous: false,
                    mac_changes: true,
                    forged_transmits: true,
                },
            }],
            portgroups: vec![PortGroup {
                name: DEFAULT_PORT_GROUP.into(),
                vswitch: DEFAULT_SWITCH.into(),
                vlan: 0,
                security: SecurityOverride::default(),
            }],
        }
    }

    /// The configuration kept in `data_dir` (the default one if none was kept yet).
    pub fn load(data_dir: &Path) -> Result<Switches, SwitchError> {
        let path = data_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SwitchError::File {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Switches::default_network()),
            Err(source) => Err(SwitchError::File { path, source }),
        }
    }

    /// Writes the configuration to `data_dir` (a temporary file renamed over the old one).
    pub fn save(&self, data_dir: &Path) -> Result<(), SwitchError> {
        let path = data_dir.join(FILE);
        let temporary = data_dir.join(format!("{FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).expect("plain data serializes");
        std::fs::write(&temporary, bytes)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|source| SwitchError::File { path, source })
    }

    /// A vSwitch by name.
    pub fn vswitch(&self, name: &str) -> Result<&VSwitch, SwitchError> {
        self.vswitches
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| not_found("vSwitch", name))
    }

    /// A port group by name.
    pub fn portgroup(&self, name: &str) -> Result<&PortGroup, SwitchError> {
        self.portgroups
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| not_found("port group", name))
    }

    /// Where a NIC on port group `name` joins: its vSwitch's bridge slot and its VLAN.
    pub fn attachment(&self, name: &str) -> Result<Attachment, SwitchError> {
        let portgroup = self.portgroup(name)?;
        Ok(Attachment {
            slot: self.vswitch(&portgroup.vswitch)?.slot,
            vlan: portgroup.vlan,
        })
    }

    /// The VLAN ids other than 0 of the port groups on vSwitch `name`.
    pub fn vlans_on(&self, name: &str) -> Vec<u16> {
        self.portgroups
            .iter()
            .filter(|p| p.vswitch == name && p.vlan != 0)
            .map(|p| p.vlan)
            .collect()
    }

    /// The policy in force on a port group (its overrides over its vSwitch's).
    pub fn security_of(&self, portgroup: &PortGroup) -> Security {
        let base = self.vswitch(&portgroup.vswitch).map(|v| v.security);
        portgroup.security.over(base.unwrap_or(Security::STRICT))
    }

    /// Adds a vSwitch in the first free bridge slot.
    pub fn add_vswitch(&mut self, mut vswitch: VSwitch) -> Result<&VSwitch, SwitchError> {
        check_name("vswitchName", &vswitch.name)?;
        check_vswitch(&vswitch)?;
        if self.vswitch(&vswitch.name).is_ok() {
            return Err(already_exists("vSwitch", &vswitch.name));
        }
        if self.vswitches.len() >= MAX_SWITCHES {
            return Err(SwitchError::Invalid {
                field: "vswitchName",
                why: format!("at most {MAX_SWITCHES} vSwitches"),
            });
        }
        self.check_uplinks_free(&vswitch)?;
        vswitch.slot = (1..)
            .find(|slot| self.vswitches.iter().all(|v| v.slot != *slot))
            .expect("fewer switches than slots");
        self.vswitches.push(vswitch);
        Ok(self.vswitches.last().expect("just pushed"))
    }

    /// Replaces a vSwitch's ports, MTU, uplinks and policy (its name and slot stay).
    pub fn update_vswitch(&mut self, name: &str, update: VSwitch) -> Result<(), SwitchError> {
        check_vswitch(&update)?;
        let slot = self.vswitch(name)?.slot;
        self.check_uplinks_free(&VSwitch {
            name: name.into(),
            ..update.clone()
        })?;
        let vswitch = self.vswitches.iter_mut().find(|v| v.name == name);
        let vswitch = vswitch.expect("found above");
        *vswitch = VSwitch {
            name: name.into(),
            slot,
            ..update
        };
        Ok(())
    }

    /// Removes a vSwitch that no port group is on.
    pub fn remove_vswitch(&mut self, name: &str) -> Result<VSwitch, SwitchError> {
        self.vswitch(name)?;
        let users: Vec<&str> = self
            .portgroups
            .iter()
            .filter(|p| p.vswitch == name)
            .map(|p| p.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(SwitchError::InUse {
                kind: "vSwitch",
                name: name.into(),
                by: format!("port groups {}", users.join(", ")),
            });
        }
        let index = self.vswitches.iter().position(|v| v.name == name);
        Ok(self.vswitches.remove(index.expect("found above")))
    }

    /// Adds a port group to an existing vSwitch.
    pub fn add_portgroup(&mut self, portgroup: PortGroup) -> Result<(), SwitchError> {
        check_name("portgrp.name", &portgroup.name)?;
        check_vlan(portgroup.vlan)?;
        if self.portgroup(&portgroup.name).is_ok() {
            return Err(already_exists("port group", &portgroup.name));
        }
        self.vswitch(&portgroup.vswitch)?;
        self.portgroups.push(portgroup);
        Ok(())
    }

    /// Replaces port group `name` (which may be renamed, or moved to another vSwitch).
    pub fn update_portgroup(&mut self, name: &str, update: PortGroup) -> Result<(), SwitchError> {
        check_name("portgrp.name", &update.name)?;
        check_vlan(update.vlan)?;
        self.portgroup(name)?;
        self.vswitch(&update.vswitch)?;
        if update.name != name && self.portgroup(&update.name).is_ok() {
            return Err(already_exists("port group", &update.name));
        }
        let portgroup = self.portgroups.iter_mut().find(|p| p.name == name);
        *portgroup.expect("found above") = update;
        Ok(())
    }

    /// Removes a port group.
    pub fn remove_portgroup(&mut self, name: &str) -> Result<PortGroup, SwitchError> {
        self.portgroup(name)?;
        let index = self.portgroups.iter().position(|p| p.name == name);
        Ok(self.portgroups.remove(index.expect("found above")))
    }

    /// Refuses uplinks another vSwitch already holds.
    fn check_uplinks_free(&self, vswitch: &VSwitch) -> Result<(), SwitchError> {
        for uplink in &vswitch.uplinks {
            let holder = self
                .vswitches
                .iter()
                .find(|v| v.name != vswitch.name && v.uplinks.contains(uplink));
            if let Some(holder) = holder {
                return Err(SwitchError::InUse {
                    kind: "physical NIC",
                    name: uplink.clone(),
                    by: format!("vSwitch {}", holder.name),
                });
            }
        }
        Ok(())
    }
}

fn not_found(kind: &'static str, name: &str) -> SwitchError {
    SwitchError::NotFound {
        kind,
        name: name.into(),
    }
}

fn already_exists(kind: &'static str, name: &str) -> SwitchError {
    SwitchError::AlreadyExists {
        kind,
        name: name.into(),
    }
}

/// Names are 1-59 printable characters without `/`, `\`, quotes or control characters.
fn check_name(field: &'static str, name: &str) -> Result<(), SwitchError> {
    let bad = |c: char| c.is_control() || matches!(c, '/' | '\\' | '"' | '\'');
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(bad) {
        return Err(SwitchError::Invalid {
            field,
            why: format!("{name:?} is not a name of 1 to {MAX_NAME} plain characters"),
        });
    }
    Ok(())
}

fn check_vlan(vlan: u16) -> Result<(), SwitchError> {
    if vlan > TRUNK {
        return Err(SwitchError::Invalid {
            field: "portgrp.vlanId",
            why: format!("{vlan} is not 0 to {TRUNK}"),
        });
    }
    Ok(())
}

fn check_vswitch(vswitch: &VSwitch) -> Result<(), SwitchError> {
    if !MTU_RANGE.contains(&vswitch.mtu) {
        return Err(SwitchError::Invalid {
            field: "spec.mtu",
            why: format!("{} is not in {MTU_RANGE:?}", vswitch.mtu),
        });
    }
    if !(1..=4088).contains(&vswitch.ports) {
        return Err(SwitchError::Invalid {
            field: "spec.numPorts",
            why: format!("{} is not 1 to 4088", vswitch.ports),
        });
    }
    for uplink in &vswitch.uplinks {
        let plain = !uplink.is_empty()
            && uplink.len() < super::ifreq::IFNAMSIZ
            && uplink
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !plain {
            return Err(SwitchError::Invalid {
                field: "spec.bridge.nicDevice",
                why: format!("{uplink:?} is not an interface name"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(name: &str) -> VSwitch {
        VSwitch {
            name: name.into(),
            slot: 0,
            ports: 64,
            mtu: 1500,
            uplinks: Vec::new(),
            security: Security::STRICT,
        }
    }

    fn group(name: &str, vswitch: &str, vlan: u16) -> PortGroup {
        PortGroup {
            name: name.into(),
            vswitch: vswitch.into(),
            vlan,
            security: SecurityOverride::default(),
        }
    }

    #[test]
    fn switches_and_groups_follow_esxi_rules() {
        let mut net = Switches::default_network();
        assert_eq!(net.add_vswitch(switch("vSwitch1")).unwrap().slot, 1);
        assert_eq!(net.add_vswitch(switch("vSwitch2")).unwrap().slot, 2);
        assert!(matches!(
            net.add_vswitch(switch("vSwitch1")),
            Err(SwitchError::AlreadyExists { .. })
        ));
        net.add_portgroup(group("VLAN10", "vSwitch1", 10)).unwrap();
        assert!(matches!(
            net.add_portgroup(group("x", "nope", 1)),
            Err(SwitchError::NotFound { .. })
        ));
        assert!(matches!(
            net.add_portgroup(group("y", "vSwitch1", 4096)),
            Err(SwitchError::Invalid { .. })
        ));
        assert!(matches!(
            net.remove_vswitch("vSwitch1"),
            Err(SwitchError::InUse { .. })
        ));
        net.update_portgroup("VLAN10", group("VLAN20", "vSwitch1", 20))
            .unwrap();
        assert_eq!(net.portgroup("VLAN20").unwrap().vlan, 20);
        assert_eq!(
            net.security_of(net.portgroup("VLAN20").unwrap()),
            Security::STRICT
        );
        net.remove_portgroup("VLAN20").unwrap();
        net.remove_vswitch("vSwitch1").unwrap();
        assert_eq!(
            net.add_vswitch(switch("vSwitch3")).unwrap().slot,
            1,
            "slot reused"
        );
    }

    #[test]
    fn a_port_group_overrides_only_what_it_sets() {
        let mut net = Switches::default_network();
        let mut lab = group("Lab", DEFAULT_SWITCH, 0);
        lab.security.allow_promiscuous = Some(true);
        lab.security.forged_transmits = Some(false);
        net.add_portgroup(lab).unwrap();
        let computed = net.security_of(net.portgroup("Lab").unwrap());
        // MAC changes: vSwitch0's (accepted).
        assert_eq!(
            computed,
            Security {
                allow_promiscuous: true,
                mac_changes: true,
                forged_transmits: false,
            }
        );
    }

    #[test]
    fn names_and_uplinks_are_checked() {
        let mut net = Switches::default_network();
        for bad in ["", "a/b", "x\ny", &"n".repeat(60)] {
            assert!(net.add_vswitch(switch(bad)).is_err(), "{bad:?}");
        }
        let mut uplinked = switch("up");
        uplinked.uplinks = vec!["eth0; rm".into()];
        assert!(net.add_vswitch(uplinked.clone()).is_err());
        uplinked.uplinks = vec!["veth7".into()];
        net.add_vswitch(uplinked.clone()).unwrap();
        uplinked.name = "up2".into();
        assert!(matches!(
            net.add_vswitch(uplinked),
            Err(SwitchError::InUse { .. })
        ));
    }

    #[test]
    fn the_configuration_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("vireo-switches-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(Switches::load(&dir).unwrap(), Switches::default_network());
        let mut net = Switches::default_network();
        net.add_vswitch(switch("vSwitch1")).unwrap();
        net.save(&dir).unwrap();
        assert_eq!(Switches::load(&dir).unwrap(), net);
        std::fs::write(dir.join(FILE), "{").unwrap();
        assert!(matches!(
            Switches::load(&dir),
            Err(SwitchError::File { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
