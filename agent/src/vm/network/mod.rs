//! The host side of "VM Network": a Linux bridge vireod creates (host-only: no uplink) and one
//! persistent TAP per NIC of a running VM, enslaved to the bridge, made with ioctls on
//! /dev/net/tun and an AF_INET socket (no external tools). Needs CAP_NET_ADMIN.
//!
//! Interface names are host-global, so every name carries this vireod's instance id (four hex
//! digits kept in the data dir, chosen at first start so that no other instance's bridge has
//! it): the bridge is `vbr<id>`, NIC `k` of VM `n` is `vt<id><n in hex>n<k>`. Two vireods on
//! one host never share a TAP or an L2 segment; [`Network::tap_name`] is the one naming
//! function (crash recovery finds stale TAPs with it). `nat` adds the NAT network on the bridge.
//! A clean stop of vireod with none of its VMs running removes all of it ([`teardown`]); the
//! e2e tests check after every vireod they stop that nothing was left.

pub mod bridge;
mod ifreq;
pub mod leases;
pub mod mirror;
pub mod nat;
pub mod objects;
pub mod security;
pub mod switches;
pub mod vnic;

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::net::if_::InterfaceFlags;

use crate::config::VmNetworkMode;
pub use bridge::Attachment;
pub use ifreq::set_ipv4;
use switches::Switches;

/// The file in the data dir that keeps the instance id.
const INSTANCE_FILE: &str = "network-instance";

/// Why a network device could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {name}: {source}")]
pub struct NetworkError {
    /// What was attempted.
    pub action: &'static str,
    /// The interface.
    pub name: String,
    /// The system's answer.
    pub source: std::io::Error,
}

/// Sets IFF_UP on an interface.
fn bring_up(name: &str) -> Result<(), NetworkError> {
    ifreq::set_flags(name, InterfaceFlags::IFF_UP, InterfaceFlags::empty())
}

/// A system tool by name: from /usr/sbin where Debian puts it (root's PATH may lack it), else
/// looked up on PATH.
fn tool(name: &str) -> std::path::PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.exists() {
        sbin
    } else {
        std::path::PathBuf::from(name)
    }
}

/// Whether a network interface of this name exists.
pub fn interface_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Deletes a TAP made by [`Network::create_tap`] (a no-op if it is gone).
pub fn delete_tap(name: &str) -> Result<(), NetworkError> {
    if !interface_exists(name) {
        return Ok(());
    }
    ifreq::set_tap_persistence(name, false)
}

/// The interfaces of one vireod instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    instance: u16,
}

/// Why the instance id could not be read or made.
#[derive(Debug, thiserror::Error)]
#[error("cannot read or make the network instance id {path}: {source}")]
pub struct InstanceError {
    /// The file.
    pub path: std::path::PathBuf,
    /// Why.
    pub source: std::io::Error,
}

impl Network {
    /// The network of the vireod whose data dir is `data_dir` (its id made at first use).
    pub fn of(data_dir: &Path) -> Result<Network, InstanceError> {
        let path = data_dir.join(INSTANCE_FILE);
        let failed = |source| InstanceError {
            path: path.clone(),
            source,
        };
        loop {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let instance = u16::from_str_radix(text.trim(), 16)
                        .map_err(|_| failed(std::io::ErrorKind::InvalidData.into()))?;
                    return Ok(Network { instance });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(failed(e)),
            }
            let instance = unused_instance().map_err(failed)?;
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            match created {
                Ok(mut file) => {
                    file.write_all(format!("{instance:04x}\n").as_bytes())
                        .map_err(failed)?;
                    return Ok(Network { instance });
                }
                // Another thread made it first: read theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(failed(e)),
            }
        }
    }

    /// The bridge behind "VM Network".
    pub fn bridge(&self) -> String {
        format!("vbr{:04x}", self.instance)
    }

    /// The TAP name of NIC `index` of VM `vm_id` (at most 15 bytes for VM ids below 2^28 and
    /// ten NICs).
    pub fn tap_name(&self, vm_id: u32, index: usize) -> String {
        format!("vt{:04x}{vm_id:x}n{index}", self.instance)
    }

    /// Creates the default bridge if it is missing, and brings it up.
    pub fn ensure_bridge(&self) -> Result<(), NetworkError> {
        self.ensure_named_bridge(&self.bridge())
    }

    /// Creates bridge `bridge` if it is missing, and brings it up.
    fn ensure_named_bridge(&self, bridge: &str) -> Result<(), NetworkError> {
        if !interface_exists(bridge) {
            ifreq::add_bridge(bridge)?;
        }
        bring_up(bridge)
    }

    /// Creates a persistent TAP on `attachment`'s bridge and VLAN, up, for a VMM to open.
    pub fn create_tap(&self, name: &str, attachment: Attachment) -> Result<(), NetworkError> {
        ifreq::set_tap_persistence(name, true)?;
        if let Err(failure) = self.attach(name, attachment) {
            let _ = delete_tap(name);
            return Err(failure);
        }
        bring_up(name)
    }
}

