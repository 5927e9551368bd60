//! The guest side of the tools channel over any byte stream: says hello, reports the guest's
//! facts (again whenever they change or the host says hello), beats every interval, and
//! answers the host's requests through [`GuestActions`] and its guest operations through
//! [`GuestOperations`].

use std::io::{BufReader, Read, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::actions::GuestActions;
use crate::guest_ops::wire::{GuestOpReply, GuestOpsOffer};
use crate::guest_ops::GuestOperations;
use crate::protocol::{
    read_message, write_message, GuestInfo, GuestMessage, HostMessage, Operation, ReadMessageError,
    PROTOCOL_VERSION,
};

/// Reads the guest's facts (the real one is [`crate::facts::read_guest_info`]).
pub type FactsSource = Box<dyn FnMut() -> GuestInfo + Send>;

/// How the daemon behaves.
pub struct DaemonOptions {
    /// Time between heartbeats (facts are re-read at each beat).
    pub heartbeat: Duration,
    /// Where facts come from.
    pub facts: FactsSource,
    /// What requests do.
    pub actions: Box<dyn GuestActions>,
    /// What guest operations do (`None`: the guest offers none).
    pub guest_ops: Option<Box<dyn GuestOperations>>,
}

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Reading from the host failed.
    #[error(transparent)]
    Read(#[from] ReadMessageError),
    /// Writing to the host failed.
    #[error("tools channel write failed: {0}")]
    Write(std::io::Error),
}

/// The writing half, shared by the heartbeat thread and the request loop.
type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

fn send(writer: &SharedWriter, message: &GuestMessage) -> Result<(), DaemonError> {
    let mut writer = writer.lock().unwrap_or_else(|p| p.into_inner());
    write_message(&mut *writer, message).map_err(DaemonError::Write)
}

fn hello(guest_ops: Option<GuestOpsOffer>, upgrades: bool) -> GuestMessage {
    GuestMessage::Hello {
        protocol: PROTOCOL_VERSION,
        tools_version: crate::protocol::TOOLS_VERSION.into(),
        guest_ops,
        upgrades,
    }
}

/// How serving the channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The host end closed the channel.
    Closed,
    /// New tools were installed: the caller restarts the daemon as the new version.
    Upgraded,
}

/// What answering one host message leads to.
enum Next {
    Serve,
    Restart,
}

/// Serves the channel until the host end closes it, new tools are installed, or it fails.
pub fn serve(
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    options: DaemonOptions,
) -> Result<Ended, DaemonError> {
    let DaemonOptions {
        heartbeat,
        facts,
        mut actions,
        mut guest_ops,
    } = options;
    let offer = guest_ops.as_ref().map(|ops| ops.offer());
    let upgrades = actions.upgrades();
    let writer: SharedWriter = Arc::new(Mutex::new(writer));
    let facts = Arc::new(Mutex::new(facts));
    let read_facts = {
        let facts = facts.clone();
        move || (facts.lock().unwrap_or_else(|p| p.into_inner()))()
    };
    send(&writer, &hello(offer, upgrades))?;
    let mut last_info = read_facts();
    send(&writer, &GuestMessage::GuestInfo(last_info.clone()))?;

    let (stop, stopped) = mpsc::channel::<()>();
    let beat_writer = writer.clone();
    let beat_facts = read_facts.clone();
    let beater = std::thread::spawn(move || {
        let mut seq = 0u64;
        loop {
            match stopped.recv_timeout(heartbeat) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return Ok(()),
            }
            seq += 1;
            let info = beat_facts();
            if info != last_info {
                send(&beat_writer, &GuestMessage::GuestInfo(info.clone()))?;
                last_info = info;
            }
            send(&beat_writer, &GuestMessage::Heartbeat { seq })?;
        }
    });

    let mut reader = BufReader::new(reader);
    let outcome = loop {
        let message = match read_message::<HostMessage>(&mut reader) {
            Ok(Some(message)) => message,
            Ok(None) => break Ok(Ended::Closed),
            Err(error) => break Err(error.into()),
        };
        let sent = match message {
            HostMessage::Hello { .. } => send(&writer, &hello(offer, upgrades))
                .and_then(|_| send(&writer, &GuestMessage::GuestInfo(read_facts())))
                .map(|()| Next::Serve),
            HostMessage::Request { id, op } => answer(&writer, id, op, &mut *actions, &read_facts),
            HostMessage::GuestOp { id, auth, op } => {
                let outcome = match guest_ops.as_mut() {
                    Some(ops) => ops.run(&auth, op),
                    None => Err(crate::guest_ops::wire::GuestOpError::new(
                        crate::guest_ops::wire::GuestFault::Unsupported,
                        "this guest offers no guest operations",
                    )),
                };
                send(
                    &writer,
                    &GuestMessage::GuestOpReply(GuestOpReply::of(id, outcome)),
                )
                .map(|()| Next::Serve)
            }
        };
        match sent {
            Ok(Next::Serve) => {}
            Ok(Next::Restart) => break Ok(Ended::Upgraded),
            Err(error) => break Err(error),
        }
    };
    drop(stop);
    let beat_outcome = beater.join().unwrap_or(Ok(()));
    beat_outcome.or_else(|e| match e {
        // The host closing the channel also ends the beats; that is not a failure.
        DaemonError::Write(_) => Ok(()),
        other => Err(other),
    })?;
    outcome
}

/// Carries out one request and replies; power operations are replied to before they start,
/// a tools upgrade once installed (the daemon then restarts).
fn answer(
    writer: &SharedWriter,
    id: u64,
    op: Operation,
    actions: &mut dyn GuestActions,
    read_facts: &impl Fn() -> GuestInfo,
) -> Result<Next, DaemonError> {
    let reply = |result: Result<(), String>| GuestMessage::Reply {
        id,
        ok: result.is_ok(),
        error: result.err(),
    };
    match op {
        Operation::Shutdown | Operation::Reboot => {
            send(writer, &reply(Ok(())))?;
            let started = match op {
                Operation::Shutdown => actions.shutdown(),
                _ => actions.reboot(),
            };
            if let Err(error) = started {
                eprintln!("vireo-tools: {op:?} failed: {error}");
            }
            Ok(Next::Serve)
        }
        Operation::UpgradeTools => {
            let installed = actions.upgrade_tools();
            let next = if installed.is_ok() {
                Next::Restart
            } else {
                Next::Serve
            };
            send(writer, &reply(installed)).map(|()| next)
        }
        // The guest gets ready to be suspended; the host suspends the VM once it replies ok.
        Operation::Standby => send(writer, &reply(actions.standby())).map(|()| Next::Serve),
        Operation::Freeze => send(writer, &reply(actions.freeze())).map(|()| Next::Serve),
        Operation::Thaw => send(writer, &reply(actions.thaw())).map(|()| Next::Serve),
        Operation::RefreshInfo => {
            send(writer, &GuestMessage::GuestInfo(read_facts()))?;
            send(writer, &reply(Ok(()))).map(|()| Next::Serve)
        }
    }
}
