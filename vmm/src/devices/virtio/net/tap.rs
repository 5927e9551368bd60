//! A TAP interface opened by name (the VMM opens the TAP it is given and creates nothing), with
//! the virtio-net header (IFF_VNET_HDR) so checksum and segmentation offloads pass through.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, RawFd};

/// Length of the virtio-net header on the TAP (virtio 1.x: num_buffers included).
pub const VNET_HDR_LEN: usize = 12;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca; // _IOW('T', 202, int)
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0; // _IOW('T', 208, unsigned int)
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8; // _IOW('T', 216, int)
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// Offload flags for TUNSETOFFLOAD.
pub const TUN_F_CSUM: u32 = 0x01;
/// TCPv4 segmentation offload.
pub const TUN_F_TSO4: u32 = 0x02;
/// TCPv6 segmentation offload.
pub const TUN_F_TSO6: u32 = 0x04;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
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
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(TapError::Name(name.to_owned()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::Open)?;
        let mut request = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        request.name[..name.len()].copy_from_slice(name.as_bytes());
        let tap = Tap {
            file,
            name: name.to_owned(),
        };
        // SAFETY: TUNSETIFF reads an ifreq we own for the duration of the call.
        tap.ioctl(
            "TUNSETIFF",
            TUNSETIFF,
            &mut request as *mut IfReq as libc::c_ulong,
        )?;
        let mut header_len = VNET_HDR_LEN as libc::c_int;
        tap.ioctl(
            "TUNSETVNETHDRSZ",
            TUNSETVNETHDRSZ,
            &mut header_len as *mut libc::c_int as libc::c_ulong,
        )?;
        Ok(tap)
    }

    fn ioctl(
        &self,
        what: &'static str,
        request: libc::c_ulong,
        arg: libc::c_ulong,
    ) -> Result<(), TapError> {
        // SAFETY: every caller passes a request whose argument matches `arg`'s pointee or value.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), request, arg) };
        if ret < 0 {
            return Err(TapError::Ioctl {
                what,
                name: self.name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Tells the TAP which offloads the guest accepts (TUN_F_* flags).
    pub fn set_offloads(&self, flags: u32) -> Result<(), TapError> {
        self.ioctl("TUNSETOFFLOAD", TUNSETOFFLOAD, libc::c_ulong::from(flags))
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
