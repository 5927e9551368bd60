//! `vireo-vmm`'s command line: [`VmmArgs`] is both the clap parser the VMM runs and the value
//! vireod turns into an argv with [`VmmArgs::to_argv`], so the two cannot drift apart.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Parser;

/// A disk image's format, as vireod pinned it in the `.vmx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// The guest's bytes, never probed (a guest may write any header into it).
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
}

impl DiskFormat {
    /// `raw` or `qcow2`.
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// How a disk's image file is cached on the host (`cache=` of `--disk`, `diskN.cache` in the
/// `.vmx`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Through the host's page cache; a FLUSH is an fdatasync.
    #[default]
    Writeback,
    /// Direct I/O (`O_DIRECT`): no host page cache; a FLUSH is still an fdatasync.
    None,
}

impl CacheMode {
    /// `writeback` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            CacheMode::Writeback => "writeback",
            CacheMode::None => "none",
        }
    }

    /// The mode a name means.
    pub fn from_name(name: &str) -> Option<CacheMode> {
        match name.trim() {
            n if n.eq_ignore_ascii_case("writeback") => Some(CacheMode::Writeback),
            n if n.eq_ignore_ascii_case("none") => Some(CacheMode::None),
            _ => None,
        }
    }
}

/// One virtio-blk disk
/// (`--disk path=FILE[,format=raw|qcow2][,readonly=on|off][,serial=TEXT][,cache=none|writeback]`),
/// or a removable-media drive without a medium (`--disk medium=none,readonly=on[,serial=TEXT]`:
/// a read-only disk of zero bytes until a medium is inserted).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskConfig {
    /// Image file (raw or qcow2).
    pub path: PathBuf,
    /// Its format; probed by magic when absent (only for images the operator trusts).
    #[serde(default)]
    pub format: Option<DiskFormat>,
    /// Whether the guest may only read it.
    pub read_only: bool,
    /// Serial number the guest reads with GET_ID.
    pub serial: Option<String>,
    /// A drive with no medium in it (`path` is then empty).
    #[serde(default)]
    pub no_medium: bool,
    /// How the image file is cached on the host.
    #[serde(default)]
    pub cache: CacheMode,
}

impl DiskConfig {
    /// The `--disk` value that parses back into this disk.
    pub fn to_arg(&self) -> OsString {
        let mut arg = if self.no_medium {
            OsString::from("medium=none")
        } else {
            let mut arg = OsString::from("path=");
            arg.push(&self.path);
            arg
        };
        if let Some(format) = self.format {
            arg.push(format!(",format={}", format.name()));
        }
        if self.read_only {
            arg.push(",readonly=on");
        }
        if let Some(serial) = &self.serial {
            arg.push(format!(",serial={serial}"));
        }
        if self.cache != CacheMode::default() {
            arg.push(format!(",cache={}", self.cache.name()));
        }
        arg
    }
}

impl std::str::FromStr for DiskConfig {
    type Err = String;

    /// Parses
    /// `path=FILE|medium=none[,format=raw|qcow2][,readonly=on|off][,serial=TEXT][,cache=none|writeback]`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut disk = DiskConfig::default();
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("path", path)) if !path.is_empty() => disk.path = PathBuf::from(path),
                Some(("format", "raw")) => disk.format = Some(DiskFormat::Raw),
                Some(("format", "qcow2")) => disk.format = Some(DiskFormat::Qcow2),
                Some(("readonly", "on")) => disk.read_only = true,
                Some(("readonly", "off")) => disk.read_only = false,
                Some(("serial", serial)) => disk.serial = Some(serial.to_owned()),
                Some(("medium", "none")) => disk.no_medium = true,
                Some(("cache", "none")) => disk.cache = CacheMode::None,
                Some(("cache", "writeback")) => disk.cache = CacheMode::Writeback,
                _ => {
                    return Err(format!(
                    "unknown disk option {part:?} (expected path=FILE|medium=none,format=raw|qcow2,readonly=on|off,serial=TEXT,cache=none|writeback)"
                ))
                }
            }
        }
        match (disk.no_medium, disk.path.as_os_str().is_empty()) {
            (false, true) => return Err("a disk needs path=FILE".into()),
            (true, false) => return Err("medium=none names no file".into()),
            (true, true) if !disk.read_only => {
                return Err("a drive without a medium is read-only (readonly=on)".into())
            }
            _ => {}
        }
        Ok(disk)
    }
}

