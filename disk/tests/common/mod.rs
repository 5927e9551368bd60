//! Helpers shared by the integration tests: scratch folders, qemu-img/qemu-io runners,
//! a seeded random generator and a raw "model" file that mirrors what a disk should hold.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch folder removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh folder for test `name`.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vireo-disk-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A path inside the folder.
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command, returning (exit code, stdout + stderr).
pub fn run(program: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Runs qemu-img and panics with its output if it fails.
pub fn qemu_img(args: &[&str]) -> String {
    let (code, text) = run("qemu-img", args);
    assert_eq!(code, 0, "qemu-img {args:?} failed:\n{text}");
    text
}

/// Runs qemu-io commands on an image and panics if it fails.
pub fn qemu_io(image: &Path, format: &str, commands: &[&str]) {
    let mut args = vec!["-f", format];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    let image = image.to_str().unwrap();
    args.push(image);
    let (code, text) = run("qemu-io", &args);
    assert!(
        code == 0 && !text.contains("failed"),
        "qemu-io {args:?}:\n{text}"
    );
}

/// Asserts that `qemu-img check` finds no corruption (leaks allowed when `allow_leaks`).
pub fn assert_check_clean(image: &Path, allow_leaks: bool) {
    let (code, text) = run("qemu-img", &["check", image.to_str().unwrap()]);
    let ok = code == 0 || (allow_leaks && code == 3);
    assert!(
        ok,
        "qemu-img check {} exited {code}:\n{text}",
        image.display()
    );
}

/// Asserts that `qemu-img compare` finds the two images identical.
pub fn assert_same_content(image: &Path, model: &Path) {
    let (code, text) = run(
        "qemu-img",
        &[
            "compare",
            "-F",
            "raw",
            image.to_str().unwrap(),
            model.to_str().unwrap(),
        ],
    );
    assert_eq!(
        code,
        0,
        "{} differs from {}:\n{text}",
        image.display(),
        model.display()
    );
}

/// A small xorshift generator: deterministic per seed.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Seeds for randomized tests: fixed ones plus `VIREO_TEST_SEED` when set.
pub fn seeds(fixed: &[u64]) -> Vec<u64> {
    let mut seeds = fixed.to_vec();
    if let Ok(s) = std::env::var("VIREO_TEST_SEED") {
        seeds.push(s.parse().expect("VIREO_TEST_SEED must be a number"));
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        seeds.push(t);
    }
    seeds
}

/// Random writes, zero-writes and discards on the image at `image`, mirrored on the raw `model`
/// file: `ops` requests of 1..=`max_sectors` sectors; one in `plain_odds` is a zero-write, one a
/// discard, the rest data. Flushed at the end.
pub fn scribble(
    rng: &mut Rng,
    image: &Path,
    model: &Path,
    size: u64,
    ops: u32,
    max_sectors: u64,
    plain_odds: u64,
) {
    use std::os::unix::fs::FileExt;
    let mut disk = vireo_disk::open_disk(image, false).unwrap();
    let model = std::fs::OpenOptions::new().write(true).open(model).unwrap();
    for _ in 0..ops {
        let offset = rng.below(size / 512) * 512;
        let len = ((rng.below(max_sectors) + 1) * 512).min(size - offset);
        let byte = match rng.below(plain_odds) {
            0 => {
                disk.write_zeroes(offset, len).unwrap();
                0
            }
            1 => {
                disk.discard(offset, len).unwrap();
                0
            }
            _ => {
                let byte = rng.below(255) as u8 + 1;
                disk.write_at(&vec![byte; len as usize], offset).unwrap();
                byte
            }
        };
        model
            .write_all_at(&vec![byte; len as usize], offset)
            .unwrap();
    }
    disk.flush().unwrap();
}
