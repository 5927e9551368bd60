//! The test guest's virtio drivers against `vireo-vmm`'s devices: seeded blocks written by the
//! guest are on the host file and the other way round, flushed data survives SIGKILL, a
//! read-only disk refuses writes, two disks, the tools channel echoes, the guest answers ping
//! inside a network namespace, a power-off is answered once the VMM has let go of its TAP.
//! Shell commands and outputs: tests/guest/README.md.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use vireo_tests::{kvm_available, scratch_dir, test_guest, Vmm};

const BOOT: Duration = Duration::from_secs(60);
const SECTOR: usize = 512;

/// The guest's seeded pattern of one sector (tests/guest/README.md, "Seeded pattern").
fn pattern_sector(seed: u64, sector: u64) -> Vec<u8> {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut state = seed ^ sector.wrapping_mul(GOLDEN);
    if state == 0 {
        state = GOLDEN;
    }
    let mut out = Vec::with_capacity(SECTOR);
    for _ in 0..SECTOR / 8 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out
}

/// FNV-1a 64, as `blk sum` prints it.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A zero-filled raw disk of `sectors` sectors.
fn raw_disk(dir: &Path, name: &str, sectors: u64) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).expect("create disk");
    file.set_len(sectors * SECTOR as u64).expect("size disk");
    path
}

fn sectors_of(path: &Path, first: u64, count: u64) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("read disk");
    bytes[first as usize * SECTOR..(first + count) as usize * SECTOR].to_vec()
}

fn assert_pattern(path: &Path, first: u64, count: u64, seed: u64) {
    let bytes = sectors_of(path, first, count);
    for (i, sector) in bytes.chunks(SECTOR).enumerate() {
        let number = first + i as u64;
        assert!(
            sector == pattern_sector(seed, number).as_slice(),
            "sector {number} of {} does not hold seed {seed}'s pattern",
            path.display()
        );
    }
}

/// Boots the shell with `extra` arguments (disks, tools socket, NICs) and waits for the prompt.
fn boot_shell(command_line: &str, extra: &[String]) -> Vmm {
    let mut args: Vec<String> = vec![
        "--kernel".into(),
        test_guest().display().to_string(),
        "--vcpus".into(),
        "2".into(),
        "--memory-mib".into(),
        "128".into(),
        "--cmdline".into(),
        format!("scenario=shell {command_line}"),
    ];
    args.extend_from_slice(extra);
    let mut vmm = Vmm::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    vmm.expect("vireo> ", BOOT);
    vmm
}

fn disk_arg(path: &Path, options: &str) -> String {
    format!("path={}{options}", path.display())
}

fn boot_with_disks(disks: &[(&Path, &str)]) -> Vmm {
    let mut extra = Vec::new();
    for (path, options) in disks {
        extra.push("--disk".to_string());
        extra.push(disk_arg(path, options));
    }
    boot_shell("", &extra)
}

