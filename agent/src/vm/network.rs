//! The host side of "VM Network": a Linux bridge vireod creates (host-only: no uplink) and one
//! persistent TAP per NIC of a running VM, enslaved to the bridge, made with ioctls on
//! /dev/net/tun and an AF_INET socket (no external tools). Needs CAP_NET_ADMIN.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The bridge behind "VM Network".
pub const VM_NETWORK_BRIDGE: &str = "vireo-br0";

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const SIOCBRADDBR: libc::c_ulong = 0x89a0;
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

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

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    /// ifr_flags / ifr_ifindex, and padding to the kernel's 24-byte union.
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> IfReq {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        for (slot, byte) in req
            .name
            .iter_mut()
            .zip(name.bytes().take(libc::IFNAMSIZ - 1))
        {
            *slot = byte as libc::c_char;
        }
        req
    }

    fn set_short(&mut self, value: libc::c_short) {
        self.data[..2].copy_from_slice(&value.to_ne_bytes());
    }

    fn set_int(&mut self, value: libc::c_int) {
        self.data[..4].copy_from_slice(&value.to_ne_bytes());
    }

    fn short(&self) -> libc::c_short {
        libc::c_short::from_ne_bytes([self.data[0], self.data[1]])
    }
}

fn error(action: &'static str, name: &str) -> NetworkError {
    NetworkError {
        action,
        name: name.to_string(),
        source: std::io::Error::last_os_error(),
    }
}

fn control_socket(name: &str) -> Result<OwnedFd, NetworkError> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(error("open a control socket for", name));
    }
    // SAFETY: fd is a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets IFF_UP on an interface.
fn bring_up(name: &str) -> Result<(), NetworkError> {
    let socket = control_socket(name)?;
    let mut req = IfReq::new(name);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(error("read the flags of", name));
        }
        req.set_short(req.short() | libc::IFF_UP as libc::c_short);
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(error("bring up", name));
        }
    }
    Ok(())
}

/// Whether a network interface of this name exists.
pub fn interface_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Creates the "VM Network" bridge if it is missing, and brings it up.
pub fn ensure_bridge() -> Result<(), NetworkError> {
    if !interface_exists(VM_NETWORK_BRIDGE) {
        let socket = control_socket(VM_NETWORK_BRIDGE)?;
        let name = CString::new(VM_NETWORK_BRIDGE).expect("no NUL in the bridge name");
        // SAFETY: SIOCBRADDBR reads a NUL-terminated name.
        let added = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCBRADDBR, name.as_ptr()) };
        if added < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            return Err(error("create bridge", VM_NETWORK_BRIDGE));
        }
    }
    bring_up(VM_NETWORK_BRIDGE)
}

fn set_tap_persistence(name: &str, persist: bool) -> Result<(), NetworkError> {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|source| NetworkError {
            action: "open /dev/net/tun for",
            name: name.to_string(),
            source,
        })?;
    let mut req = IfReq::new(name);
    req.set_short(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    // SAFETY: TUNSETIFF reads an ifreq we own; TUNSETPERSIST takes an integer.
    unsafe {
        if libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) < 0 {
            return Err(error("attach to TAP", name));
        }
        if libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST, libc::c_ulong::from(persist)) < 0 {
            return Err(error("set persistence of TAP", name));
        }
    }
    Ok(())
}

/// Creates a persistent TAP on the "VM Network" bridge, up, for a VMM to open.
pub fn create_tap(name: &str) -> Result<(), NetworkError> {
    ensure_bridge()?;
    set_tap_persistence(name, true)?;
    let socket = control_socket(name)?;
    let index = {
        let cname = CString::new(name).map_err(|_| NetworkError {
            action: "name",
            name: name.to_string(),
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        // SAFETY: if_nametoindex reads a NUL-terminated name.
        unsafe { libc::if_nametoindex(cname.as_ptr()) }
    };
    let mut req = IfReq::new(VM_NETWORK_BRIDGE);
    req.set_int(index as libc::c_int);
    // SAFETY: SIOCBRADDIF reads an ifreq we own.
    if unsafe { libc::ioctl(socket.as_raw_fd(), SIOCBRADDIF, &req) } < 0 {
        let failure = error("add to the bridge TAP", name);
        let _ = delete_tap(name);
        return Err(failure);
    }
    bring_up(name)
}

/// Deletes a TAP made by [`create_tap`] (a no-op if it is gone).
pub fn delete_tap(name: &str) -> Result<(), NetworkError> {
    if !interface_exists(name) {
        return Ok(());
    }
    set_tap_persistence(name, false)
}

/// The TAP name of NIC `index` of VM `id` (at most 15 bytes).
pub fn tap_name(vm_id: u32, index: usize) -> String {
    format!("vt{vm_id}n{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_the_kernel_limit() {
        assert_eq!(tap_name(7, 0), "vt7n0");
        assert!(tap_name(u32::MAX, 3).len() < libc::IFNAMSIZ);
    }

    #[test]
    fn taps_join_the_bridge_and_go_away() {
        if !nix_like_root() {
            eprintln!("SKIPPED taps_join_the_bridge_and_go_away: needs CAP_NET_ADMIN");
            return;
        }
        let name = tap_name(999_000 + std::process::id() % 1000, 0);
        create_tap(&name).expect("create the TAP");
        let master = std::fs::read_link(format!("/sys/class/net/{name}/master")).unwrap();
        assert!(master.ends_with(VM_NETWORK_BRIDGE));
        delete_tap(&name).unwrap();
        assert!(!interface_exists(&name));
    }

    fn nix_like_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        root && std::path::Path::new("/dev/net/tun").exists()
    }
}