/// One virtio-net card on an existing TAP
/// (`--net tap=NAME[,mac=52:54:00:12:34:56][,link=up|down]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    /// TAP interface name (the VMM opens it; it creates nothing).
    pub tap: String,
    /// MAC address; derived from the TAP name when absent.
    pub mac: Option<[u8; 6]>,
    /// Whether the card starts with its cable unplugged (link down).
    #[serde(default)]
    pub link_down: bool,
}

impl NetConfig {
    /// The MAC the guest sees: the given one, or a locally administered one from the TAP name.
    pub fn mac_address(&self) -> [u8; 6] {
        self.mac.unwrap_or_else(|| {
            let hash = self.tap.bytes().fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
            let [a, b, c, _] = hash.to_le_bytes();
            [0x52, 0x54, 0x00, a, b, c]
        })
    }

    /// The `--net` value that parses back into this card.
    pub fn to_arg(&self) -> OsString {
        let mut arg = format!("tap={}", self.tap);
        if let Some(mac) = self.mac {
            let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
            arg.push_str(&format!(",mac={}", hex.join(":")));
        }
        if self.link_down {
            arg.push_str(",link=down");
        }
        arg.into()
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

impl std::str::FromStr for NetConfig {
    type Err = String;

    /// Parses `tap=NAME[,mac=52:54:00:12:34:56][,link=up|down]`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut net = NetConfig::default();
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("tap", name)) if !name.is_empty() => net.tap = name.to_owned(),
                Some(("mac", mac)) => {
                    net.mac =
                        Some(parse_mac(mac).ok_or_else(|| format!("bad MAC address {mac:?}"))?)
                }
                Some(("link", "up")) => net.link_down = false,
                Some(("link", "down")) => net.link_down = true,
                _ => {
                    return Err(format!(
                        "unknown net option {part:?} (expected tap=NAME,mac=XX:XX:XX:XX:XX:XX,link=up|down)"
                    ))
                }
            }
        }
        if net.tap.is_empty() {
            return Err("a NIC needs tap=NAME".into());
        }
        Ok(net)
    }
}

/// An open file vireod hands the VMM (`--file FD:PATH`): inherited descriptor `fd` is the file
/// vireod resolved at `path`; the VMM opens that path from the descriptor, never by name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandedFd {
    /// The inherited descriptor's number.
    pub fd: i32,
    /// The host path it stands for.
    pub path: PathBuf,
}

impl HandedFd {
    /// The `--file` value that parses back into this one.
    pub fn to_arg(&self) -> OsString {
        let mut arg = OsString::from(format!("{}:", self.fd));
        arg.push(&self.path);
        arg
    }
}

impl std::str::FromStr for HandedFd {
    type Err = String;

    /// Parses `FD:PATH` (the path may hold any character).
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (fd, path) = spec
            .split_once(':')
            .ok_or_else(|| format!("expected FD:PATH, got {spec:?}"))?;
        let fd = fd.parse().map_err(|_| format!("bad descriptor {fd:?}"))?;
        if path.is_empty() {
            return Err("a handed file needs a path".into());
        }
        Ok(HandedFd {
            fd,
            path: PathBuf::from(path),
        })
    }
}

/// How a log rotates, as ESXi rotates `vmware.log` (the `.vmx` keys `log.rotateSize` and
/// `log.keepOld`): when the live file would pass `size` bytes its text becomes the newest older
/// file, `NAME-1.log` (`-1` becomes `-2`, ...), and only `keep` older files are kept. So the
/// log and its rotations never hold more than `size` × (`keep` + 1) bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogRotation {
    /// Largest live file, in bytes.
    pub size: u64,
    /// Older files kept.
    pub keep: usize,
}

impl LogRotation {
    /// Smallest rotation size (a console line must fit).
    pub const MIN_SIZE: u64 = 4096;
    /// Largest rotation size.
    pub const MAX_SIZE: u64 = 1 << 30;
    /// Most older files kept.
    pub const MAX_KEEP: usize = 99;
}

impl Default for LogRotation {
    /// 4 MiB, 6 older files (ESXi's default `log.keepOld`).
    fn default() -> Self {
        LogRotation {
            size: 4 << 20,
            keep: 6,
        }
    }
}

/// The path of older file `n` (from 1) of the log at `path`, named as ESXi names vmware.log's
/// rotations: `serial.log` → `serial-1.log`.
pub fn log_rotation(path: &Path, n: usize) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(extension) => format!("{stem}-{n}.{}", extension.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    path.with_file_name(name)
}

