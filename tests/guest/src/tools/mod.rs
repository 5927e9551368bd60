//! The tools channel: a virtio-console port (no multiport; queue 0 receives, queue 1
//! transmits) whose host end is vireo-vmm's `--tools-socket`. With `vireo.tools=on` it speaks
//! the tools protocol (`agent`); otherwise it is a byte pipe the shell drives (echo, send, read).

pub mod agent;
pub mod guest_ops;
mod json;

use agent::{Agent, Link, Nic, PowerRequest};

use crate::apic::IrqRoute;
use crate::blk::commands::Disks;
use crate::console;
use crate::io::Io;
use crate::say;
use crate::virtio::buffers::{RxPool, TxSlots};
use crate::virtio::mmio::{StartError, Transport};

const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const QUEUE_SIZE: u16 = 64;
const BUFFERS: u16 = 16;
const BUFFER_BYTES: usize = 4096;
/// Most bytes `tools read` prints.
const READ_LIMIT: usize = 200;

/// A started tools channel.
pub struct ToolsChannel {
    transport: Transport,
    rx: RxPool,
    tx: TxSlots,
    /// Bytes received since start.
    pub received: u64,
    /// Bytes sent since start.
    pub sent: u64,
    /// Whether received bytes are sent back.
    pub echo: bool,
    /// The tools protocol, when it owns the channel.
    agent: Option<Agent>,
}

/// What serving the channel did.
pub enum Activity {
    /// Nothing arrived or was due.
    Idle,
    /// Bytes were handled or sent.
    Worked,
    /// The host asked for a power operation (already replied to and sent).
    Power(PowerRequest),
}

impl ToolsChannel {
    /// Starts the console device behind `transport` (no optional features).
    pub fn start(
        io: &mut Io,
        mut transport: Transport,
        route: &IrqRoute,
        apic_id: u32,
    ) -> Result<ToolsChannel, StartError> {
        transport.negotiate(io, 0)?;
        let rx_queue = transport.setup_queue(io, RX_QUEUE, QUEUE_SIZE)?;
        let tx_queue = transport.setup_queue(io, TX_QUEUE, QUEUE_SIZE)?;
        transport.activate(io, route, apic_id);
        let rx = RxPool::new(rx_queue, BUFFERS, BUFFER_BYTES)?;
        let tx = TxSlots::new(tx_queue, BUFFERS, BUFFER_BYTES)?;
        Ok(ToolsChannel {
            transport,
            rx,
            tx,
            received: 0,
            sent: 0,
            echo: false,
            agent: None,
        })
    }

    /// Hands the channel to the tools protocol (reporting `nic`, accepting standby requests
    /// with `standby`) and says hello.
    pub fn start_protocol(
        &mut self,
        io: &mut Io,
        disks: &mut Disks,
        nic: Option<Nic>,
        standby: bool,
    ) {
        let mut agent = Agent::new(nic, standby);
        agent.start(&mut self.link(io, disks));
        self.agent = Some(agent);
        say!(io, "tools: protocol on");
    }

    fn link<'a>(&'a mut self, io: &'a mut Io, disks: &'a mut Disks) -> ChannelLink<'a> {
        ChannelLink {
            io,
            transport: &mut self.transport,
            tx: &mut self.tx,
            sent: &mut self.sent,
            disks,
        }
    }

    /// Sends `bytes` (in buffer-sized pieces).
    pub fn write(&mut self, io: &mut Io, bytes: &[u8]) {
        write_to(io, &mut self.transport, &mut self.tx, bytes);
        self.sent += bytes.len() as u64;
    }

    /// Hands what arrived to `handle`, piece by piece. Returns whether anything did.
    pub fn read(&mut self, mut handle: impl FnMut(&[u8])) -> bool {
        let received = &mut self.received;
        self.rx.receive(|bytes| {
            *received += bytes.len() as u64;
            handle(bytes);
        }) > 0
    }

    /// Serves the channel while the shell is idle: runs the protocol (flushing `disks` for a
    /// freeze), or echoes what arrived if echo is on (else leaves it for `read`).
    pub fn service(&mut self, io: &mut Io, disks: &mut Disks) -> Activity {
        let Self {
            transport,
            rx,
            tx,
            received,
            sent,
            echo,
            agent,
        } = self;
        if agent.is_none() && !*echo {
            return Activity::Idle;
        }
        let mut link = ChannelLink {
            io,
            transport,
            tx,
            sent,
            disks,
        };
        let mut power = None;
        let arrived = rx.receive(|bytes| {
            *received += bytes.len() as u64;
            match agent {
                Some(agent) if power.is_none() => power = agent.receive(bytes, &mut link),
                Some(_) => {}
                None => link.send(bytes),
            }
        }) > 0;
        let beat = match agent {
            Some(agent) if power.is_none() => agent.beat(&mut link),
            _ => false,
        };
        match power {
            Some(request) => {
                link.tx.wait_until_sent(link.io, link.transport);
                Activity::Power(request)
            }
            None if arrived || beat => Activity::Worked,
            None => Activity::Idle,
        }
    }

    /// Before the shell sleeps: acknowledges interrupts (queued) and asks for one on the
    /// next arrival. False if something already arrived.
    pub fn prepare_sleep(&mut self, io: &mut Io) -> bool {
        self.transport.acknowledge_interrupts(io);
        let listening = self.echo || self.agent.is_some();
        !listening || self.rx.request_interrupt()
    }
}

