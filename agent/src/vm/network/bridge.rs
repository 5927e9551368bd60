//! The Linux side of vSwitches: one bridge per vSwitch (slot 0 is the instance's default
//! bridge `vbr<id>`, slot n is `vbr<id>s<n>`), its MTU, its uplinks (host interfaces enslaved),
//! and TAPs joined to a port group. Where the kernel's bridges filter VLANs
//! (CONFIG_BRIDGE_VLAN_FILTERING, seen as the bridge's `vlan_filtering` attribute), a vSwitch
//! with a port group on a VLAN turns that on (every VLAN tagged on the uplinks) and puts such
//! TAPs in their VLAN (4095: every VLAN); VLAN membership goes through iproute2's `bridge` and
//! `ip`, the rest through ioctls. Where they cannot, `security` keeps the VLANs apart with
//! nftables, and since nothing can then tag a frame toward an uplink, a port group on VLAN
//! 1-4094 on a vSwitch with an uplink is refused.

use std::process::Command;

use nix::net::if_::InterfaceFlags;

use super::ifreq::{self, change_port, set_mtu, PortChange};
use super::switches::{VSwitch, TRUNK};
use super::{bring_up, tool, Network, NetworkError};

/// The VID untagged frames belong to on our bridges.
const NATIVE_VID: u16 = 1;

/// Where a TAP joins: the vSwitch's bridge slot and the port group's VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// The vSwitch's slot.
    pub slot: u16,
    /// The port group's VLAN id.
    pub vlan: u16,
}

impl Attachment {
    /// The default port group "VM Network" on vSwitch0.
    pub const DEFAULT: Attachment = Attachment { slot: 0, vlan: 0 };
}

impl Network {
    /// The bridge behind the vSwitch in `slot`.
    pub fn switch_bridge(&self, slot: u16) -> String {
        match slot {
            0 => self.bridge(),
            slot => format!("{}s{slot}", self.bridge()),
        }
    }

    /// Makes the vSwitch's bridge whole: present, its MTU, exactly its uplinks, and VLAN
    /// filtering if `vlans` (the VLAN ids of its port groups other than 0) has any.
    pub fn ensure_switch(&self, vswitch: &VSwitch, vlans: &[u16]) -> Result<(), NetworkError> {
        let bridge = self.switch_bridge(vswitch.slot);
        self.ensure_named_bridge(&bridge)?;
        let kernel_vlans = !vlans.is_empty() && filters_vlans(&bridge);
        if kernel_vlans {
            run(
                "ip",
                &[
                    "link",
                    "set",
                    "dev",
                    &bridge,
                    "type",
                    "bridge",
                    "vlan_filtering",
                    "1",
                ],
                &bridge,
            )?;
        } else if let (Some(uplink), Some(vlan)) = (
            vswitch.uplinks.first(),
            vlans.iter().find(|vlan| **vlan != TRUNK),
        ) {
            return Err(NetworkError {
                action: "carry a VLAN over the uplink",
                name: uplink.clone(),
                source: std::io::Error::other(format!(
                    "this kernel's bridges do not filter VLANs (no CONFIG_BRIDGE_VLAN_FILTERING, \
                     no 802.1Q): VLAN {vlan} is kept apart on the vSwitch but cannot be tagged \
                     toward an uplink"
                )),
            });
        }
        set_mtu(&bridge, vswitch.mtu)?;
        for port in ports(&bridge) {
            let ours = port.starts_with(&format!("vt{:04x}", self.instance));
            if !ours && !vswitch.uplinks.contains(&port) {
                change_port(&bridge, &port, PortChange::Remove, "release the uplink")?;
            }
        }
        for uplink in &vswitch.uplinks {
            if !ports(&bridge).contains(uplink) {
                change_port(&bridge, uplink, PortChange::Add, "enslave the uplink")?;
            }
            if kernel_vlans {
                vlan(uplink, &["add", "vid", &format!("{}-4094", NATIVE_VID + 1)])?;
            }
            bring_up(uplink)?;
        }
        Ok(())
    }

    /// Deletes the bridge of the vSwitch in `slot` (its uplinks go free; slot 0 stays).
    pub fn remove_switch(&self, slot: u16) -> Result<(), NetworkError> {
        if slot == 0 {
            return Ok(());
        }
        remove_bridge(&self.switch_bridge(slot))
    }