#[test]
fn blocks_the_guest_writes_are_in_the_file_and_checksum_alike() {
    if !kvm_available("blocks_the_guest_writes_are_in_the_file_and_checksum_alike") {
        return;
    }
    let dir = scratch_dir("virtio-blk-guest-writes");
    let disk = raw_disk(&dir, "disk.raw", 8192);
    let mut vmm = boot_with_disks(&[(&disk, ",serial=written")]);
    assert_eq!(vmm.shell("blk write 0 100 3000 7"), "write ok");
    assert_eq!(vmm.shell("blk verify 0 100 3000 7"), "verify ok");
    assert_eq!(vmm.shell("blk flush 0"), "flush ok");
    assert_pattern(&disk, 100, 3000, 7);
    assert!(
        sectors_of(&disk, 0, 100).iter().all(|&b| b == 0),
        "sectors before the range untouched"
    );
    assert!(
        sectors_of(&disk, 3100, 100).iter().all(|&b| b == 0),
        "sectors after the range untouched"
    );
    let expected = fnv1a(&sectors_of(&disk, 90, 200));
    assert_eq!(
        vmm.shell("blk sum 0 90 200"),
        format!("sum={expected:016x}")
    );
    assert_eq!(vmm.shell("blk zero 0 200 8"), "zero ok");
    assert_eq!(vmm.shell("blk discard 0 300 8"), "discard ok");
    assert_eq!(
        vmm.shell("blk verify 0 100 200 7"),
        "verify mismatch sector=200"
    );
    assert!(sectors_of(&disk, 200, 8).iter().all(|&b| b == 0));
    assert!(sectors_of(&disk, 300, 8).iter().all(|&b| b == 0));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn blocks_the_host_writes_verify_in_the_guest() {
    if !kvm_available("blocks_the_host_writes_verify_in_the_guest") {
        return;
    }
    let dir = scratch_dir("virtio-blk-host-writes");
    let disk = raw_disk(&dir, "disk.raw", 2048);
    let mut contents: Vec<u8> = (0..1024).flat_map(|s| pattern_sector(99, s)).collect();
    contents[1000 * SECTOR + 17] ^= 0x40; // one flipped bit in sector 1000
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .expect("open disk");
    file.write_all(&contents).expect("write disk");
    drop(file);
    let mut vmm = boot_with_disks(&[(&disk, "")]);
    assert_eq!(vmm.shell("blk verify 0 0 1000 99"), "verify ok");
    assert_eq!(
        vmm.shell("blk verify 0 0 1024 99"),
        "verify mismatch sector=1000"
    );
    assert_eq!(
        vmm.shell("blk verify 0 0 1000 98"),
        "verify mismatch sector=0"
    );
    let expected = fnv1a(&contents);
    assert_eq!(
        vmm.shell("blk sum 0 0 1024"),
        format!("sum={expected:016x}")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn flushed_blocks_survive_sigkill_of_the_vmm() {
    if !kvm_available("flushed_blocks_survive_sigkill_of_the_vmm") {
        return;
    }
    let dir = scratch_dir("virtio-blk-flush-kill");
    let disk = raw_disk(&dir, "disk.raw", 4096);
    let mut vmm = boot_with_disks(&[(&disk, "")]);
    assert_eq!(vmm.shell("blk write 0 0 4096 1234"), "write ok");
    assert_eq!(vmm.shell("blk flush 0"), "flush ok");
    vmm.signal("KILL");
    let exit = vmm.wait(BOOT);
    assert!(!exit.status.success(), "killed: {exit:?}");
    assert_pattern(&disk, 0, 4096, 1234);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_read_only_disk_refuses_writes_with_ioerr() {
    if !kvm_available("a_read_only_disk_refuses_writes_with_ioerr") {
        return;
    }
    let dir = scratch_dir("virtio-blk-read-only");
    let disk = raw_disk(&dir, "disk.raw", 1024);
    let mut vmm = boot_with_disks(&[(&disk, ",readonly=on,serial=frozen")]);
    assert_eq!(
        vmm.shell("blk list"),
        "blk0 capacity=1024 ro=1 serial=frozen"
    );
    assert_eq!(
        vmm.shell("blk write 0 0 8 5"),
        "error: blk0: write at sector 0: status 1 (IOERR)"
    );
    assert_eq!(
        vmm.shell("blk discard 0 0 8"),
        "error: blk0: the device does not support discard"
    );
    assert_eq!(vmm.shell("blk verify 0 0 8 5"), "verify mismatch sector=0");
    assert!(std::fs::read(&disk).unwrap().iter().all(|&b| b == 0));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn two_disks_are_listed_and_written_separately() {
    if !kvm_available("two_disks_are_listed_and_written_separately") {
        return;
    }
    let dir = scratch_dir("virtio-blk-two-disks");
    let first = raw_disk(&dir, "first.raw", 2048);
    let second = raw_disk(&dir, "second.raw", 4096);
    let mut vmm = boot_with_disks(&[(&first, ",serial=first"), (&second, ",serial=second")]);
    assert_eq!(
        vmm.shell("blk list"),
        "blk0 capacity=2048 ro=0 serial=first\nblk1 capacity=4096 ro=0 serial=second"
    );
    assert_eq!(vmm.shell("blk write 0 0 2048 11"), "write ok");
    assert_eq!(vmm.shell("blk write 1 0 4096 22"), "write ok");
    assert_eq!(vmm.shell("blk verify 0 0 2048 11"), "verify ok");
    assert_eq!(
        vmm.shell("blk verify 1 0 2048 11"),
        "verify mismatch sector=0"
    );
    assert_eq!(vmm.shell("blk flush 1"), "flush ok");
    assert_pattern(&first, 0, 2048, 11);
    assert_pattern(&second, 0, 4096, 22);
    assert_eq!(
        vmm.shell("blk write 0 2000 100 1"),
        "error: blk0: sectors 2000+100 beyond capacity 2048"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_tools_channel_echoes_what_the_host_sends() {
    if !kvm_available("the_tools_channel_echoes_what_the_host_sends") {
        return;
    }
    let dir = scratch_dir("virtio-tools-echo");
    let socket = dir.join("tools.sock");
    let extra = ["--tools-socket".to_string(), socket.display().to_string()];
    let mut vmm = boot_shell("", &extra);
    assert_eq!(vmm.shell("tools echo"), "tools echo on");
    let mut stream = UnixStream::connect(&socket).expect("connect tools socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let message: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut reader = stream.try_clone().unwrap();
    let expected = message.len();
    let echo = std::thread::spawn(move || {
        let mut back = vec![0u8; expected];
        reader.read_exact(&mut back).map(|()| back)
    });
    stream.write_all(&message).expect("send to the guest");
    let back = echo.join().unwrap().expect("read the echo");
    assert!(back == message, "the echo differs from what was sent");
    assert_eq!(
        vmm.shell("tools info"),
        format!("tools rx={expected} tx={expected} echo=on")
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A TAP created in this namespace and moved, once the VMM holds it, into a network
/// namespace of its own with the host-side address; the namespace is removed on drop.
struct TapNamespace {
    namespace: String,
    tap: String,
}

fn run(argv: &[&str]) -> bool {
    Command::new(argv[0])
        .args(&argv[1..])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl TapNamespace {
    fn create(namespace: &str, tap: &str) -> TapNamespace {
        let created = TapNamespace {
            namespace: namespace.to_owned(),
            tap: tap.to_owned(),
        };
        let _ = run(&["ip", "netns", "del", namespace]);
        let _ = run(&["ip", "link", "del", tap]);
        assert!(run(&["ip", "netns", "add", namespace]), "ip netns add");
        assert!(
            run(&["ip", "tuntap", "add", "dev", tap, "mode", "tap"]),
            "ip tuntap add"
        );
        created
    }

    /// Moves the TAP into the namespace and gives it `address` there.
    fn move_in(&self, address: &str) {
        let (ns, tap) = (self.namespace.as_str(), self.tap.as_str());
        assert!(
            run(&["ip", "link", "set", tap, "netns", ns]),
            "move the TAP"
        );
        assert!(run(&[
            "ip", "netns", "exec", ns, "ip", "addr", "add", address, "dev", tap
        ]));
        assert!(run(&[
            "ip", "netns", "exec", ns, "ip", "link", "set", tap, "up"
        ]));
    }
}

impl Drop for TapNamespace {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.namespace]);
        let _ = run(&["ip", "link", "del", &self.tap]);
    }
}

/// Sends three ICMP echo requests from inside `namespace` (python3, raw socket) and returns
/// how many were answered.
fn ping_from(namespace: &str, address: &str) -> u32 {
    const PING: &str = r#"
import socket, struct, sys
def csum(b):
    b += b'\0' * (len(b) % 2)
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(5)
answered = 0
for seq in range(3):
    payload = b'vireo-%d' % seq
    head = struct.pack('!BBHHH', 8, 0, 0, 0x5652, seq)
    s.sendto(struct.pack('!BBHHH', 8, 0, csum(head + payload), 0x5652, seq) + payload, (sys.argv[1], 0))
    try:
        while True:
            data, _ = s.recvfrom(2048)
            icmp = data[(data[0] & 15) * 4:]
            if icmp[0] == 0 and icmp[8:] == payload:
                answered += 1
                break
    except socket.timeout:
        pass
print(answered)
"#;
    let output = Command::new("ip")
        .args(["netns", "exec", namespace, "python3", "-c", PING, address])
        .output()
        .expect("run python3 in the namespace");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn the_guest_answers_ping_inside_a_network_namespace() {
    if !kvm_available("the_guest_answers_ping_inside_a_network_namespace") {
        return;
    }
    let pid = std::process::id();
    let network = TapNamespace::create(&format!("vireo-ping-{pid}"), &format!("vtap{pid}"));
    let extra = ["--net".to_string(), format!("tap={}", network.tap)];
    let mut vmm = boot_shell("vireo.ip=10.0.2.15/24", &extra);
    network.move_in("10.0.2.2/24");
    assert_eq!(ping_from(&network.namespace, "10.0.2.15"), 3);
    let info = vmm.shell("net info");
    assert!(info.contains(" ip=10.0.2.15/24 "), "{info}");
    assert!(info.ends_with(" echo=3"), "{info}");
}

/// An RGB image decoded from the VMM's screenshot PNG (8-bit RGB, filter 0 rows, which is
/// what `vireo-vmm` writes). zlib is inflated by python3 (already needed for ping) to keep the
/// tests crate free of a compression dependency.
struct Screenshot {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Screenshot {
    fn decode(png: &[u8]) -> Screenshot {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        let (mut at, mut header, mut compressed) = (8, None, Vec::new());
        while at + 8 <= png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let kind = &png[at + 4..at + 8];
            let data = &png[at + 8..at + 8 + len];
            match kind {
                b"IHDR" => header = Some(data.to_vec()),
                b"IDAT" => compressed.extend_from_slice(data),
                _ => {}
            }
            at += 12 + len;
        }
        let header = header.expect("IHDR chunk");
        let width = u32::from_be_bytes(header[0..4].try_into().unwrap()) as usize;
        let height = u32::from_be_bytes(header[4..8].try_into().unwrap()) as usize;
        assert_eq!(&header[8..10], &[8, 2], "8-bit RGB");
        let raw = inflate(&compressed);
        assert_eq!(
            raw.len(),
            height * (1 + 3 * width),
            "one filter byte and a row of RGB per line"
        );
        let mut rgb = Vec::with_capacity(width * height * 3);
        for row in raw.chunks(1 + 3 * width) {
            assert_eq!(row[0], 0, "filter type none");
            rgb.extend_from_slice(&row[1..]);
        }
        Screenshot { width, height, rgb }
    }

    fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let at = 3 * (y * self.width + x);
        self.rgb[at..at + 3].try_into().unwrap()
    }

    /// Light pixels (every channel above 0xa0) in the 16-pixel text row `row`.
    fn light_pixels_in_text_row(&self, row: usize) -> usize {
        (row * 16..(row + 1) * 16)
            .flat_map(|y| (0..self.width).map(move |x| (x, y)))
            .filter(|&(x, y)| self.pixel(x, y).iter().all(|&c| c > 0xa0))
            .count()
    }
}

fn inflate(compressed: &[u8]) -> Vec<u8> {
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import sys, zlib; sys.stdout.buffer.write(zlib.decompress(sys.stdin.buffer.read()))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut input = python.stdin.take().unwrap();
    let compressed = compressed.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&compressed));
    let output = python.wait_with_output().expect("python3 zlib");
    writer.join().unwrap().expect("feed python3");
    assert!(output.status.success(), "zlib data did not inflate");
    output.stdout
}

#[test]
fn a_screenshot_shows_the_console_text() {
    if !kvm_available("a_screenshot_shows_the_console_text") {
        return;
    }
    let dir = scratch_dir("virtio-screenshot");
    let control = dir.join("control.sock");
    let args = [
        "--kernel".to_string(),
        test_guest().display().to_string(),
        "--memory-mib".into(),
        "64".into(),
        "--cmdline".into(),
        "scenario=shell".into(),
    ];
    let mut vmm = Vmm::start_with(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(&control),
    );
    vmm.expect("vireo> ", BOOT);
    let hashes = "#".repeat(100);
    assert_eq!(vmm.shell(&format!("echo {hashes}")), hashes);
    vmm.shell("ticks"); // the screen is drawn whenever the shell waits for input
    let reply = vmm.control(serde_json::json!({"cmd": "screenshot"}));
    assert_eq!(reply["ok"], true, "{reply}");
    let shot: vireo_vmm_protocol::control::Screenshot =
        serde_json::from_value(reply).expect("the reply carries the PNG");
    let screen = Screenshot::decode(&shot.png);
    assert_eq!((screen.width, screen.height), (1024, 768));
    assert_eq!(
        screen.pixel(1023, 767),
        [0x10, 0x18, 0x30],
        "dark background"
    );
    // Each '#' lights 40 pixels of its cell; the echoed command and its output each hold 100.
    let rows_with_hashes = (0..screen.height / 16)
        .filter(|&row| screen.light_pixels_in_text_row(row) >= 100 * 40)
        .count();
    assert_eq!(
        rows_with_hashes, 2,
        "the command line and its output are on the screen"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Boots the shell with `extra` arguments and a control socket in `dir`.
fn boot_shell_with_control(dir: &Path, command_line: &str, extra: &[String]) -> Vmm {
    let mut args: Vec<String> = vec![
        "--kernel".into(),
        test_guest().display().to_string(),
        "--memory-mib".into(),
        "128".into(),
        "--cmdline".into(),
        format!("scenario=shell {command_line}"),
    ];
    args.extend_from_slice(extra);
    let control = dir.join("control.sock");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vmm = Vmm::start_with(&args, Some(&control));
    vmm.expect("vireo> ", BOOT);
    vmm.wait_for_control(BOOT);
    vmm
}

#[test]
fn a_disk_grown_while_detached_is_announced_to_the_guest_and_usable() {
    if !kvm_available("a_disk_grown_while_detached_is_announced_to_the_guest_and_usable") {
        return;
    }
    let dir = scratch_dir("grown-disk");
    let disk = raw_disk(&dir, "grow.img", 2048);
    let mut vmm =
        boot_shell_with_control(&dir, "", &["--disk".into(), disk_arg(&disk, ",format=raw")]);
    let list = vmm.shell("blk list");
    assert!(list.starts_with("blk0 capacity=2048 "), "{list}");
    let ok = serde_json::json!({"ok": true});
    let attach = |may_grow: bool| {
        serde_json::json!({"cmd": "attach-disks", "paths": [disk], "formats": ["raw"],
                           "may_grow": may_grow})
    };
    assert_eq!(vmm.control(serde_json::json!({"cmd": "pause"})), ok);
    assert_eq!(vmm.control(serde_json::json!({"cmd": "detach-disks"})), ok);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .and_then(|f| f.set_len(4096 * SECTOR as u64))
        .expect("grow the file");
    let refused = vmm.control(attach(false));
    assert_eq!(
        refused["ok"], false,
        "a larger image needs may_grow: {refused}"
    );
    assert_eq!(vmm.control(attach(true)), ok);
    assert_eq!(vmm.control(serde_json::json!({"cmd": "resume"})), ok);
    vmm.expect("blk0: capacity changed to 4096\n", BOOT);
    let list = vmm.shell("blk list");
    assert!(list.starts_with("blk0 capacity=4096 "), "{list}");
    assert_eq!(vmm.shell("blk write 0 4000 96 7"), "write ok");
    assert_pattern(&disk, 4000, 96, 7);
    // A smaller image is refused whatever the flag says.
    assert_eq!(vmm.control(serde_json::json!({"cmd": "pause"})), ok);
    assert_eq!(vmm.control(serde_json::json!({"cmd": "detach-disks"})), ok);
    let shrunk = raw_disk(&dir, "small.img", 1024);
    let smaller = serde_json::json!({"cmd": "attach-disks", "paths": [shrunk],
                                     "formats": ["raw"], "may_grow": true});
    assert_eq!(vmm.control(smaller)["ok"], false);
    assert_eq!(vmm.control(attach(true)), ok);
    assert_eq!(vmm.control(serde_json::json!({"cmd": "resume"})), ok);
    assert!(vmm.shell("blk list").starts_with("blk0 capacity=4096 "));
}

#[test]
fn unplugging_a_nic_takes_its_link_down_in_the_guest_and_stops_its_frames() {
    if !kvm_available("unplugging_a_nic_takes_its_link_down_in_the_guest_and_stops_its_frames") {
        return;
    }
    let pid = std::process::id();
    let network = TapNamespace::create(&format!("vireo-link-{pid}"), &format!("vlnk{pid}"));
    let dir = scratch_dir("nic-link");
    let mut vmm = boot_shell_with_control(
        &dir,
        "vireo.ip=10.0.3.15/24",
        &["--net".into(), format!("tap={},link=down", network.tap)],
    );
    network.move_in("10.0.3.2/24");
    assert!(vmm.shell("net info").contains(" link=down "));
    assert_eq!(
        ping_from(&network.namespace, "10.0.3.15"),
        0,
        "no cable, no answer"
    );
    let set_link =
        |connected: bool| serde_json::json!({"cmd": "set-link", "nic": 0, "connected": connected});
    assert_eq!(vmm.control(set_link(true)), serde_json::json!({"ok": true}));
    vmm.expect("eth0: link up\n", BOOT);
    assert!(vmm.shell("net info").contains(" link=up "));
    assert_eq!(ping_from(&network.namespace, "10.0.3.15"), 3);
    assert_eq!(
        vmm.control(set_link(false)),
        serde_json::json!({"ok": true})
    );
    vmm.expect("eth0: link down\n", BOOT);
    assert_eq!(vmm.control(set_link(true))["ok"], true);
    vmm.expect("eth0: link up\n", BOOT);
    assert_eq!(vmm.control(set_link(false))["ok"], true);
    vmm.expect("eth0: link down\n", BOOT);
    assert_eq!(ping_from(&network.namespace, "10.0.3.15"), 0);
    assert_eq!(
        vmm.control(serde_json::json!({"cmd": "set-link", "nic": 1, "connected": true}))["ok"],
        false
    );
}

/// Attaches a new descriptor to TAP `name` as a VMM does (TUNSETIFF); false when the kernel
/// refuses (EBUSY while another process still holds it).
fn attach_tap(name: &str) -> bool {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const FLAGS: libc::c_short = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as _;
    let Ok(tun) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    else {
        return false;
    };
    // An ifreq: the name (NUL-padded to 16 bytes), the flags, then padding to 40 bytes.
    let mut request = [0u8; 40];
    request[..name.len()].copy_from_slice(name.as_bytes());
    request[16..18].copy_from_slice(&FLAGS.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes the 40-byte ifreq we own, nothing else.
    unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, request.as_mut_ptr()) == 0 }
}

#[test]
fn a_power_off_is_answered_once_the_vmm_let_go_of_its_tap_and_socket() {
    if !kvm_available("a_power_off_is_answered_once_the_vmm_let_go_of_its_tap_and_socket") {
        return;
    }
    let pid = std::process::id();
    let network = TapNamespace::create(&format!("vireo-off-{pid}"), &format!("voff{pid}"));
    let dir = scratch_dir("power-off-release");
    let disk = raw_disk(&dir, "disk.img", 2048);
    let vmm = boot_shell_with_control(
        &dir,
        "",
        &[
            "--net".into(),
            format!("tap={}", network.tap),
            "--disk".into(),
            disk_arg(&disk, ""),
        ],
    );
    assert!(!attach_tap(&network.tap), "the running VMM holds its TAP");
    let control = dir.join("control.sock");
    assert_eq!(
        vmm.control(serde_json::json!({"cmd": "power-off"})),
        serde_json::json!({"ok": true})
    );
    // The VM's next VMM could start right now, whether or not this one has ended yet.
    assert!(!control.exists(), "the control socket is gone");
    assert!(attach_tap(&network.tap), "the TAP is free for the next VMM");
    assert_eq!(vmm.wait(BOOT).reason(), "host-power-off");
    let _ = std::fs::remove_dir_all(dir);
}
