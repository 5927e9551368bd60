//! The host end of the tools channel (docs/tools-protocol.md): connects to the VMM's tools
//! socket, says hello, records the guest's hello, facts and heartbeats in [`ToolsState`], and
//! carries requests (shutdown, reboot, standby, freeze, thaw, upgrade-tools) and guest operations to the guest
//! and their replies back.

use std::collections::HashMap;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vireo_tools::guest_ops::wire::{GuestAuth, GuestOp, GuestOpError, GuestOpReply, GuestOpsOffer};
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
    /// What the guest's hello offered for guest operations.
    pub guest_ops: Option<GuestOpsOffer>,
    /// Whether the guest's tools install upgrades from the installer CD.
    pub upgrades: bool,
    writer: Option<Arc<Mutex<UnixStream>>>,
    pending: HashMap<u64, mpsc::Sender<Result<(), String>>>,
    pending_ops: HashMap<u64, mpsc::Sender<GuestOpReply>>,
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
        self.guest_ops = None;
        self.upgrades = false;
        for (_, waiter) in self.pending.drain() {
            let _ = waiter.send(Err("the tools channel closed".into()));
        }
        // Dropping the senders tells each waiting guest operation the channel closed.
        self.pending_ops.clear();
    }

    /// A new request id and the writer to send it on, if tools run.
    fn next_request(&mut self) -> Option<(u64, Arc<Mutex<UnixStream>>)> {
        let writer = self.writer.clone().filter(|_| self.running)?;
        self.next_id += 1;
        Some((self.next_id, writer))
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

/// Writes one message on the channel (one writer at a time, so lines never interleave).
fn send(writer: &Mutex<UnixStream>, message: &HostMessage) -> bool {
    let mut stream = writer.lock().unwrap_or_else(|p| p.into_inner());
    write_message(&mut *stream, message).is_ok()
}

/// Sends `op` to the guest and waits for its reply.
pub fn request(vm: &Vm, op: Operation) -> Result<(), ToolsRequestError> {
    let answer = {
        let mut state = vm.state();
        let tools = &mut state.tools;
        let Some((id, writer)) = tools.next_request() else {
            return Err(ToolsRequestError::Unavailable);
        };
        if !send(&writer, &HostMessage::Request { id, op }) {
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

/// Why a guest operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestOpFailure {
    /// No tools, or tools without guest operations, are running in the guest.
    #[error("the guest tools are not running or offer no guest operations")]
    Unavailable,
    /// No answer in time.
    #[error("the guest tools did not answer")]
    Timeout,
    /// The guest refused or failed.
    #[error("{}", .0.message)]
    Guest(GuestOpError),
}

/// What the running guest offers for guest operations, if anything.
pub fn guest_ops_offer(vm: &Vm) -> Option<GuestOpsOffer> {
    let state = vm.state();
    state.tools.guest_ops.filter(|_| state.tools.running)
}

/// Sends guest operation `op` with `auth` (which vireod never checks, keeps or logs) and waits
/// for the guest's result. The message is written outside the VM's lock: a file chunk may take
/// the guest a while to read.
pub fn guest_op(
    vm: &Vm,
    auth: GuestAuth,
    op: GuestOp,
) -> Result<Option<serde_json::Value>, GuestOpFailure> {
    let (id, writer, answer) = {
        let mut state = vm.state();
        let tools = &mut state.tools;
        if tools.guest_ops.is_none() {
            return Err(GuestOpFailure::Unavailable);
        }
        let Some((id, writer)) = tools.next_request() else {
            return Err(GuestOpFailure::Unavailable);
        };
        let (send, answer) = mpsc::channel();
        tools.pending_ops.insert(id, send);
        (id, writer, answer)
    };
    if !send(&writer, &HostMessage::GuestOp { id, auth, op }) {
        vm.state().tools.pending_ops.remove(&id);
        return Err(GuestOpFailure::Unavailable);
    }
    let reply = match answer.recv_timeout(REPLY_TIMEOUT) {
        Ok(reply) => reply,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            vm.state().tools.pending_ops.remove(&id);
            return Err(GuestOpFailure::Timeout);
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => return Err(GuestOpFailure::Unavailable),
    };
    if reply.ok {
        return Ok(reply.result);
    }
    Err(GuestOpFailure::Guest(GuestOpError::new(
        reply
            .fault
            .unwrap_or(vireo_tools::guest_ops::wire::GuestFault::Failed),
        reply.error.unwrap_or_default(),
    )))
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
    // A guest that stops reading cannot hold a writer (and the VM's requests) forever.
    let _ = writer.set_write_timeout(Some(REPLY_TIMEOUT));
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
        state.tools.writer = Some(Arc::new(Mutex::new(writer)));
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
            GuestMessage::Hello {
                tools_version,
                guest_ops,
                upgrades,
                ..
            } => {
                tools.version = Some(tools_version);
                tools.guest_ops = guest_ops;
                tools.upgrades = upgrades;
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
            GuestMessage::GuestOpReply(reply) => {
                if let Some(waiter) = tools.pending_ops.remove(&reply.id) {
                    let _ = waiter.send(reply);
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
