//! The host end of the tools channel (docs/tools-protocol.md): connects to the VMM's tools
//! socket, says hello, records the guest's hello, facts and heartbeats in [`ToolsState`], and
//! carries requests (shutdown, reboot, standby, freeze, thaw) to the guest and their replies back.

use std::collections::HashMap;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vireo_tools::protocol::{
    read_message, write_message, GuestInfo, GuestMessage, HostMessage, Operation, PROTOCOL_VERSION,
};

use super::Vm;
use crate::host::Host;

/// A beat older than this turns the heartbeat yellow, older than [`RED_AFTER`] red.
const YELLOW_AFTER: Duration = Duration::from_secs(3);
const RED_AFTER: Duration = Duration::from_secs(10);
/// Tools that have not beaten for this long count as not running.
const NOT_RUNNING_AFTER: Duration = Duration::from_secs(5);
/// How long a request waits for the guest's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// What vireod knows of a VM's tools.
#[derive(Default)]
pub struct ToolsState {
    /// The tools version from the guest's hello (set once tools were ever seen).
    pub version: Option<String>,
    /// Whether the channel is open and the guest beats.
    pub running: bool,
    /// When the last beat arrived.
    pub last_beat: Option<Instant>,
    /// The guest's latest facts.
    pub info: Option<GuestInfo>,
    writer: Option<UnixStream>,
    pending: HashMap<u64, mpsc::Sender<Result<(), String>>>,
    next_id: u64,
}

impl ToolsState {
    /// guestHeartbeatStatus: gray without tools, else green/yellow/red by the last beat's age.
    pub fn heartbeat_color(&self) -> &'static str {
        match (self.running, self.last_beat) {
            (true, Some(beat)) if beat.elapsed() < YELLOW_AFTER => "green",
            (true, Some(beat)) if beat.elapsed() < RED_AFTER => "yellow",
            (true, _) => "red",
            (false, _) => "gray",
        }
    }

    /// Forgets the channel (the VM stopped); the version stays known.
    pub fn disconnect(&mut self) {
        self.running = false;
        self.info = None;
        self.last_beat = None;
        self.writer = None;
        for (_, waiter) in self.pending.drain() {
            let _ = waiter.send(Err("the tools channel closed".into()));
        }
    }

    /// Marks tools that stopped beating as not running; returns whether anything changed.
    pub fn expire(&mut self) -> bool {
        let silent = self
            .last_beat
            .is_some_and(|b| b.elapsed() >= NOT_RUNNING_AFTER);
        if self.running && silent {
            self.running = false;
            return true;
        }
        false
    }
}

/// Why a request to the guest failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolsRequestError {
    /// No tools are running in the guest.
    #[error("VMware Tools (vireo-tools) is not running in the guest")]
    Unavailable,
    /// The guest answered with an error.
    #[error("the guest tools refused: {0}")]
    Refused(String),
    /// No answer in time.
    #[error("the guest tools did not answer")]
    Timeout,
}

/// Sends `op` to the guest and waits for its reply.
pub fn request(vm: &Vm, op: Operation) -> Result<(), ToolsRequestError> {
    let answer = {
        let mut state = vm.state();
        let tools = &mut state.tools;
        let Some(writer) = tools.writer.as_mut().filter(|_| tools.running) else {
            return Err(ToolsRequestError::Unavailable);
        };
        tools.next_id += 1;
        let id = tools.next_id;
        if write_message(writer, &HostMessage::Request { id, op }).is_err() {
            return Err(ToolsRequestError::Unavailable);
        }
        let (send, answer) = mpsc::channel();
        tools.pending.insert(id, send);
        answer
    };
    match answer.recv_timeout(REPLY_TIMEOUT) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(ToolsRequestError::Refused(why)),
        Err(_) => Err(ToolsRequestError::Timeout),
    }
}

/// Serves the tools channel of the VMM started as `generation`, on its own thread, until
/// that VMM ends.
pub fn spawn(host: Arc<Host>, vm: Arc<Vm>, socket: PathBuf, generation: u64) {
    let _ = std::thread::Builder::new()
        .name(format!("tools-vm{}", vm.id))
        .spawn(move || serve(&host, &vm, &socket, generation));
}

fn serve(host: &Arc<Host>, vm: &Arc<Vm>, socket: &PathBuf, generation: u64) {
    let current = || {
        let state = vm.state();
        state.generation == generation && state.process.is_some() && !state.removed
    };
    let stream = loop {
        if !current() {
            return;
        }
        match UnixStream::connect(socket) {
            Ok(stream) => break stream,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    if write_message(
        &mut writer,
        &HostMessage::Hello {
            protocol: PROTOCOL_VERSION,
        },
    )
    .is_err()
    {
        return;
    }
    {
        let mut state = vm.state();
        if state.generation != generation {
            return;
        }
        state.tools.writer = Some(writer);
    }
    let mut reader = BufReader::new(stream);
    while let Ok(Some(message)) = read_message::<GuestMessage>(&mut reader) {
        let mut state = vm.edit(host);
        if state.generation != generation {
            return;
        }
        let tools = &mut state.tools;
        let was_running = tools.running;
        let changed = match message {
            GuestMessage::Hello { tools_version, .. } => {
                tools.version = Some(tools_version);
                tools.running = true;
                tools.last_beat = Some(Instant::now());
                true
            }
            GuestMessage::GuestInfo(info) => {
                let changed = tools.info.as_ref() != Some(&info);
                tools.info = Some(info);
                changed
            }
            GuestMessage::Heartbeat { .. } => {
                let color = tools.heartbeat_color();
                tools.running = tools.version.is_some();
                tools.last_beat = Some(Instant::now());
                color != tools.heartbeat_color()
            }
            GuestMessage::Reply { id, ok, error } => {
                if let Some(waiter) = tools.pending.remove(&id) {
                    let _ = waiter.send(if ok {
                        Ok(())
                    } else {
                        Err(error.unwrap_or_default())
                    });
                }
                false
            }
        };
        if !changed && was_running == state.tools.running {
            state.unpublished();
        }
    }
    let mut state = vm.edit(host);
    if state.generation == generation {
        state.tools.disconnect();
    }
}
