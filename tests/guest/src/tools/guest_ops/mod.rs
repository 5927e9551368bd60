//! The test guest's guest operations (docs/tools-protocol.md, `guest-op`), a subset of what
//! vireo-tools does: one account fixed at boot (`vireo.guest-user=` / `vireo.guest-password=`;
//! without them every login fails), built-in "programs" with exit codes (`/bin/true`,
//! `/bin/false`, `/bin/exit N`, `/bin/echo TEXT`, `/bin/sleep SECONDS`), and files in a small
//! RAM file system (at most [`MAX_ENTRIES`] files and directories, [`FILE_SLOTS`] files of
//! [`FILE_BYTES`] each). Times (process start and end, file modification) are the wall clock
//! the caller reads for each request from the platform's real-time clock, in milliseconds
//! since the Unix epoch; without a valid clock they count from boot. Tickets are not offered
//! (OperationNotSupportedByGuest).

use core::fmt;

mod base64;
mod programs;
mod ramfs;

use super::json::{Escaped, Fields, Malformed, Value, MAX_TEXT};
use crate::cell::BootCpuCell;
use crate::ticks;
use programs::{Process, FIRST_PID, MAX_PROCESSES};
use ramfs::{Entry, FREE};

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
/// Entries one list-files answer holds at most.
const LIST_PAGE: usize = 12;

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

/// Everything guest operations keep.
struct State {
    user: Text<32>,
    password: Text<64>,
    entries: [Entry; MAX_ENTRIES],
    slot_used: [bool; FILE_SLOTS],
    processes: [Option<Process>; MAX_PROCESSES],
    next_pid: u64,
    next_temp: u64,
    /// The time of the request being served (see the module header), in milliseconds.
    now: u64,
}

static STATE: BootCpuCell<State> = BootCpuCell::new(State {
    user: Text::EMPTY,
    password: Text::EMPTY,
    entries: [FREE; MAX_ENTRIES],
    slot_used: [false; FILE_SLOTS],
    processes: [None; MAX_PROCESSES],
    next_pid: FIRST_PID,
    next_temp: 1,
    now: 0,
});

/// Sets the one account from the command line, and the file system's `/tmp` (made at
/// `wall_clock`, as in [`answer`]).
pub fn configure(user: Option<&str>, password: Option<&str>, wall_clock: Option<u64>) {
    STATE.with(|state| {
        state.set_clock(wall_clock);
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

/// Carries out `request` at `wall_clock` (Unix seconds by the real-time clock, if it has a
/// valid time) and writes its reply (without the line end) into `out`; `say` shows a
/// program's output on the console.
pub fn answer(
    request: &Request<'_>,
    wall_clock: Option<u64>,
    out: &mut impl fmt::Write,
    say: &mut dyn FnMut(fmt::Arguments),
) -> fmt::Result {
    let id = request.id;
    write!(out, r#"{{"msg":"guest-op-reply","id":{id},"#)?;
    STATE.with(|state| {
        state.set_clock(wall_clock);
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
fn uptime_ms() -> u64 {
    ticks::now() * 1000 / ticks::HZ
}

impl State {
    /// Sets the time of what follows: `wall_clock` (Unix seconds), else the uptime.
    fn set_clock(&mut self, wall_clock: Option<u64>) {
        self.now = wall_clock.map_or_else(uptime_ms, |seconds| seconds.saturating_mul(1000));
    }

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
            Op::StatFile => self.stat(path, out),
            Op::ChangeAttributes => self.change_attributes(path, r.mode, r.mtime),
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
}

/// Writes into a [`Text`], failing when it is full.
pub(super) struct TextWriter<'t, const N: usize>(&'t mut Text<N>);

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

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
