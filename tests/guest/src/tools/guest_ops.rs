//! The test guest's guest operations (docs/tools-protocol.md, `guest-op`), a subset of what
//! vireo-tools does: one account fixed at boot (`vireo.guest-user=` / `vireo.guest-password=`;
//! without them every login fails), built-in "programs" with exit codes (`/bin/true`,
//! `/bin/false`, `/bin/exit N`, `/bin/echo TEXT`, `/bin/sleep SECONDS`), and files in a small
//! RAM file system (at most [`MAX_ENTRIES`] files and directories, [`FILE_SLOTS`] files of
//! [`FILE_BYTES`] each). Times count from boot: the guest has no wall clock. Tickets are not
//! offered (OperationNotSupportedByGuest).

use core::fmt::{self, Write as _};

use super::json::{Escaped, Fields, Malformed, Value, MAX_TEXT};
use crate::cell::BootCpuCell;
use crate::ticks;

/// Raw bytes per transfer chunk this guest offers (base64 fits the agent's line).
pub const CHUNK_BYTES: usize = 2048;
/// Files and directories the RAM file system holds (the root not counted).
pub const MAX_ENTRIES: usize = 32;
/// Files with contents at once.
pub const FILE_SLOTS: usize = 8;
/// Largest file.
pub const FILE_BYTES: usize = 128 * 1024;
/// Longest path.
const PATH_BYTES: usize = 96;
/// Programs remembered (running or finished; the oldest finished one goes first).
const MAX_PROCESSES: usize = 16;
/// Entries one list-files answer holds at most.
const LIST_PAGE: usize = 12;
/// First pid handed out.
const FIRST_PID: u64 = 100;

/// Short text kept without an allocator.
#[derive(Clone, Copy)]
struct Text<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    const EMPTY: Self = Text {
        bytes: [0; N],
        len: 0,
    };

    /// `text`, or `None` if it does not fit.
    fn of(text: &str) -> Option<Self> {
        let mut out = Self::EMPTY;
        let slot = out.bytes.get_mut(..text.len())?;
        slot.copy_from_slice(text.as_bytes());
        out.len = text.len();
        Some(out)
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

type Path = Text<PATH_BYTES>;

/// Why an operation failed: the protocol's fault kind and a message.
struct Failure(&'static str, &'static str);

const NOT_FOUND: Failure = Failure("not-found", "no such file or directory");
const EXISTS: Failure = Failure("already-exists", "the target exists");
const NOT_DIR: Failure = Failure("not-a-directory", "not a directory");
const NOT_FILE: Failure = Failure("not-a-file", "not a regular file");
const BAD_PATH: Failure = Failure(
    "bad-request",
    "paths are absolute, at most 96 bytes, without '.', '..' or empty parts",
);
const FULL: Failure = Failure("no-space", "the RAM file system is full");

/// One file or directory.
#[derive(Clone, Copy)]
struct Entry {
    used: bool,
    dir: bool,
    path: Path,
    slot: usize,
    size: usize,
    mtime: u64,
    mode: u32,
}

const FREE: Entry = Entry {
    used: false,
    dir: false,
    path: Path::EMPTY,
    slot: 0,
    size: 0,
    mtime: 0,
    mode: 0,
};

/// A program started by a guest operation.
#[derive(Clone, Copy)]
struct Process {
    pid: u64,
    name: Text<16>,
    cmd_line: Text<PATH_BYTES>,
    start: u64,
    /// When a running program ends by itself (`sleep`).
    due: Option<u64>,
    end: Option<u64>,
    exit_code: i32,
}

/// Everything guest operations keep.
struct State {
    user: Text<32>,
    password: Text<64>,
    entries: [Entry; MAX_ENTRIES],
    slot_used: [bool; FILE_SLOTS],
    processes: [Option<Process>; MAX_PROCESSES],
    next_pid: u64,
    next_temp: u64,
}

static STATE: BootCpuCell<State> = BootCpuCell::new(State {
    user: Text::EMPTY,
    password: Text::EMPTY,
    entries: [FREE; MAX_ENTRIES],
    slot_used: [false; FILE_SLOTS],
    processes: [None; MAX_PROCESSES],
    next_pid: FIRST_PID,
    next_temp: 1,
});

/// The files' contents, one slot per file (all zero at boot, so it lives in .bss and costs the
/// image nothing).
static DATA: BootCpuCell<[[u8; FILE_BYTES]; FILE_SLOTS]> =
    BootCpuCell::new([[0; FILE_BYTES]; FILE_SLOTS]);

/// Sets the one account from the command line, and the file system's `/tmp`.
pub fn configure(user: Option<&str>, password: Option<&str>) {
    STATE.with(|state| {
        state.user = user.and_then(Text::of).unwrap_or(Text::EMPTY);
        state.password = password.and_then(Text::of).unwrap_or(Text::EMPTY);
        let _ = state.make_directory("/tmp", false);
    });
}

/// The operations the host can ask for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Validate,
    AcquireTicket,
    ReleaseTicket,
    StartProgram,
    ListProcesses,
    TerminateProcess,
    ReadEnvironment,
    MakeDirectory,
    DeleteFile,
    DeleteDirectory,
    MoveFile,
    MoveDirectory,
    CreateTemporary,
    ListFiles,
    StatFile,
    ChangeAttributes,
    ReadFile,
    WriteFile,
}