    /// Deletes the bridges of this instance's vSwitches whose slot is not in `kept`.
    pub fn remove_other_switches(&self, kept: &[u16]) -> Result<(), NetworkError> {
        let prefix = format!("{}s", self.bridge());
        let entries = std::fs::read_dir("/sys/class/net").into_iter().flatten();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let slot = name
                .strip_prefix(&prefix)
                .and_then(|s| s.parse::<u16>().ok());
            if slot.is_some_and(|slot| !kept.contains(&slot)) {
                remove_bridge(&name)?;
            }
        }
        Ok(())
    }

    /// Puts an existing TAP on `attachment`'s bridge and, where the bridge filters VLANs, in
    /// its VLAN (a TAP new to the bridge is untagged already).
    pub fn attach(&self, tap: &str, attachment: Attachment) -> Result<(), NetworkError> {
        let bridge = self.switch_bridge(attachment.slot);
        let joined = interface_on(&bridge, tap);
        if !joined {
            change_port(&bridge, tap, PortChange::Add, "add to the bridge TAP")?;
        }
        if (attachment.vlan == 0 && !joined) || !filters_vlans(&bridge) {
            return Ok(());
        }
        join_vlan(tap, attachment.vlan)
    }
}

/// Makes `port` a member of port group VLAN `vlan_id` only (0: untagged in the native VID;
/// 4095: that and tagged in every other VID).
fn join_vlan(port: &str, vlan_id: u16) -> Result<(), NetworkError> {
    let _ = vlan(port, &["del", "vid", &format!("1-{}", TRUNK - 1)]);
    match vlan_id {
        0 => vlan(
            port,
            &["add", "vid", &NATIVE_VID.to_string(), "pvid", "untagged"],
        ),
        TRUNK => {
            vlan(
                port,
                &["add", "vid", &NATIVE_VID.to_string(), "pvid", "untagged"],
            )?;
            vlan(port, &["add", "vid", &format!("{}-4094", NATIVE_VID + 1)])
        }
        id => vlan(port, &["add", "vid", &id.to_string(), "pvid", "untagged"]),
    }
}

/// Runs `bridge vlan <verb> dev <port> <args...>`.
fn vlan(port: &str, args: &[&str]) -> Result<(), NetworkError> {
    let mut argv = vec!["vlan", args[0], "dev", port];
    argv.extend_from_slice(&args[1..]);
    run("bridge", &argv, port)
}

/// Runs iproute2's `program` with `args` about interface `name`.
fn run(program: &str, args: &[&str], name: &str) -> Result<(), NetworkError> {
    let failed = |source| NetworkError {
        action: "configure",
        name: name.into(),
        source,
    };
    let output = Command::new(tool(program))
        .args(args)
        .output()
        .map_err(failed)?;
    if output.status.success() {
        return Ok(());
    }
    let message = String::from_utf8_lossy(&output.stderr).trim().to_string();
    Err(failed(std::io::Error::other(format!(
        "{program} {}: {message}",
        args.join(" ")
    ))))
}

/// Whether the kernel's bridge `bridge` can filter VLANs (it has the `vlan_filtering`
/// attribute only when built with CONFIG_BRIDGE_VLAN_FILTERING).
pub fn filters_vlans(bridge: &str) -> bool {
    std::path::Path::new(&format!("/sys/class/net/{bridge}/bridge/vlan_filtering")).exists()
}

/// The interfaces enslaved to `bridge`.
pub(super) fn ports(bridge: &str) -> Vec<String> {
    std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The bridge `port` is enslaved to, if any.
pub(super) fn master_of(port: &str) -> Option<String> {
    let master = std::fs::read_link(format!("/sys/class/net/{port}/master")).ok()?;
    Some(master.file_name()?.to_string_lossy().into_owned())
}

fn interface_on(bridge: &str, port: &str) -> bool {
    std::fs::read_link(format!("/sys/class/net/{port}/master"))
        .is_ok_and(|master| master.ends_with(bridge))
}

/// Deletes bridge `name` (a no-op if it is gone).
pub(super) fn remove_bridge(name: &str) -> Result<(), NetworkError> {
    if !super::interface_exists(name) {
        return Ok(());
    }
    ifreq::set_flags(name, InterfaceFlags::empty(), InterfaceFlags::IFF_UP)?;
    ifreq::delete_bridge(name)
}
