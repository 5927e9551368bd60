//! Crash safety: a child process writes, zeroes and flushes at random and is SIGKILLed at a
//! random moment. Afterwards `qemu-img check` must find no corruption (leaks are allowed)
//! and every write completed before the last acknowledged flush must be present.
//! Default run: a few kills; `VIREO_DISK_LONG_TESTS=1`: 100. The writer runs in both cache
//! modes: buffered, and with `O_DIRECT` through `SharedDisk` as the VMM opens a cache=none disk.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Rng, Scratch};
use std::os::unix::fs::OpenOptionsExt;

use vireo_disk::direct;
use vireo_disk::open::ImageFormat;
use vireo_disk::qcow2::check::check;
use vireo_disk::qcow2::{create, CreateOptions};
use vireo_disk::{open_disk, SharedDisk};

const SIZE: u64 = 16 << 20;
const SECTOR: u64 = 512;
/// The child flushes after every this many operations.
const FLUSH_EVERY: u64 = 8;
const CHILD_ENV: &str = "VIREO_CRASH_CHILD_IMAGE";
/// Set for a child that opens the image with `O_DIRECT` (cache=none).
const DIRECT_ENV: &str = "VIREO_CRASH_DIRECT";

/// Operation `n` of the sequence for `seed`: (offset, len, byte) where byte 0 is a zero-write.
fn op(seed: u64, n: u64) -> (u64, u64, u8) {
    let mut rng = Rng::new(seed ^ (n.wrapping_mul(0x2545_f491_4f6c_dd1d)));
    let offset = rng.below(SIZE / SECTOR) * SECTOR;
    let len = ((rng.below(256) + 1) * SECTOR).min(SIZE - offset);
    let byte = if rng.below(6) == 0 {
        0
    } else {
        (n % 255 + 1) as u8
    };
    (offset, len, byte)
}

/// The child: runs operations forever, appending the count of flushed operations to a log.
#[test]
fn crash_child_process() {
    let Ok(image) = std::env::var(CHILD_ENV) else {
        return; // only does something when started by the parent test below
    };
    let seed: u64 = std::env::var("VIREO_CRASH_SEED").unwrap().parse().unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(format!("{image}.log"))
        .unwrap();
    let disk = child_disk(Path::new(&image));
    for n in 0.. {
        let (offset, len, byte) = op(seed, n);
        if byte == 0 {
            disk.write_zeroes(offset, len).unwrap();
        } else {
            disk.write_at(&vec![byte; len as usize], offset).unwrap();
        }
        if (n + 1) % FLUSH_EVERY == 0 {
            disk.flush().unwrap();
            writeln!(log, "{}", n + 1).unwrap();
            log.sync_data().unwrap();
        }
    }
}

/// The child's disk: as the VMM opens it, with `O_DIRECT` when the parent asks for cache=none.
fn child_disk(image: &Path) -> SharedDisk {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true);
    if std::env::var(DIRECT_ENV).is_ok() {
        options.custom_flags(libc::O_DIRECT);
    }
    let file = options.open(image).unwrap();
    assert_eq!(direct::is_direct(&file), std::env::var(DIRECT_ENV).is_ok());
    SharedDisk::from_file_as(file, image, ImageFormat::Qcow2, false).unwrap()
}

/// Checks the image after a kill: per sector, the content is the value after the last
/// flushed operation or one written by a later (unacknowledged) operation.
fn verify(image: &Path, seed: u64, flushed: u64) {
    let sectors = (SIZE / SECTOR) as usize;
    let mut durable = vec![0u8; sectors];
    let mut later: Vec<Vec<u8>> = vec![Vec::new(); sectors];
    for n in 0..flushed + 2 * FLUSH_EVERY + 1 {
        let (offset, len, byte) = op(seed, n);
        for s in offset / SECTOR..(offset + len) / SECTOR {
            if n < flushed {
                durable[s as usize] = byte;
            } else {
                later[s as usize].push(byte);
            }
        }
    }
    let mut disk = open_disk(image, true).unwrap();
    let mut buf = vec![0u8; SECTOR as usize];
    for s in 0..sectors {
        disk.read_at(&mut buf, s as u64 * SECTOR).unwrap();
        let got = buf[0];
        assert!(
            buf.iter().all(|&b| b == got),
            "sector {s} is torn within itself"
        );
        assert!(
            got == durable[s] || later[s].contains(&got),
            "sector {s}: found {got:#x}, flushed value {:#x} (seed {seed}, {flushed} flushed ops)",
            durable[s]
        );
    }
}

fn kill_rounds() -> u64 {
    if std::env::var("VIREO_DISK_LONG_TESTS").is_ok() {
        100
    } else {
        4
    }
}

#[test]
fn killed_writer_leaves_a_consistent_image_with_every_flushed_write() {
    kill_and_verify(false);
}

#[test]
fn killed_direct_writer_leaves_a_consistent_image_with_every_flushed_write() {
    kill_and_verify(true);
}

/// Kills a writer (`direct`: with O_DIRECT) a few times and checks what it left.
fn kill_and_verify(direct: bool) {
    let scratch = Scratch::new(if direct { "crash-direct" } else { "crash" });
    let exe = std::env::current_exe().unwrap();
    let seeds = common::seeds(&[]);
    let mut rng = Rng::new(seeds[0]);
    for round in 0..kill_rounds() {
        let seed = rng.next() >> 1;
        let image = scratch.path(&format!("crash-{round}.qcow2"));
        let mut options = CreateOptions::new(SIZE);
        options.cluster_bits = if round % 2 == 0 { 16 } else { 12 };
        create(&image, &options).unwrap();
        let log_path = format!("{}.log", image.display());
        std::fs::write(&log_path, "").unwrap();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &image)
            .env("VIREO_CRASH_SEED", seed.to_string())
            .envs(direct.then_some((DIRECT_ENV, "1")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let flushed = std::fs::read_to_string(&log_path)
            .unwrap()
            .lines()
            .filter_map(|l| l.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        eprintln!("round {round}: seed {seed}, killed after {flushed} flushed ops");
        common::assert_check_clean(&image, true);
        verify(&image, seed, flushed);
        let ours = check(&image, false).unwrap();
        assert!(ours.corruptions.is_empty(), "{:?}", ours.corruptions);
        let (_, qemu) = common::run("qemu-img", &["check", image.to_str().unwrap()]);
        let leaks = if ours.leaked_clusters > 0 {
            format!("{} leaked clusters were found", ours.leaked_clusters)
        } else {
            "No errors were found".to_string()
        };
        assert!(qemu.contains(&leaks), "ours: {leaks}; qemu-img:\n{qemu}");
        check(&image, true).unwrap();
        common::assert_check_clean(&image, false);
        std::fs::remove_file(&image).unwrap();
    }
}