impl Op {
    fn from_name(name: &str) -> Option<Op> {
        Some(match name {
            "validate-credentials" => Op::Validate,
            "acquire-ticket" => Op::AcquireTicket,
            "release-ticket" => Op::ReleaseTicket,
            "start-program" => Op::StartProgram,
            "list-processes" => Op::ListProcesses,
            "terminate-process" => Op::TerminateProcess,
            "read-environment" => Op::ReadEnvironment,
            "make-directory" => Op::MakeDirectory,
            "delete-file" => Op::DeleteFile,
            "delete-directory" => Op::DeleteDirectory,
            "move-file" => Op::MoveFile,
            "move-directory" => Op::MoveDirectory,
            "create-temporary" => Op::CreateTemporary,
            "list-files" => Op::ListFiles,
            "stat-file" => Op::StatFile,
            "change-attributes" => Op::ChangeAttributes,
            "read-file" => Op::ReadFile,
            "write-file" => Op::WriteFile,
            _ => return None,
        })
    }
}

/// A `guest-op` line's fields (the ones this guest uses).
pub struct Request<'l> {
    /// The request id.
    pub id: u64,
    op: Option<Op>,
    user: Text<32>,
    password: Text<64>,
    ticket: bool,
    path: Path,
    to: Path,
    args: Path,
    prefix: Text<32>,
    suffix: Text<32>,
    pattern: Text<32>,
    flag: bool,
    offset: u64,
    length: u64,
    pid: u64,
    index: u64,
    max: u64,
    mode: Option<u64>,
    mtime: Option<u64>,
    data: &'l [u8],
}

/// Reads a `guest-op` line; `None` if the line is another kind of message.
pub fn parse(line: &[u8]) -> Option<Request<'_>> {
    parse_fields(line).ok().flatten()
}

fn parse_fields(line: &[u8]) -> Result<Option<Request<'_>>, Malformed> {
    let mut fields = Fields::new(line)?;
    let mut request = Request {
        id: 0,
        op: None,
        user: Text::EMPTY,
        password: Text::EMPTY,
        ticket: false,
        path: Path::EMPTY,
        to: Path::EMPTY,
        args: Path::EMPTY,
        prefix: Text::EMPTY,
        suffix: Text::EMPTY,
        pattern: Text::EMPTY,
        flag: false,
        offset: 0,
        length: 0,
        pid: 0,
        index: 0,
        max: 0,
        mode: None,
        mtime: None,
        data: &[],
    };
    let (mut guest_op, mut has_id) = (false, false);
    let (mut key, mut text) = ([0u8; MAX_TEXT], [0u8; MAX_TEXT]);
    while let Some((name, value)) = fields.next(&mut key, &mut text)? {
        let r = &mut request;
        let fits = match (name, value) {
            ("msg", Value::Text(kind)) => {
                guest_op = kind == "guest-op";
                true
            }
            ("id", Value::Number(n)) => {
                (r.id, has_id) = (n, true);
                true
            }
            ("op", Value::Text(op)) => {
                r.op = Op::from_name(op);
                true
            }
            ("user", Value::Text(t)) => set(&mut r.user, t),
            ("password", Value::Text(t)) => set(&mut r.password, t),
            ("ticket", _) => {
                r.ticket = true;
                true
            }
            ("path" | "from" | "dir", Value::Text(t)) => set(&mut r.path, t),
            ("to", Value::Text(t)) => set(&mut r.to, t),
            ("args", Value::Text(t)) => set(&mut r.args, t),
            ("prefix", Value::Text(t)) => set(&mut r.prefix, t),
            ("suffix", Value::Text(t)) => set(&mut r.suffix, t),
            ("pattern", Value::Text(t)) => set(&mut r.pattern, t),
            ("parents" | "recursive" | "overwrite" | "directory", Value::Bool(b)) => {
                r.flag |= b;
                true
            }
            ("offset", Value::Number(n)) => number(&mut r.offset, n),
            ("length", Value::Number(n)) => number(&mut r.length, n),
            ("pid", Value::Number(n)) => number(&mut r.pid, n),
            ("index", Value::Number(n)) => number(&mut r.index, n),
            ("max", Value::Number(n)) => number(&mut r.max, n),
            ("mode", Value::Number(n)) => {
                r.mode = Some(n);
                true
            }
            ("mtime", Value::Number(n)) => {
                r.mtime = Some(n);
                true
            }
            ("data", Value::Text(t)) => {
                r.data = data_span(line, t);
                true
            }
            ("data", Value::Raw(raw)) => {
                r.data = raw;
                true
            }
            ("path" | "from" | "dir" | "to" | "args" | "user" | "password", _) => false,
            _ => true,
        };
        if !fits {
            // A value this guest cannot hold: answered as a bad request, never half-read.
            request.op = None;
        }
    }
    Ok((guest_op && has_id).then_some(request))
}