/// Boot a guest kernel on KVM.
#[derive(Parser, Debug, Clone, PartialEq)]
#[command(name = "vireo-vmm", version, about)]
pub struct VmmArgs {
    /// Kernel: a PVH ELF (the test guest, Linux vmlinux) or a Linux bzImage.
    #[arg(long, required_unless_present_any = ["restore", "standby"])]
    pub kernel: Option<PathBuf>,
    /// Resume the VM saved in this directory (vm.state + vm.mem) instead of booting a kernel;
    /// only the serial, control and tools options apply, and --disk path=... replaces the
    /// saved disk images in order (same sizes).
    #[arg(long, conflicts_with_all = ["kernel", "initrd", "nets"])]
    pub restore: Option<PathBuf>,
    /// Start ahead of a restore: jail, make the KVM VM and memory slots for --memory-mib and
    /// --framebuffer, then wait on this inherited socket for the restore's command line (a
    /// JSON array of arguments, `--restore` among them) with its `--file` descriptors sent
    /// beside it, in order (SCM_RIGHTS); exit if the socket ends first.
    #[arg(long, conflicts_with_all = ["kernel", "restore", "initrd", "nets"])]
    pub standby: Option<i32>,
    /// Initial ramdisk.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u8,
    /// vCPUs per socket (a power of two dividing --vcpus); all in one socket when absent.
    #[arg(long = "cores-per-socket")]
    pub cores_per_socket: Option<u8>,
    /// Guest memory in MiB.
    #[arg(long = "memory-mib", default_value_t = 128)]
    pub memory_mib: u64,
    /// Append the serial console to this file (and not to stdout, unless --serial-stdio); it
    /// rotates at --serial-log-rotate-size into NAME-1.log .. NAME-N.log (N: --serial-log-keep-old).
    #[arg(long = "serial-log")]
    pub serial_log: Option<PathBuf>,
    /// Size in bytes at which the serial log rotates.
    #[arg(long = "serial-log-rotate-size", default_value_t = LogRotation::default().size,
          value_parser = clap::value_parser!(u64).range(LogRotation::MIN_SIZE..=LogRotation::MAX_SIZE))]
    pub serial_log_rotate_size: u64,
    /// Older serial logs kept.
    #[arg(long = "serial-log-keep-old", default_value_t = LogRotation::default().keep,
          value_parser = parse_keep)]
    pub serial_log_keep_old: usize,
    /// Also put the serial console on stdout/stdin when --serial-log is given.
    #[arg(long = "serial-stdio")]
    pub serial_stdio: bool,
    /// Serve the JSON-lines control protocol on this Unix socket.
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// A virtio-blk disk:
    /// path=FILE[,format=raw|qcow2][,readonly=on|off][,serial=TEXT][,cache=none|writeback]
    /// (repeatable; cache=none is direct I/O, writeback the default).
    #[arg(long = "disk")]
    pub disks: Vec<DiskConfig>,
    /// A virtio-net card on an existing TAP: tap=NAME[,mac=52:54:00:XX:XX:XX][,link=up|down]
    /// (repeatable).
    #[arg(long = "net")]
    pub nets: Vec<NetConfig>,
    /// Unix socket for the host end of the tools channel (virtio-console).
    #[arg(long = "tools-socket")]
    pub tools_socket: Option<PathBuf>,
    /// Framebuffer size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1024x768", value_parser = parse_size)]
    pub framebuffer: (u32, u32),
    /// Back the framebuffer with a shared mapping of this file (created or replaced), so that a
    /// console server can map it read-only and see the screen live.
    #[arg(long = "framebuffer-file")]
    pub framebuffer_file: Option<PathBuf>,
    /// Run jailed as this user: own mount namespace showing only the --jail-dir directories
    /// (and /dev/kvm, /dev/net/tun), no capabilities, no new privileges.
    #[arg(long = "jail-uid", requires = "jail_gid")]
    pub jail_uid: Option<u32>,
    /// The jailed VMM's group.
    #[arg(long = "jail-gid", requires = "jail_uid")]
    pub jail_gid: Option<u32>,
    /// A directory the jailed VMM sees, at the same path (repeatable): every file it opens
    /// must lie in one.
    #[arg(long = "jail-dir", requires = "jail_uid")]
    pub jail_dirs: Vec<PathBuf>,
    /// An open file handed over, FD:PATH (repeatable): the VMM opens PATH (a disk layer, medium,
    /// kernel or initrd) from inherited descriptor FD, and follows qcow2 backing names only to
    /// handed files.
    #[arg(long = "file")]
    pub files: Vec<HandedFd>,
}