/// The agent's view of the channel: its transmit side and the disks a freeze flushes.
struct ChannelLink<'a> {
    io: &'a mut Io,
    transport: &'a mut Transport,
    tx: &'a mut TxSlots,
    sent: &'a mut u64,
    disks: &'a mut Disks,
}

impl Link for ChannelLink<'_> {
    fn send(&mut self, bytes: &[u8]) {
        write_to(self.io, self.transport, self.tx, bytes);
        *self.sent += bytes.len() as u64;
    }

    fn say(&mut self, line: core::fmt::Arguments) {
        say!(self.io, "{line}");
    }

    fn wall_clock(&mut self) -> Option<u64> {
        crate::rtc::unix_seconds(self.io)
    }

    fn flush_disks(&mut self) -> bool {
        match self.disks.flush_all(self.io) {
            Ok(flushed) => say!(self.io, "tools: freeze: {flushed} disk(s) flushed"),
            Err(error) => {
                say!(self.io, "tools: freeze failed: {error}");
                return false;
            }
        }
        true
    }
}

fn write_to(io: &mut Io, transport: &mut Transport, tx: &mut TxSlots, bytes: &[u8]) {
    for piece in bytes.chunks(tx.buffer_size()) {
        tx.send(io, transport, |buffer| {
            buffer[..piece.len()].copy_from_slice(piece);
            piece.len()
        });
    }
}

/// The shell's `tools` command: `echo` (turn echo on), `send <text>` (text and a newline),
/// `read` (print what arrived), `info` (byte counters).
pub fn command(channel: Option<&mut ToolsChannel>, io: &mut Io, args: &str) {
    let Some(channel) = channel else {
        console::line(io, format_args!("error: no tools channel"));
        return;
    };
    let (verb, rest) = args.split_once(' ').unwrap_or((args, ""));
    if let (Some(agent), "echo" | "read") = (&channel.agent, verb) {
        console::line(
            io,
            format_args!(
                "error: the tools protocol owns the channel (beats={})",
                agent.beats
            ),
        );
        return;
    }
    match verb {
        "echo" => {
            channel.echo = true;
            console::line(io, format_args!("tools echo on"));
        }
        "send" => {
            channel.write(io, rest.as_bytes());
            channel.write(io, b"\n");
            console::line(io, format_args!("tools sent {}", rest.len() + 1));
        }
        "read" => {
            let mut text = [0u8; READ_LIMIT];
            let mut len = 0;
            channel.read(|bytes| {
                let take = bytes.len().min(READ_LIMIT - len);
                text[len..len + take].copy_from_slice(&bytes[..take]);
                len += take;
            });
            let shown = core::str::from_utf8(&text[..len]).unwrap_or("(not UTF-8)");
            console::line(io, format_args!("tools read {len}: {}", shown.trim_end()));
        }
        "info" => {
            console::line(
                io,
                format_args!(
                    "tools rx={} tx={} echo={}",
                    channel.received,
                    channel.sent,
                    if channel.echo { "on" } else { "off" }
                ),
            );
            if let Some(agent) = &channel.agent {
                console::line(io, format_args!("tools protocol on beats={}", agent.beats));
            }
        }
        _ => console::line(
            io,
            format_args!("error: usage: tools echo|send <text>|read|info"),
        ),
    }
}