fn set<const N: usize>(slot: &mut Text<N>, text: &str) -> bool {
    Text::of(text).map(|t| *slot = t).is_some()
}

fn number(slot: &mut u64, n: u64) -> bool {
    *slot = n;
    true
}

/// A short decoded `data` string as a span of the line (base64 needs no unescaping, so the
/// decoded text appears verbatim in the line).
fn data_span<'l>(line: &'l [u8], decoded: &str) -> &'l [u8] {
    let needle = decoded.as_bytes();
    if needle.is_empty() {
        return &[];
    }
    line.windows(needle.len())
        .find(|w| *w == needle)
        .unwrap_or(&[])
}

/// Carries out `request` and writes its reply (without the line end) into `out`; `say` shows
/// a program's output on the console.
pub fn answer(
    request: &Request<'_>,
    out: &mut impl fmt::Write,
    say: &mut dyn FnMut(fmt::Arguments),
) -> fmt::Result {
    let id = request.id;
    write!(out, r#"{{"msg":"guest-op-reply","id":{id},"#)?;
    STATE.with(|state| {
        let mut result = ResultWriter {
            out,
            started: false,
        };
        match state.run(request, &mut result, say) {
            Ok(()) if result.started => result.out.write_str("}}"),
            Ok(()) => result.out.write_str(r#""ok":true}"#),
            Err(Failure(kind, message)) => write!(
                result.out,
                r#""ok":false,"fault":"{kind}","error":"{}"}}"#,
                Escaped(message)
            ),
        }
    })
}

/// Writes the `"ok":true,"result":{` prefix before the first result field.
struct ResultWriter<'o, W: fmt::Write> {
    out: &'o mut W,
    started: bool,
}

impl<W: fmt::Write> ResultWriter<'_, W> {
    fn result(&mut self) -> &mut W {
        if !self.started {
            self.started = true;
            let _ = self.out.write_str(r#""ok":true,"result":{"#);
        }
        self.out
    }
}

type Outcome = Result<(), Failure>;

/// The uptime in milliseconds.
fn now_ms() -> u64 {
    ticks::now() * 1000 / ticks::HZ
}

/// Checks a path: absolute, no empty, `.` or `..` parts, not the root itself.
fn check_path(path: &str) -> Result<&str, Failure> {
    let valid = path.len() > 1
        && path.starts_with('/')
        && path[1..]
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    valid.then_some(path).ok_or(BAD_PATH)
}

/// The parent directory of a checked path ("/" for top-level entries).
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(at) => &path[..at],
    }
}