fn parse_keep(text: &str) -> Result<usize, String> {
    text.parse()
        .ok()
        .filter(|keep| *keep <= LogRotation::MAX_KEEP)
        .ok_or_else(|| format!("expected 0..={}", LogRotation::MAX_KEEP))
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text.split_once('x').ok_or("expected WIDTHxHEIGHT")?;
    Ok((
        w.parse().map_err(|_| "bad width")?,
        h.parse().map_err(|_| "bad height")?,
    ))
}

impl Default for VmmArgs {
    /// No kernel or restore directory yet; every other option at the parser's default.
    fn default() -> Self {
        VmmArgs {
            kernel: None,
            restore: None,
            standby: None,
            initrd: None,
            cmdline: String::new(),
            vcpus: 1,
            cores_per_socket: None,
            memory_mib: 128,
            serial_log: None,
            serial_log_rotate_size: LogRotation::default().size,
            serial_log_keep_old: LogRotation::default().keep,
            serial_stdio: false,
            control: None,
            disks: Vec::new(),
            nets: Vec::new(),
            tools_socket: None,
            framebuffer: (1024, 768),
            framebuffer_file: None,
            jail_uid: None,
            jail_gid: None,
            jail_dirs: Vec::new(),
            files: Vec::new(),
        }
    }
}

impl VmmArgs {
    /// How the serial log rotates.
    pub fn serial_log_rotation(&self) -> LogRotation {
        LogRotation {
            size: self.serial_log_rotate_size,
            keep: self.serial_log_keep_old,
        }
    }

    /// The arguments (after the program name) that [`VmmArgs::parse_from`] turns back into
    /// these. A restore leaves out the options it takes from the saved VM.
    pub fn to_argv(&self) -> Vec<OsString> {
        let mut argv = Vec::new();
        let mut option = |name: &str, value: OsString| {
            argv.push(OsString::from(name));
            argv.push(value);
        };
        if let Some(dir) = &self.restore {
            option("--restore", dir.into());
        } else if let Some(channel) = self.standby {
            option("--standby", channel.to_string().into());
            option("--memory-mib", self.memory_mib.to_string().into());
            let (width, height) = self.framebuffer;
            option("--framebuffer", format!("{width}x{height}").into());
        } else {
            if let Some(kernel) = &self.kernel {
                option("--kernel", kernel.into());
            }
            if let Some(initrd) = &self.initrd {
                option("--initrd", initrd.into());
            }
            option("--cmdline", self.cmdline.clone().into());
            option("--vcpus", self.vcpus.to_string().into());
            if let Some(cores) = self.cores_per_socket {
                option("--cores-per-socket", cores.to_string().into());
            }
            option("--memory-mib", self.memory_mib.to_string().into());
            let (width, height) = self.framebuffer;
            option("--framebuffer", format!("{width}x{height}").into());
            for net in &self.nets {
                option("--net", net.to_arg());
            }
        }
        for disk in &self.disks {
            option("--disk", disk.to_arg());
        }
        let paths = [
            ("--serial-log", &self.serial_log),
            ("--control", &self.control),
            ("--tools-socket", &self.tools_socket),
            ("--framebuffer-file", &self.framebuffer_file),
        ];
        for (name, path) in paths {
            if let Some(path) = path {
                option(name, path.into());
            }
        }
        if self.serial_log.is_some() {
            let rotation = self.serial_log_rotation();
            option("--serial-log-rotate-size", rotation.size.to_string().into());
            option("--serial-log-keep-old", rotation.keep.to_string().into());
        }
        if let (Some(uid), Some(gid)) = (self.jail_uid, self.jail_gid) {
            option("--jail-uid", uid.to_string().into());
            option("--jail-gid", gid.to_string().into());
            for dir in &self.jail_dirs {
                option("--jail-dir", dir.into());
            }
        }
        for file in &self.files {
            option("--file", file.to_arg());
        }
        if self.serial_stdio {
            argv.push("--serial-stdio".into());
        }
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: Vec<OsString>) -> VmmArgs {
        let mut full = vec![OsString::from("vireo-vmm")];
        full.extend(argv);
        VmmArgs::try_parse_from(full).unwrap()
    }