/// Brings "VM Network" to what `config` asks for at start: a NAT network made whole (and what a
/// killed vireod left of it reconciled), or, for an internal one, what an earlier NAT setup of
/// this instance left removed. Failures are logged: VMs still get the bridge.
pub fn reconcile(config: &crate::config::Config, switches: &Switches) {
    let data_dir = &config.data_dir;
    let outcome = match Network::of(data_dir) {
        Err(error) => Err(error.to_string()),
        Ok(network) => reconcile_switches(network, switches)
            .map_err(|error| error.to_string())
            .and_then(|()| reconcile_nat(config, network)),
    };
    match outcome {
        Ok(what) => tracing::info!("VM Network: {what}"),
        Err(error) => tracing::error!("VM Network is not set up: {error}"),
    }
}

/// Every vSwitch's bridge made whole, and this instance's bridges of removed vSwitches gone.
pub fn reconcile_switches(network: Network, switches: &Switches) -> Result<(), NetworkError> {
    for vswitch in &switches.vswitches {
        network.ensure_switch(vswitch, &switches.vlans_on(&vswitch.name))?;
    }
    let slots: Vec<u16> = switches.vswitches.iter().map(|v| v.slot).collect();
    network.remove_other_switches(&slots)
}

/// The NAT pieces on the default bridge made whole, or removed for an internal network.
fn reconcile_nat(config: &crate::config::Config, network: Network) -> Result<String, String> {
    let data_dir = &config.data_dir;
    match config.vm_network {
        VmNetworkMode::Nat => nat::Nat::of(network, data_dir).and_then(|nat| {
            nat.bring_up()?;
            Ok(format!(
                "NAT on {} behind {}",
                nat.subnet(),
                network.bridge()
            ))
        }),
        VmNetworkMode::Internal => {
            nat::remove(network, data_dir).map(|()| format!("internal on {}", network.bridge()))
        }
    }
    .map_err(|error| error.to_string())
}

/// On a clean stop of vireod with none of its VMs running: removes everything this instance
/// added to the host's network — its dnsmasq (stopped explicitly: it drops its uid, so it
/// would outlive vireod), its nft tables, its TAPs and its bridges. With VMs running nothing is
/// removed: they run on across the restart and keep their network.
pub fn teardown(data_dir: &Path, vms_running: usize) {
    if vms_running > 0 {
        return tracing::info!("{vms_running} VMs run on: their network stays");
    }
    if !data_dir.join(INSTANCE_FILE).exists() {
        return;
    }
    let removed = Network::of(data_dir)
        .map_err(|e| e.to_string())
        .and_then(|network| network.remove_everything(data_dir));
    match removed {
        Ok(()) => tracing::info!("removed this vireod's bridges, TAPs, nft table and dnsmasq"),
        Err(error) => tracing::error!("cannot remove this vireod's network: {error}"),
    }
}

impl Network {
    /// Removes the NAT pieces, every TAP and every bridge of this instance.
    fn remove_everything(&self, data_dir: &Path) -> Result<(), String> {
        nat::remove(*self, data_dir).map_err(|e| e.to_string())?;
        security::remove(*self).map_err(|e| e.to_string())?;
        let taps = format!("vt{:04x}", self.instance);
        let entries = std::fs::read_dir("/sys/class/net").into_iter().flatten();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&taps) {
                delete_tap(&name).map_err(|e| e.to_string())?;
            }
        }
        self.remove_other_switches(&[])
            .and_then(|()| bridge::remove_bridge(&self.bridge()))
            .map_err(|e| e.to_string())
    }
}

/// A random instance id whose bridge does not exist on this host.
fn unused_instance() -> std::io::Result<u16> {
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    loop {
        let mut bytes = [0u8; 2];
        urandom.read_exact(&mut bytes)?;
        let candidate = u16::from_ne_bytes(bytes);
        if !interface_exists(&format!("vbr{candidate:04x}")) {
            return Ok(candidate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vireo-net-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_carry_the_instance_and_fit_the_kernel_limit() {
        let dir = scratch("names");
        let network = Network::of(&dir).unwrap();
        assert_eq!(Network::of(&dir).unwrap(), network, "kept in the data dir");
        let id = format!("{:04x}", network.instance);
        assert_eq!(network.tap_name(26, 1), format!("vt{id}1an1"));
        assert_eq!(network.bridge(), format!("vbr{id}"));
        assert!(network.tap_name((1 << 28) - 1, 9).len() < ifreq::IFNAMSIZ);
        let other = Network {
            instance: network.instance.wrapping_add(1),
        };
        assert_ne!(other.tap_name(26, 1), network.tap_name(26, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn taps_join_the_bridge_and_go_away() {
        if !nix_like_root() {
            eprintln!("SKIPPED taps_join_the_bridge_and_go_away: needs CAP_NET_ADMIN");
            return;
        }
        let dir = scratch("taps");
        let network = Network::of(&dir).unwrap();
        let name = network.tap_name(999_000 + std::process::id() % 1000, 0);
        network.ensure_bridge().unwrap();
        network
            .create_tap(&name, Attachment::DEFAULT)
            .expect("create the TAP");
        let master = std::fs::read_link(format!("/sys/class/net/{name}/master")).unwrap();
        assert!(master.ends_with(network.bridge()));
        delete_tap(&name).unwrap();
        assert!(!interface_exists(&name));
        bridge::remove_bridge(&network.bridge()).unwrap();
        assert!(!interface_exists(&network.bridge()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn nix_like_root() -> bool {
        nix::unistd::geteuid().is_root() && std::path::Path::new("/dev/net/tun").exists()
    }
}
