//! virtio-net driver: queue 0 receives into posted 2 KiB buffers (no mergeable buffers, no
//! offloads: each buffer holds the 12-byte virtio-net header and one frame), queue 1
//! transmits header + frame from a set of buffers. Only the MAC and link-status features are
//! negotiated.

use super::packet::Mac;
use crate::apic::IrqRoute;
use crate::io::Io;
use crate::virtio::buffers::{RxPool, TxSlots};
use crate::virtio::mmio::{StartError, Transport};

const F_MAC: u32 = 5;
const F_STATUS: u32 = 16;
/// Offset of `status` in the configuration space, and its link-up bit.
const CONFIG_STATUS: u64 = 6;
const S_LINK_UP: u8 = 1;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const QUEUE_SIZE: u16 = 64;
const RX_BUFFERS: u16 = 32;
const TX_BUFFERS: u16 = 16;
const BUFFER_BYTES: usize = 2048;
/// virtio_net_hdr with VERSION_1 (num_buffers included).
const HEADER_BYTES: usize = 12;
/// A locally administered address for cards whose device gives none.
const FALLBACK_MAC: Mac = [0x02, 0x76, 0x72, 0x65, 0x6f, 0x01];

/// A started network card.
pub struct NetCard {
    transport: Transport,
    rx: RxPool,
    tx: TxSlots,
    /// The card's address.
    pub mac: Mac,
    /// Frames received since start.
    pub rx_frames: u64,
    /// Frames sent since start.
    pub tx_frames: u64,
    /// Whether the device reports its link (VIRTIO_NET_F_STATUS); without it, always up.
    reports_link: bool,
}

/// Sends frames (handed to receive handlers so they can answer).
pub struct Sender<'a> {
    io: &'a mut Io,
    transport: &'a mut Transport,
    tx: &'a mut TxSlots,
    tx_frames: &'a mut u64,
}

impl Sender<'_> {
    /// Sends the frame `fill` writes (it returns the frame's length).
    pub fn send(&mut self, fill: impl FnOnce(&mut [u8]) -> usize) {
        self.tx.send(self.io, self.transport, |buffer| {
            buffer[..HEADER_BYTES].fill(0);
            HEADER_BYTES + fill(&mut buffer[HEADER_BYTES..])
        });
        *self.tx_frames += 1;
    }
}

impl NetCard {
    /// Starts the network device behind `transport`.
    pub fn start(
        io: &mut Io,
        mut transport: Transport,
        route: &IrqRoute,
        apic_id: u32,
    ) -> Result<NetCard, StartError> {
        let features = transport.negotiate(io, 1 << F_MAC | 1 << F_STATUS)?;
        let mut mac = FALLBACK_MAC;
        if features & 1 << F_MAC != 0 {
            for (offset, byte) in mac.iter_mut().enumerate() {
                *byte = transport.config_u8(io, offset as u64);
            }
        }
        let rx_queue = transport.setup_queue(io, RX_QUEUE, QUEUE_SIZE)?;
        let tx_queue = transport.setup_queue(io, TX_QUEUE, QUEUE_SIZE)?;
        transport.activate(io, route, apic_id);
        Ok(NetCard {
            transport,
            rx: RxPool::new(rx_queue, RX_BUFFERS, BUFFER_BYTES)?,
            tx: TxSlots::new(tx_queue, TX_BUFFERS, BUFFER_BYTES)?,
            mac,
            rx_frames: 0,
            tx_frames: 0,
            reports_link: features & 1 << F_STATUS != 0,
        })
    }

    /// Whether the card's link is up (the configuration space's status).
    pub fn link_up(&self, io: &mut Io) -> bool {
        !self.reports_link || self.transport.config_u8(io, CONFIG_STATUS) & S_LINK_UP != 0
    }

    /// The link state after a configuration change since the last call, if one came.
    pub fn link_change(&mut self, io: &mut Io) -> Option<bool> {
        self.transport.config_changed(io).then(|| self.link_up(io))
    }

    /// Hands every received frame (without the virtio-net header) to `handle`, with a
    /// `Sender` for answers. Returns whether any arrived.
    pub fn receive(&mut self, io: &mut Io, mut handle: impl FnMut(&[u8], &mut Sender)) -> bool {
        let NetCard {
            transport,
            rx,
            tx,
            rx_frames,
            tx_frames,
            ..
        } = self;
        let mut sender = Sender {
            io,
            transport,
            tx,
            tx_frames,
        };
        rx.receive(|buffer| {
            *rx_frames += 1;
            if let Some(frame) = buffer.get(HEADER_BYTES..) {
                handle(frame, &mut sender);
            }
        }) > 0
    }

    /// Sends one frame that `fill` writes.
    pub fn send(&mut self, io: &mut Io, fill: impl FnOnce(&mut [u8]) -> usize) {
        self.with_sender(io, |sender| sender.send(fill));
    }

    /// Runs `send` with a sender for this card.
    pub fn with_sender(&mut self, io: &mut Io, send: impl FnOnce(&mut Sender)) {
        let mut sender = Sender {
            io,
            transport: &mut self.transport,
            tx: &mut self.tx,
            tx_frames: &mut self.tx_frames,
        };
        send(&mut sender);
    }

    /// Before sleeping: acknowledges interrupts (queued) and asks for one at the next frame.
    /// False if a frame already arrived.
    pub fn prepare_sleep(&mut self, io: &mut Io) -> bool {
        self.transport.acknowledge_interrupts(io);
        self.rx.request_interrupt()
    }
}