    #[test]
    fn a_boot_command_line_parses_back_into_itself() {
        let args = VmmArgs {
            kernel: Some("/ds/vm/kernel".into()),
            initrd: Some("/ds/vm/initrd".into()),
            cmdline: "console=ttyS0 quiet".into(),
            vcpus: 4,
            cores_per_socket: Some(2),
            memory_mib: 512,
            serial_log: Some("/ds/vm/serial.log".into()),
            serial_log_rotate_size: 65536,
            serial_log_keep_old: 2,
            control: Some("/run/vm/control.sock".into()),
            disks: vec![
                "path=/ds/vm/a.qcow2,format=qcow2,serial=vireo-disk0"
                    .parse()
                    .unwrap(),
                "path=/ds/vm/b.img,format=raw,cache=none".parse().unwrap(),
                "path=/ds/vm/b.raw,readonly=on".parse().unwrap(),
                "medium=none,readonly=on,serial=vireo-cd-ide1:0"
                    .parse()
                    .unwrap(),
            ],
            nets: vec![
                "tap=vt1n0,mac=52:54:00:0a:bb:0c".parse().unwrap(),
                "tap=vt1n1,link=down".parse().unwrap(),
            ],
            tools_socket: Some("/run/vm/tools.sock".into()),
            framebuffer: (800, 600),
            framebuffer_file: Some("/run/vm/fb".into()),
            jail_uid: Some(65534),
            jail_gid: Some(65534),
            jail_dirs: vec!["/ds/vm".into(), "/run/vm".into()],
            files: vec!["7:/ds/vm/a:b.qcow2".parse().unwrap()],
            ..VmmArgs::default()
        };
        assert_eq!(parse(args.to_argv()), args);
    }

    #[test]
    fn a_restore_command_line_parses_back_into_itself() {
        let args = VmmArgs {
            restore: Some("/ds/vm/suspend".into()),
            disks: vec!["path=/ds/vm/a-000001.qcow2".parse().unwrap()],
            serial_stdio: true,
            ..VmmArgs::default()
        };
        assert_eq!(parse(args.to_argv()), args);
    }

    #[test]
    fn a_standby_command_line_parses_back_into_itself() {
        let args = VmmArgs {
            standby: Some(5),
            memory_mib: 1024,
            framebuffer: (800, 600),
            control: Some("/run/vm/control.sock".into()),
            jail_uid: Some(65534),
            jail_gid: Some(65534),
            jail_dirs: vec!["/run/vm".into()],
            ..VmmArgs::default()
        };
        assert_eq!(parse(args.to_argv()), args);
        let mut argv = args.to_argv();
        argv.extend(["--restore".into(), "/ds/vm/suspend".into()]);
        let mut full = vec![OsString::from("vireo-vmm")];
        full.extend(argv);
        assert!(VmmArgs::try_parse_from(full).is_err());
    }

    #[test]
    fn bad_disk_and_net_specs_are_refused() {
        assert!("readonly=on".parse::<DiskConfig>().is_err());
        assert!("path=/x,format=vmdk".parse::<DiskConfig>().is_err());
        assert!("path=/x,cache=directsync".parse::<DiskConfig>().is_err());
        assert!("medium=none".parse::<DiskConfig>().is_err());
        assert!("path=/x,medium=none,readonly=on"
            .parse::<DiskConfig>()
            .is_err());
        assert!("tap=vt0,mac=52:54".parse::<NetConfig>().is_err());
        assert!("mac=52:54:00:00:00:01".parse::<NetConfig>().is_err());
        assert!("/x".parse::<HandedFd>().is_err());
        assert!("x:/x".parse::<HandedFd>().is_err());
        assert!("3:".parse::<HandedFd>().is_err());
    }

    #[test]
    fn rotations_are_named_as_esxi_names_vmware_logs() {
        let log = Path::new("/ds/vm/serial.log");
        assert_eq!(log_rotation(log, 1), Path::new("/ds/vm/serial-1.log"));
        assert_eq!(
            log_rotation(Path::new("/ds/vm/vireo-vmm.log"), 12),
            Path::new("/ds/vm/vireo-vmm-12.log")
        );
        let mut argv = vec![OsString::from("vireo-vmm"), "--kernel".into(), "/k".into()];
        argv.extend(["--serial-log-keep-old".into(), "100".into()]);
        assert!(
            VmmArgs::try_parse_from(&argv).is_err(),
            "keep-old is capped"
        );
        argv.truncate(3);
        argv.extend(["--serial-log-rotate-size".into(), "10".into()]);
        assert!(VmmArgs::try_parse_from(&argv).is_err(), "a line must fit");
    }
}