impl State {
    fn run<W: fmt::Write>(
        &mut self,
        r: &Request<'_>,
        out: &mut ResultWriter<'_, W>,
        say: &mut dyn FnMut(fmt::Arguments),
    ) -> Outcome {
        self.authenticate(r)?;
        self.update_processes();
        let op = r.op.ok_or(Failure(
            "bad-request",
            "unknown operation or a value too long",
        ))?;
        let path = r.path.as_str();
        match op {
            Op::Validate => Ok(()),
            Op::AcquireTicket | Op::ReleaseTicket => Err(Failure(
                "unsupported",
                "this guest hands out no tickets; use a user name and password",
            )),
            Op::StartProgram => self.start(path, r.args.as_str(), out, say),
            Op::ListProcesses => self.list_processes(out),
            Op::TerminateProcess => self.terminate(r.pid),
            Op::ReadEnvironment => {
                let user = self.user;
                write!(
                    out.result(),
                    r#""vars":["HOME=/","PATH=/bin","USER={}"]"#,
                    Escaped(user.as_str())
                )
                .map_err(|_| FULL)
            }
            Op::MakeDirectory => self.make_directory(path, r.flag),
            Op::DeleteFile => self.delete(path, false, false),
            Op::DeleteDirectory => self.delete(path, true, r.flag),
            Op::MoveFile => self.rename(path, r.to.as_str(), false, r.flag),
            Op::MoveDirectory => self.rename(path, r.to.as_str(), true, false),
            Op::CreateTemporary => self.create_temporary(r, out),
            Op::ListFiles => self.list_files(r, out),
            Op::StatFile => {
                let index = self.find(check_path(path)?).ok_or(NOT_FOUND)?;
                let entry = self.entries[index];
                write_entry(out.result(), entry.path.as_str(), &entry).map_err(|_| FULL)
            }
            Op::ChangeAttributes => {
                let index = self.find(check_path(path)?).ok_or(NOT_FOUND)?;
                let entry = &mut self.entries[index];
                entry.mode = r.mode.map_or(entry.mode, |m| (m & 0o7777) as u32);
                entry.mtime = r.mtime.map_or(entry.mtime, |s| s * 1000);
                Ok(())
            }
            Op::ReadFile => self.read(path, r.offset, r.length, out),
            Op::WriteFile => self.write(path, r.offset, r.data, r.flag),
        }
    }

    fn authenticate(&self, r: &Request<'_>) -> Outcome {
        let invalid = Failure(
            "invalid-login",
            "the guest user name or password is not correct",
        );
        let configured = self.user.len > 0 && self.password.len > 0;
        let user_ok = r.user.as_str() == self.user.as_str();
        let password_ok = constant_time_eq(r.password.as_str(), self.password.as_str());
        if !configured || r.ticket || !user_ok || !password_ok {
            return Err(invalid);
        }
        Ok(())
    }

    // --- programs ---

