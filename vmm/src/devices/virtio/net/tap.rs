//! A TAP interface opened by name (the VMM opens the TAP it is given and creates nothing), with
//! the virtio-net header (IFF_VNET_HDR) so checksum and segmentation offloads pass through.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, RawFd};

use nix::fcntl::OFlag;

/// Length of the virtio-net header on the TAP (virtio 1.x: num_buffers included).
pub const VNET_HDR_LEN: usize = 12;

// The TUN ioctls (linux/if_tun.h). TUNSETIFF is declared _IOW('T', 202, int) but takes an
// ifreq, hence the "bad" form with the declared number.
nix::ioctl_write_ptr_bad!(
    /// TUNSETIFF: attaches the fd to the named interface with the given flags.
    tun_set_iff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<i32>()),
    IfReq
);
nix::ioctl_write_int!(
    /// TUNSETOFFLOAD: the offloads (TUN_F_*) the reader accepts.
    tun_set_offload,
    b'T',
    208
);
nix::ioctl_write_ptr!(
    /// TUNSETVNETHDRSZ: the virtio-net header length on reads and writes.
    tun_set_vnet_hdr_sz,
    b'T',
    216,
    i32
);

/// Longest interface name with its NUL.
const IFNAMSIZ: usize = 16;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
/// Offload flags for TUNSETOFFLOAD.
pub const TUN_F_CSUM: u32 = 0x01;
/// TCPv4 segmentation offload.
pub const TUN_F_TSO4: u32 = 0x02;
/// TCPv6 segmentation offload.
pub const TUN_F_TSO6: u32 = 0x04;

#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// Errors opening or configuring a TAP.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name does not fit an interface name.
    #[error("TAP name {0:?} is empty or longer than 15 bytes")]
    Name(String),
    /// /dev/net/tun could not be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    Open(io::Error),
    /// An ioctl on the TAP failed.
    #[error(
        "{what} on TAP {name} failed: {source} (does the TAP exist in this network namespace?)"
    )]
    Ioctl {
        /// The ioctl.
        what: &'static str,
        /// The TAP.
        name: String,
        /// The error.
        source: io::Error,
    },
}

/// An open, non-blocking TAP.
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to the TAP interface `name` (it must exist; a persistent TAP from `ip tuntap`).
    pub fn open(name: &str) -> Result<Tap, TapError> {
        if name.is_empty() || name.len() >= IFNAMSIZ {
            return Err(TapError::Name(name.to_owned()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
            .open("/dev/net/tun")
            .map_err(TapError::Open)?;
        let mut request = IfReq {
            name: [0; IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        request.name[..name.len()].copy_from_slice(name.as_bytes());
        let tap = Tap {
            file,
            name: name.to_owned(),
        };
        let fd = tap.file.as_raw_fd();
        // SAFETY: TUNSETIFF reads the ifreq we own for the duration of the call.
        tap.check("TUNSETIFF", unsafe { tun_set_iff(fd, &request) })?;
        let header_len = VNET_HDR_LEN as i32;
        // SAFETY: TUNSETVNETHDRSZ reads the int we own for the duration of the call.
        let set = unsafe { tun_set_vnet_hdr_sz(fd, &header_len) };
        tap.check("TUNSETVNETHDRSZ", set)?;
        Ok(tap)
    }

    /// The outcome of ioctl `what` on this TAP.
    fn check(&self, what: &'static str, result: nix::Result<i32>) -> Result<(), TapError> {
        result.map(drop).map_err(|errno| TapError::Ioctl {
            what,
            name: self.name.clone(),
            source: errno.into(),
        })
    }

    /// Tells the TAP which offloads the guest accepts (TUN_F_* flags).
    pub fn set_offloads(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        let set = unsafe { tun_set_offload(self.file.as_raw_fd(), flags as _) };
        self.check("TUNSETOFFLOAD", set)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Read for &Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }
}

impl Write for &Tap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
