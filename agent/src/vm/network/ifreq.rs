//! The interface ioctls of vireod's network code, made through nix's ioctl macros on one
//! `struct ifreq` layout: flags, IPv4 address and netmask (read and set), MTU, bridges and their
//! ports (on an AF_INET socket), and persistent TAPs (on /dev/net/tun). Every function here is
//! safe; the unsafe left is each ioctl call on a request this module owns.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use super::NetworkError;

/// The kernel's limit on an interface name, its NUL included (IFNAMSIZ).
pub const IFNAMSIZ: usize = 16;

// Request numbers of linux/sockios.h and linux/if_tun.h.
nix::ioctl_readwrite_bad!(get_flags, 0x8913, IfReq); // SIOCGIFFLAGS
nix::ioctl_write_ptr_bad!(put_flags, 0x8914, IfReq); // SIOCSIFFLAGS
nix::ioctl_readwrite_bad!(get_address, 0x8915, IfReq); // SIOCGIFADDR
nix::ioctl_write_ptr_bad!(put_address, 0x8916, IfReq); // SIOCSIFADDR
nix::ioctl_readwrite_bad!(get_netmask, 0x891b, IfReq); // SIOCGIFNETMASK
nix::ioctl_write_ptr_bad!(put_netmask, 0x891c, IfReq); // SIOCSIFNETMASK
nix::ioctl_write_ptr_bad!(put_mtu, 0x8922, IfReq); // SIOCSIFMTU
nix::ioctl_write_ptr_bad!(add_bridge_named, 0x89a0, std::ffi::c_char); // SIOCBRADDBR
nix::ioctl_write_ptr_bad!(delete_bridge_named, 0x89a1, std::ffi::c_char); // SIOCBRDELBR
nix::ioctl_write_ptr_bad!(add_port, 0x89a2, IfReq); // SIOCBRADDIF
nix::ioctl_write_ptr_bad!(delete_port, 0x89a3, IfReq); // SIOCBRDELIF
nix::ioctl_readwrite_bad!(tun_set_iff, 0x4004_54ca, IfReq); // TUNSETIFF
nix::ioctl_write_int_bad!(tun_set_persist, 0x4004_54cb); // TUNSETPERSIST

/// TUNSETIFF flags: a TAP, no packet-info prefix, with virtio-net headers.
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;

/// `struct ifreq`: a name and the kernel's 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    /// ifr_flags / ifr_ifindex / ifr_mtu / ifr_addr.
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> IfReq {
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            data: [0; 24],
        };
        let len = name.len().min(IFNAMSIZ - 1);
        req.name[..len].copy_from_slice(&name.as_bytes()[..len]);
        req
    }

    fn with_short(name: &str, value: i16) -> IfReq {
        let mut req = IfReq::new(name);
        req.data[..2].copy_from_slice(&value.to_ne_bytes());
        req
    }

    fn with_int(name: &str, value: i32) -> IfReq {
        let mut req = IfReq::new(name);
        req.data[..4].copy_from_slice(&value.to_ne_bytes());
        req
    }

    /// An ifreq whose ifr_addr is the AF_INET sockaddr of `ip`.
    fn with_ipv4(name: &str, ip: Ipv4Addr) -> IfReq {
        let mut req = IfReq::new(name);
        let family = AddressFamily::Inet as u16;
        req.data[..2].copy_from_slice(&family.to_ne_bytes());
        req.data[4..8].copy_from_slice(&ip.octets());
        req
    }

    fn short(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }

    /// The IPv4 address of the AF_INET sockaddr in ifr_addr.
    fn ipv4(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.data[4], self.data[5], self.data[6], self.data[7])
    }
}

fn failed(action: &'static str, name: &str, errno: Errno) -> NetworkError {
    NetworkError {
        action,
        name: name.to_string(),
        source: errno.into(),
    }
}

fn control_socket(name: &str) -> Result<OwnedFd, NetworkError> {
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|errno| failed("open a control socket for", name, errno))
}

/// Sets the interface flags `set` and clears `clear`.
pub fn set_flags(
    name: &str,
    set: InterfaceFlags,
    clear: InterfaceFlags,
) -> Result<(), NetworkError> {
    let socket = control_socket(name)?;
    let mut req = IfReq::new(name);
    // SAFETY: SIOCGIFFLAGS fills the ifreq we own.
    unsafe { get_flags(socket.as_raw_fd(), &mut req) }
        .map_err(|errno| failed("read the flags of", name, errno))?;
    // ifr_flags is a short: the flags that matter here (IFF_UP) fit it.
    let flags = (req.short() | set.bits() as i16) & !(clear.bits() as i16);
    let req = IfReq::with_short(name, flags);
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    unsafe { put_flags(socket.as_raw_fd(), &req) }
        .map_err(|errno| failed("set the flags of", name, errno))?;
    Ok(())
}

