//! Helpers for the end-to-end tests in `tests/tests/`: finding the binaries and the test guest,
//! skipping loudly where /dev/kvm is missing, and driving a `vireo-vmm` process (its serial
//! console on stdio, its control socket, its exit record).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_owned()
}

/// Path of a workspace binary: `$VIREO_BIN_DIR/<name>` or `target/debug/<name>`.
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("VIREO_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Checks `done` every `every` until it returns `Ok`; once `timeout` has passed, panics with
/// the reason of its last `Err`.
pub fn poll_until(
    timeout: Duration,
    every: Duration,
    mut done: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let Err(why) = done() else {
            return;
        };
        assert!(Instant::now() < deadline, "{why} (waited {timeout:?})");
        std::thread::sleep(every);
    }
}

/// The test guest ELF: `$VIREO_TEST_GUEST` or `.cache/test-guest/vireo-test-guest.elf`.
pub fn test_guest() -> PathBuf {
    let path = std::env::var_os("VIREO_TEST_GUEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/test-guest/vireo-test-guest.elf"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-test-guest.sh",
        path.display()
    );
    path
}

/// True when /dev/kvm can be opened; otherwise prints a loud SKIP line for `test`.
pub fn kvm_available(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED {test}: /dev/kvm is not usable here ({e}); this test needs KVM");
            false
        }
    }
}

/// True when /dev/kvm is hardware KVM (VT-x/AMD-V), where stock Linux kernels boot.
pub fn hardware_kvm() -> bool {
    let loaded = |module: &str| Path::new("/sys/module").join(module).exists();
    (loaded("kvm_intel") || loaded("kvm_amd")) && !loaded("kvm_pvm")
}

/// A unique scratch directory for one test.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vireo-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// How a `vireo-vmm` run ended.
#[derive(Debug)]
pub struct VmmExit {
    /// The process status.
    pub status: ExitStatus,
    /// The JSON exit record it printed on stderr (`vireo-vmm: exit {...}`), if any.
    pub record: Option<serde_json::Value>,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl VmmExit {
    /// The `reason` of the exit record.
    pub fn reason(&self) -> &str {
        self.record
            .as_ref()
            .and_then(|r| r["reason"].as_str())
            .unwrap_or("")
    }
}

/// A running `vireo-vmm` with its serial console on pipes.
pub struct Vmm {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// Console text seen so far (complete lines and the current partial line).
    pub console: String,
    stderr: Receiver<String>,
    /// Control socket path, if one was requested.
    pub control: Option<PathBuf>,
}

impl Vmm {
    /// Starts `vireo-vmm` with `args` (serial on stdio).
    pub fn start(args: &[&str]) -> Vmm {
        Self::start_with(args, None)
    }

    /// Starts `vireo-vmm` with `args` and a control socket at `control`.
    pub fn start_with(args: &[&str], control: Option<&Path>) -> Vmm {
        let mut command = Command::new(binary("vireo-vmm"));
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = control {
            command.arg("--control").arg(path);
        }
        let mut child = command.spawn().expect("spawn vireo-vmm");
        let stdin = child.stdin.take().expect("stdin");
        let lines = forward_chunks(child.stdout.take().expect("stdout"));
        let stderr = forward_chunks(child.stderr.take().expect("stderr"));
        Vmm {
            child,
            stdin,
            lines,
            console: String::new(),
            stderr,
            control: control.map(Path::to_owned),
        }
    }

    /// Waits until the console contains `needle` (after what previous waits consumed);
    /// returns the console text up to and including it.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.console.find(needle) {
                let upto: String = self.console.drain(..at + needle.len()).collect();
                return upto;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(chunk) => self.console.push_str(&chunk),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "timed out after {timeout:?} waiting for {needle:?}; console so far: {:?}",
                        self.console
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let stderr: String = self.stderr.try_iter().collect();
                    panic!(
                        "vireo-vmm ended before {needle:?}; console: {:?}; stderr: {stderr}",
                        self.console
                    )
                }
            }
        }
    }

    /// Types `text` on the guest's serial console.
    pub fn send(&mut self, text: &str) {
        self.stdin
            .write_all(text.as_bytes())
            .expect("write to guest console");
        self.stdin.flush().expect("flush guest console");
    }

    /// Runs a shell command in the test guest and returns its output (without the prompt).
    pub fn shell(&mut self, command: &str) -> String {
        self.shell_within(command, Duration::from_secs(30))
    }

    /// [`Vmm::shell`] for a command that may take up to `timeout`.
    pub fn shell_within(&mut self, command: &str, timeout: Duration) -> String {
        self.send(&format!("{command}\n"));
        let output = self.expect("vireo> ", timeout);
        let output = output.trim_end_matches("vireo> ");
        // Drop the echoed command line.
        output
            .split_once('\n')
            .map(|(_, rest)| rest)
            .unwrap_or("")
            .trim()
            .to_owned()
    }

    /// The test guest's tick counter (its shell's `ticks` command).
    pub fn ticks(&mut self) -> u64 {
        let out = self.shell("ticks");
        out.strip_prefix("ticks=")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("bad ticks output {out:?}"))
    }

    /// Sends one control request and returns the reply.
    pub fn control(&self, request: serde_json::Value) -> serde_json::Value {
        let path = self
            .control
            .as_ref()
            .expect("started with a control socket");
        let mut stream = UnixStream::connect(path).expect("connect control socket");
        writeln!(stream, "{request}").expect("send control request");
        let mut reply = String::new();
        BufReader::new(stream)
            .read_line(&mut reply)
            .expect("read control reply");
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("bad control reply {reply:?}: {e}"))
    }

    /// Waits for the control socket to appear.
    pub fn wait_for_control(&self, timeout: Duration) {
        let path = self
            .control
            .as_ref()
            .expect("started with a control socket");
        poll_until(timeout, Duration::from_millis(10), || {
            UnixStream::connect(path)
                .map(drop)
                .map_err(|_| format!("control socket {} never came up", path.display()))
        });
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to end (killing it after `timeout`, which fails the test).
    pub fn wait(mut self, timeout: Duration) -> VmmExit {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for vireo-vmm") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "vireo-vmm did not exit within {timeout:?}; console: {:?}",
                    self.console
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        while let Ok(chunk) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            stderr.push_str(&chunk);
        }
        let record = stderr
            .lines()
            .find_map(|l| l.strip_prefix("vireo-vmm: exit "))
            .and_then(|json| serde_json::from_str(json).ok());
        VmmExit {
            status,
            record,
            stderr,
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward_chunks(mut source: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = source.read(&mut buf) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    rx
}