    fn start<W: fmt::Write>(
        &mut self,
        path: &str,
        args: &str,
        out: &mut ResultWriter<'_, W>,
        say: &mut dyn FnMut(fmt::Arguments),
    ) -> Outcome {
        let name = path.strip_prefix("/bin/").ok_or(NOT_FOUND)?;
        let now = now_ms();
        let (due, exit_code) = match name {
            "true" => (None, 0),
            "false" => (None, 1),
            "exit" => (
                None,
                args.trim()
                    .parse::<i32>()
                    .map_err(|_| Failure("bad-request", "exit needs a number"))?,
            ),
            "echo" => {
                say(format_args!("guest-op: echo {args}"));
                (None, 0)
            }
            "sleep" => {
                let seconds: u64 = args
                    .trim()
                    .parse()
                    .map_err(|_| Failure("bad-request", "sleep needs seconds"))?;
                (Some(now + seconds.saturating_mul(1000)), 0)
            }
            _ => return Err(NOT_FOUND),
        };
        let slot = self
            .process_slot()
            .ok_or(Failure("failed", "too many programs are running"))?;
        let pid = self.next_pid;
        self.next_pid += 1;
        let mut cmd_line = Path::EMPTY;
        let _ = write!(TextWriter(&mut cmd_line), "{path} {args}");
        self.processes[slot] = Some(Process {
            pid,
            name: Text::of(name).unwrap_or(Text::EMPTY),
            cmd_line,
            start: now,
            due,
            end: due.is_none().then_some(now),
            exit_code,
        });
        write!(out.result(), r#""pid":{pid}"#).map_err(|_| FULL)
    }

    /// A free process slot, else the one of the oldest finished program.
    fn process_slot(&self) -> Option<usize> {
        if let Some(free) = self.processes.iter().position(Option::is_none) {
            return Some(free);
        }
        self.processes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, (*p)?.end?)))
            .min_by_key(|&(_, end)| end)
            .map(|(i, _)| i)
    }

    /// Ends the sleeps that are due.
    fn update_processes(&mut self) {
        let now = now_ms();
        for process in self.processes.iter_mut().flatten() {
            if process.end.is_none() && process.due.is_some_and(|due| due <= now) {
                process.end = process.due;
            }
        }
    }

    /// Every program started here (the host filters by pid).
    fn list_processes<W: fmt::Write>(&self, out: &mut ResultWriter<'_, W>) -> Outcome {
        let out = out.result();
        out.write_str(r#""processes":["#).map_err(|_| FULL)?;
        let mut first = true;
        for process in self.processes.iter().flatten() {
            if !first {
                out.write_str(",").map_err(|_| FULL)?;
            }
            first = false;
            write_process(out, process, &self.user).map_err(|_| FULL)?;
        }
        out.write_str("]").map_err(|_| FULL)
    }

    fn terminate(&mut self, pid: u64) -> Outcome {
        let process = self
            .processes
            .iter_mut()
            .flatten()
            .find(|p| p.pid == pid && p.end.is_none())
            .ok_or(Failure("process-not-found", "no such running process"))?;
        process.end = Some(now_ms());
        // Killed: the shell's 128 + SIGKILL.
        process.exit_code = 137;
        Ok(())
    }

    // --- files ---

    fn find(&self, path: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.used && e.path.as_str() == path)
    }

    fn is_directory(&self, path: &str) -> bool {
        path == "/" || self.find(path).is_some_and(|i| self.entries[i].dir)
    }

    /// Checks that `path` can be created: its parent is a directory, it does not exist.
    fn creatable(&self, path: &str) -> Outcome {
        if !self.is_directory(parent(path)) {
            return Err(if self.find(parent(path)).is_some() {
                NOT_DIR
            } else {
                NOT_FOUND
            });
        }
        if self.find(path).is_some() {
            return Err(EXISTS);
        }
        Ok(())
    }

    fn add(&mut self, path: &str, dir: bool) -> Result<usize, Failure> {
        let index = self.entries.iter().position(|e| !e.used).ok_or(FULL)?;
        let slot = if dir {
            0
        } else {
            let slot = self.slot_used.iter().position(|used| !used).ok_or(FULL)?;
            self.slot_used[slot] = true;
            slot
        };
        self.entries[index] = Entry {
            used: true,
            dir,
            path: Text::of(path).ok_or(BAD_PATH)?,
            slot,
            size: 0,
            mtime: now_ms(),
            mode: if dir { 0o755 } else { 0o644 },
        };
        Ok(index)
    }

    fn remove(&mut self, index: usize) {
        let entry = self.entries[index];
        if !entry.dir {
            self.slot_used[entry.slot] = false;
        }
        self.entries[index] = FREE;
    }

    fn make_directory(&mut self, path: &str, parents: bool) -> Outcome {
        let path = check_path(path)?;
        if parents && !self.is_directory(parent(path)) && parent(path) != "/" {
            self.make_directory(parent(path), true)?;
        }
        if parents && self.is_directory(path) {
            return Ok(());
        }
        self.creatable(path)?;
        self.add(path, true).map(drop)
    }

    /// Whether anything lies below directory `path`.
    fn has_children(&self, path: &str) -> bool {
        self.entries.iter().any(|e| {
            e.used
                && e.path
                    .as_str()
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    fn delete(&mut self, path: &str, dir: bool, recursive: bool) -> Outcome {
        let index = self.find(check_path(path)?).ok_or(NOT_FOUND)?;
        match (dir, self.entries[index].dir) {
            (false, true) => return Err(NOT_FILE),
            (true, false) => return Err(NOT_DIR),
            _ => {}
        }
        if dir && self.has_children(path) {
            if !recursive {
                return Err(Failure("directory-not-empty", "the directory is not empty"));
            }
            for child in 0..MAX_ENTRIES {
                let below = self.entries[child]
                    .path
                    .as_str()
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/'));
                if self.entries[child].used && below {
                    self.remove(child);
                }
            }
        }
        self.remove(index);
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str, dir: bool, overwrite: bool) -> Outcome {
        let index = self.find(check_path(from)?).ok_or(NOT_FOUND)?;
        let to = check_path(to)?;
        match (dir, self.entries[index].dir) {
            (false, true) => return Err(NOT_FILE),
            (true, false) => return Err(NOT_DIR),
            _ => {}
        }
        if let Some(existing) = self.find(to) {
            if dir || !overwrite || self.entries[existing].dir {
                return Err(EXISTS);
            }
            self.remove(existing);
        }
        if to.starts_with(from) && to[from.len()..].starts_with('/') {
            return Err(Failure(
                "bad-request",
                "a directory cannot move into itself",
            ));
        }
        self.creatable(to)?;
        for entry in self.entries.iter_mut().filter(|e| e.used) {
            let moved = match entry.path.as_str().strip_prefix(from) {
                Some("") => Text::of(to),
                Some(rest) if rest.starts_with('/') && dir => {
                    let mut path = Path::EMPTY;
                    write!(TextWriter(&mut path), "{to}{rest}")
                        .ok()
                        .map(|()| path)
                }
                _ => continue,
            };
            entry.path = moved.ok_or(BAD_PATH)?;
        }
        Ok(())
    }

    fn create_temporary<W: fmt::Write>(
        &mut self,
        r: &Request<'_>,
        out: &mut ResultWriter<'_, W>,
    ) -> Outcome {
        let dir = if r.path.len == 0 {
            "/tmp"
        } else {
            r.path.as_str()
        };
        if !self.is_directory(dir) {
            return Err(NOT_FOUND);
        }
        if r.prefix.as_str().contains('/') || r.suffix.as_str().contains('/') {
            return Err(BAD_PATH);
        }
        let mut path = Path::EMPTY;
        let number = self.next_temp;
        self.next_temp += 1;
        write!(
            TextWriter(&mut path),
            "{}/{}{number}{}",
            dir.trim_end_matches('/'),
            r.prefix.as_str(),
            r.suffix.as_str()
        )
        .map_err(|_| BAD_PATH)?;
        let path = path;
        self.creatable(check_path(path.as_str())?)?;
        self.add(path.as_str(), r.flag)?;
        write!(out.result(), r#""path":"{}""#, Escaped(path.as_str())).map_err(|_| FULL)
    }

    fn list_files<W: fmt::Write>(&self, r: &Request<'_>, out: &mut ResultWriter<'_, W>) -> Outcome {
        let path = r.path.as_str();
        let dir = path == "/"
            || self
                .find(check_path(path)?)
                .is_some_and(|i| self.entries[i].dir);
        let single = (!dir).then(|| self.find(path)).flatten();
        if !dir && single.is_none() {
            return Err(NOT_FOUND);
        }
        let pattern = r.pattern.as_str();
        let listed = |e: &&Entry| {
            let name = e.path.as_str().rsplit('/').next().unwrap_or("");
            let in_dir = match single {
                Some(i) => e.path.as_str() == self.entries[i].path.as_str(),
                None => e.used && parent(e.path.as_str()) == path,
            };
            in_dir && (pattern.is_empty() || pattern == ".*" || glob(pattern, name))
        };
        let total = self.entries.iter().filter(listed).count();
        let max = if r.max == 0 {
            LIST_PAGE
        } else {
            (r.max as usize).min(LIST_PAGE)
        };
        let skip = r.index as usize;
        let out = out.result();
        out.write_str(r#""files":["#).map_err(|_| FULL)?;
        let mut shown = 0;
        for entry in self.entries.iter().filter(listed).skip(skip).take(max) {
            out.write_str(if shown > 0 { ",{" } else { "{" })
                .map_err(|_| FULL)?;
            let name = entry.path.as_str().rsplit('/').next().unwrap_or("");
            write_entry(out, name, entry).map_err(|_| FULL)?;
            out.write_str("}").map_err(|_| FULL)?;
            shown += 1;
        }
        let remaining = total.saturating_sub(skip + shown);
        write!(out, r#"],"remaining":{remaining}"#).map_err(|_| FULL)
    }

    fn file(&self, path: &str) -> Result<usize, Failure> {
        let index = self.find(check_path(path)?).ok_or(NOT_FOUND)?;
        if self.entries[index].dir {
            return Err(NOT_FILE);
        }
        Ok(index)
    }

    fn read<W: fmt::Write>(
        &self,
        path: &str,
        offset: u64,
        length: u64,
        out: &mut ResultWriter<'_, W>,
    ) -> Outcome {
        let entry = self.entries[self.file(path)?];
        let start = (offset as usize).min(entry.size);
        let end = start + (length as usize).min(CHUNK_BYTES).min(entry.size - start);
        let out = out.result();
        out.write_str(r#""data":""#).map_err(|_| FULL)?;
        DATA.with(|data| base64_encode(&data[entry.slot][start..end], out))
            .map_err(|_| FULL)?;
        write!(out, r#"","size":{}"#, entry.size).map_err(|_| FULL)
    }

    fn write(&mut self, path: &str, offset: u64, data: &[u8], overwrite: bool) -> Outcome {
        let path = check_path(path)?;
        let index = match (offset, self.find(path)) {
            (0, Some(existing)) if !overwrite => {
                return Err(if self.entries[existing].dir {
                    NOT_FILE
                } else {
                    EXISTS
                })
            }
            (0, Some(existing)) => {
                if self.entries[existing].dir {
                    return Err(NOT_FILE);
                }
                self.entries[existing].size = 0;
                existing
            }
            (0, None) => {
                self.creatable(path)?;
                self.add(path, false)?
            }
            (_, found) => found.ok_or(NOT_FOUND)?,
        };
        let entry = &mut self.entries[index];
        if entry.dir || entry.size as u64 != offset {
            return Err(Failure(
                "bad-request",
                "a chunk must start at the file's end",
            ));
        }
        let slot = entry.slot;
        let start = entry.size;
        let written = DATA
            .with(|files| base64_decode(data, &mut files[slot][start..]))
            .ok_or(Failure(
                "bad-request",
                "bad base64, or the file would outgrow its 128 KiB",
            ))?;
        let entry = &mut self.entries[index];
        entry.size += written;
        entry.mtime = now_ms();
        Ok(())
    }
}

/// Writes into a [`Text`], failing when it is full.
struct TextWriter<'t, const N: usize>(&'t mut Text<N>);

impl<const N: usize> fmt::Write for TextWriter<'_, N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let text = &mut *self.0;
        let slot = text
            .bytes
            .get_mut(text.len..text.len + s.len())
            .ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        text.len += s.len();
        Ok(())
    }
}

/// An entry's fields (the caller adds the braces).
fn write_entry(out: &mut impl fmt::Write, name: &str, entry: &Entry) -> fmt::Result {
    let kind = if entry.dir { "directory" } else { "file" };
    write!(
        out,
        r#""name":"{}","kind":"{kind}","size":{},"mtime":{},"mode":{},"uid":0,"gid":0"#,
        Escaped(name),
        entry.size,
        entry.mtime / 1000,
        entry.mode
    )
}

fn write_process(out: &mut impl fmt::Write, p: &Process, owner: &Text<32>) -> fmt::Result {
    write!(
        out,
        r#"{{"pid":{},"name":"{}","owner":"{}","cmd_line":"{}","start_ms":{}"#,
        p.pid,
        Escaped(p.name.as_str()),
        Escaped(owner.as_str()),
        Escaped(p.cmd_line.as_str().trim_end()),
        p.start
    )?;
    if let Some(end) = p.end {
        write!(out, r#","end_ms":{end},"exit_code":{}"#, p.exit_code)?;
    }
    out.write_str("}")
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `*` and `?` wildcards.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8], out: &mut impl fmt::Write) -> fmt::Result {
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let mut quad = [b'='; 4];
        for (i, q) in quad.iter_mut().enumerate().take(group.len() + 1) {
            *q = BASE64[(n >> (18 - 6 * i) & 63) as usize];
        }
        out.write_str(core::str::from_utf8(&quad).map_err(|_| fmt::Error)?)?;
    }
    Ok(())
}

/// Decodes `text` into `out`; the byte count, or `None` if it is not base64 or does not fit.
fn base64_decode(text: &[u8], out: &mut [u8]) -> Option<usize> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut written = 0;
    for quad in text.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for &c in quad {
            let value = match c {
                b'=' => {
                    pad += 1;
                    0
                }
                _ if pad > 0 => return None,
                _ => BASE64.iter().position(|&b| b == c)? as u32,
            };
            n = n << 6 | value;
        }
        let count = 3usize.checked_sub(pad)?;
        let slot = out.get_mut(written..written + count)?;
        slot.copy_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8][..count]);
        written += count;
    }
    Some(written)
}
