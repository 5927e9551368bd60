//! The test guest's built-in "programs": each finishes at once with its exit code, except
//! `sleep`, which runs until its time is up or it is terminated; the last
//! [`MAX_PROCESSES`] are remembered for `list-processes`.

use core::fmt::{self, Write as _};

use super::{
    Failure, Outcome, Path, ResultWriter, State, Text, TextWriter, FULL, NOT_FOUND, PATH_BYTES,
};
use crate::tools::json::Escaped;

/// Programs remembered (running or finished; the oldest finished one goes first).
pub(super) const MAX_PROCESSES: usize = 16;
/// First pid handed out.
pub(super) const FIRST_PID: u64 = 100;

/// A program started by a guest operation.
#[derive(Clone, Copy)]
pub(super) struct Process {
    pid: u64,
    name: Text<16>,
    cmd_line: Text<PATH_BYTES>,
    start: u64,
    /// When a running program ends by itself (`sleep`).
    due: Option<u64>,
    end: Option<u64>,
    exit_code: i32,
}

impl State {
    pub(super) fn start<W: fmt::Write>(
        &mut self,
        path: &str,
        args: &str,
        out: &mut ResultWriter<'_, W>,
        say: &mut dyn FnMut(fmt::Arguments),
    ) -> Outcome {
        let name = path.strip_prefix("/bin/").ok_or(NOT_FOUND)?;
        let now = self.now;
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
    pub(super) fn process_slot(&self) -> Option<usize> {
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
    pub(super) fn update_processes(&mut self) {
        let now = self.now;
        for process in self.processes.iter_mut().flatten() {
            if process.end.is_none() && process.due.is_some_and(|due| due <= now) {
                process.end = process.due;
            }
        }
    }

    /// Every program started here (the host filters by pid).
    pub(super) fn list_processes<W: fmt::Write>(&self, out: &mut ResultWriter<'_, W>) -> Outcome {
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

    pub(super) fn terminate(&mut self, pid: u64) -> Outcome {
        let process = self
            .processes
            .iter_mut()
            .flatten()
            .find(|p| p.pid == pid && p.end.is_none())
            .ok_or(Failure("process-not-found", "no such running process"))?;
        process.end = Some(self.now);
        // Killed: the shell's 128 + SIGKILL.
        process.exit_code = 137;
        Ok(())
    }
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