/// Gives `name` the IPv4 address `address`/`prefix` in place of its primary one (`None`: takes
/// its address away).
pub fn set_ipv4(name: &str, address: Option<Ipv4Addr>, prefix: u8) -> Result<(), NetworkError> {
    let socket = control_socket(name)?;
    let req = IfReq::with_ipv4(name, address.unwrap_or(Ipv4Addr::UNSPECIFIED));
    // SAFETY: SIOCSIFADDR reads the ifreq we own.
    unsafe { put_address(socket.as_raw_fd(), &req) }
        .map_err(|errno| failed("set the address of", name, errno))?;
    if address.is_some() {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let req = IfReq::with_ipv4(name, mask.into());
        // SAFETY: SIOCSIFNETMASK reads the ifreq we own.
        unsafe { put_netmask(socket.as_raw_fd(), &req) }
            .map_err(|errno| failed("set the netmask of", name, errno))?;
    }
    Ok(())
}

/// Which IPv4 setting of an interface to read.
#[derive(Debug, Clone, Copy)]
pub enum Ipv4Setting {
    /// Its primary address (SIOCGIFADDR).
    Address,
    /// Its netmask (SIOCGIFNETMASK).
    Netmask,
}

/// The IPv4 address or netmask of `name`; None when it has none (or does not exist).
pub fn ipv4_of(name: &str, setting: Ipv4Setting) -> Option<Ipv4Addr> {
    let socket = control_socket(name).ok()?;
    let mut req = IfReq::new(name);
    let fd = socket.as_raw_fd();
    // SAFETY: SIOCGIFADDR / SIOCGIFNETMASK fill the ifreq we own.
    let read = unsafe {
        match setting {
            Ipv4Setting::Address => get_address(fd, &mut req),
            Ipv4Setting::Netmask => get_netmask(fd, &mut req),
        }
    };
    read.ok().map(|_| req.ipv4())
}

/// Sets the MTU of `name`.
pub fn set_mtu(name: &str, mtu: u32) -> Result<(), NetworkError> {
    let socket = control_socket(name)?;
    let req = IfReq::with_int(name, i32::try_from(mtu).unwrap_or(i32::MAX));
    // SAFETY: SIOCSIFMTU reads the ifreq we own.
    unsafe { put_mtu(socket.as_raw_fd(), &req) }
        .map_err(|errno| failed("set the MTU of", name, errno))?;
    Ok(())
}

fn c_name(name: &str, action: &'static str) -> Result<CString, NetworkError> {
    CString::new(name).map_err(|_| failed(action, name, Errno::EINVAL))
}

/// Creates bridge `name` (an existing one is kept).
pub fn add_bridge(name: &str) -> Result<(), NetworkError> {
    let socket = control_socket(name)?;
    let cname = c_name(name, "create bridge")?;
    // SAFETY: SIOCBRADDBR reads the NUL-terminated name we own.
    match unsafe { add_bridge_named(socket.as_raw_fd(), cname.as_ptr()) } {
        Ok(_) | Err(Errno::EEXIST) => Ok(()),
        Err(errno) => Err(failed("create bridge", name, errno)),
    }
}

/// Deletes bridge `name` (it must be down).
pub fn delete_bridge(name: &str) -> Result<(), NetworkError> {
    let socket = control_socket(name)?;
    let cname = c_name(name, "delete bridge")?;
    // SAFETY: SIOCBRDELBR reads the NUL-terminated name we own.
    unsafe { delete_bridge_named(socket.as_raw_fd(), cname.as_ptr()) }
        .map_err(|errno| failed("delete bridge", name, errno))?;
    Ok(())
}

/// What to do with a bridge's port.
#[derive(Debug, Clone, Copy)]
pub enum PortChange {
    /// Enslave it (SIOCBRADDIF).
    Add,
    /// Release it (SIOCBRDELIF).
    Remove,
}

/// Adds `port` to `bridge` or takes it off; `action` names the step in the error.
pub fn change_port(
    bridge: &str,
    port: &str,
    change: PortChange,
    action: &'static str,
) -> Result<(), NetworkError> {
    let index = nix::net::if_::if_nametoindex(port).map_err(|errno| failed(action, port, errno))?;
    let socket = control_socket(bridge)?;
    let req = IfReq::with_int(bridge, i32::try_from(index).unwrap_or(0));
    let fd = socket.as_raw_fd();
    // SAFETY: SIOCBRADDIF / SIOCBRDELIF read the ifreq we own.
    let done = unsafe {
        match change {
            PortChange::Add => add_port(fd, &req),
            PortChange::Remove => delete_port(fd, &req),
        }
    };
    done.map_err(|errno| failed(action, port, errno))?;
    Ok(())
}

/// Makes TAP `name` persistent (creating it) or not (deleting it once no one holds it).
pub fn set_tap_persistence(name: &str, persist: bool) -> Result<(), NetworkError> {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|source| NetworkError {
            action: "open /dev/net/tun for",
            name: name.to_string(),
            source,
        })?;
    let mut req = IfReq::with_short(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    // SAFETY: TUNSETIFF reads and fills the ifreq we own.
    unsafe { tun_set_iff(tun.as_raw_fd(), &mut req) }
        .map_err(|errno| failed("attach to TAP", name, errno))?;
    // SAFETY: TUNSETPERSIST takes an integer.
    unsafe { tun_set_persist(tun.as_raw_fd(), i32::from(persist)) }
        .map_err(|errno| failed("set persistence of TAP", name, errno))?;
    Ok(())
}
