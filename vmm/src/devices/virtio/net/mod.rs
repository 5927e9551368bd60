//! virtio-net over a TAP: one receive and one transmit queue served by a worker thread, with
//! mergeable receive buffers and checksum/TSO offloads passed through the virtio-net header.
//! Frame I/O is behind `FrameIo` so the queue logic is testable without a TAP. The card's
//! link (`NicLink`) can be unplugged and plugged back while the guest runs.

pub mod tap;

use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestMemoryMmap};

use super::queue::{add_used, needs_notification, pop_chain, Chain, QueueError};
use super::worker::{self, Worker};
use super::{
    read_config_bytes, ActivateError, Activation, DeviceSignals, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
use tap::{Tap, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, VNET_HDR_LEN};

/// virtio device type of a network card.
pub const VIRTIO_ID_NET: u32 = 1;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Largest frame with its header: 64 KiB of TSO payload plus Ethernet and the header.
pub const MAX_FRAME: usize = 65_562;

/// The worker's sources: the two queues, then the TAP.
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const TAP_SOURCE: usize = 2;

const VIRTIO_NET_F_CSUM: u32 = 0;
const VIRTIO_NET_F_GUEST_CSUM: u32 = 1;
const VIRTIO_NET_F_MAC: u32 = 5;
const VIRTIO_NET_F_GUEST_TSO4: u32 = 7;
const VIRTIO_NET_F_GUEST_TSO6: u32 = 8;
const VIRTIO_NET_F_HOST_TSO4: u32 = 11;
const VIRTIO_NET_F_HOST_TSO6: u32 = 12;
const VIRTIO_NET_F_MRG_RXBUF: u32 = 15;
const VIRTIO_NET_F_STATUS: u32 = 16;
const VIRTIO_NET_S_LINK_UP: u16 = 1;
/// Offset of num_buffers in the virtio-net header.
const NUM_BUFFERS_OFFSET: u64 = 10;

/// Where frames come from and go to (a TAP in production).
pub trait FrameIo: Send {
    /// Reads one frame (with its virtio-net header); `WouldBlock` when none is waiting.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends one frame (with its virtio-net header).
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()>;
}

impl FrameIo for Arc<Tap> {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&**self).read(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        (&**self).write(frame).map(|_| ())
    }
}

/// Whether a card's cable is plugged in, shared by the card, its worker and the control
/// server. A card without link drops the frames the guest sends and those that arrive.
#[derive(Clone, Debug)]
pub struct NicLink(Arc<AtomicBool>);

impl NicLink {
    /// A link that starts up (`connected`) or down.
    pub fn new(connected: bool) -> NicLink {
        NicLink(Arc::new(AtomicBool::new(connected)))
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Plugs or unplugs the cable; returns whether that changed anything (the transport must
    /// then tell the driver with `config_changed`).
    pub fn set(&self, connected: bool) -> bool {
        self.0.swap(connected, Ordering::SeqCst) != connected
    }
}

/// A virtio network card on a TAP.
pub struct Net {
    /// None once released: the TAP is closed, so the next VMM of the VM can attach to it.
    tap: Option<Arc<Tap>>,
    mac: [u8; 6],
    link: NicLink,
    worker: Option<Worker>,
    name: String,
}

impl Net {
    /// A card with address `mac` on `tap`, its cable as `link` says.
    pub fn new(tap: Tap, mac: [u8; 6], link: NicLink, name: String) -> Net {
        Net {
            tap: Some(Arc::new(tap)),
            mac,
            link,
            worker: None,
            name,
        }
    }
}

fn has(features: u64, bit: u32) -> bool {
    features & (1 << bit) != 0
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        [
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_NET_F_STATUS,
        ]
        .iter()
        .fold(0, |acc, bit| acc | 1 << bit)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let status = if self.link.is_up() {
            VIRTIO_NET_S_LINK_UP
        } else {
            0
        };
        let mut config = self.mac.to_vec();
        config.extend_from_slice(&status.to_le_bytes());
        read_config_bytes(&config, offset, data);
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        let [rx, tx] = activation.take_queues()?;
        let Activation {
            memory,
            queue_events,
            acked_features,
            signals,
            ..
        } = activation;
        // The TAP only hands the guest what it said it can take.
        let mut offloads = 0;
        if has(acked_features, VIRTIO_NET_F_GUEST_CSUM) {
            offloads |= TUN_F_CSUM;
            if has(acked_features, VIRTIO_NET_F_GUEST_TSO4) {
                offloads |= TUN_F_TSO4;
            }
            if has(acked_features, VIRTIO_NET_F_GUEST_TSO6) {
                offloads |= TUN_F_TSO6;
            }
        }
        let tap = self.tap.clone().ok_or(ActivateError::Released)?;
        tap.set_offloads(offloads)
            .map_err(|e| ActivateError::Worker(io::Error::other(e.to_string())))?;
        let mut queues = NetQueues::new(
            rx,
            tx,
            memory,
            tap.clone(),
            has(acked_features, VIRTIO_NET_F_MRG_RXBUF),
        )
        .with_link(self.link.clone());
        let tap_fd = tap.as_raw_fd();
        let worker =
            Worker::spawn_with_fds(self.name.clone(), queue_events, &[tap_fd], move |source| {
                queues.serve(source, &signals);
            })?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        worker::stop(&mut self.worker);
    }

    fn release(&mut self) {
        self.reset();
        // The stopped worker held the only other reference: this closes the TAP.
        self.tap = None;
    }
}

/// The queues of an active card and the frame waiting for receive buffers.
pub struct NetQueues<T: FrameIo> {
    rx: Queue,
    tx: Queue,
    mem: GuestMemoryMmap,
    io: T,
    mergeable: bool,
    link: NicLink,
    /// A frame read from the TAP that did not fit the buffers the guest had posted.
    pending: Option<Vec<u8>>,
    /// Whether the TAP may have more frames (edge-triggered readiness).
    io_readable: bool,
    frame: Vec<u8>,
}

impl<T: FrameIo> NetQueues<T> {
    /// Queues of a card doing frame I/O through `io`.
    pub fn new(rx: Queue, tx: Queue, mem: GuestMemoryMmap, io: T, mergeable: bool) -> Self {
        NetQueues {
            rx,
            tx,
            mem,
            io,
            mergeable,
            link: NicLink::new(true),
            pending: None,
            io_readable: true,
            frame: vec![0; MAX_FRAME],
        }
    }

    /// The same queues with their cable as `link` says (plugged in otherwise).
    pub fn with_link(self, link: NicLink) -> Self {
        NetQueues { link, ..self }
    }

    /// Handles a ready source: the RX queue (buffers posted), the TX queue, or the TAP.
    pub fn serve(&mut self, source: usize, signals: &DeviceSignals) {
        signals.serve(|| {
            if source == TAP_SOURCE {
                self.io_readable = true;
            }
            match source {
                TX_QUEUE => self.transmit(),
                RX_QUEUE | TAP_SOURCE => self.receive(),
                _ => Ok(false),
            }
        });
    }

    /// Sends every frame the guest queued; returns whether the driver wants an interrupt.
    fn transmit(&mut self) -> Result<bool, QueueError> {
        let mut used = false;
        while let Some(chain) = pop_chain(&mut self.tx, &self.mem)? {
            let mut len = 0;
            for desc in chain.descriptors.iter().filter(|d| !d.writable) {
                let end = len + desc.len as usize;
                if end > self.frame.len() {
                    len = 0; // oversized: dropped
                    break;
                }
                self.mem
                    .read_slice(&mut self.frame[len..end], desc.addr)
                    .map_err(|_| QueueError::UsedRing)?;
                len = end;
            }
            if len > VNET_HDR_LEN && self.link.is_up() {
                // A full or vanished TAP drops the frame, as a real NIC would.
                let _ = self.io.write_frame(&self.frame[..len]);
            }
            add_used(&mut self.tx, &self.mem, chain.head, 0)?;
            used = true;
        }
        Ok(used && needs_notification(&mut self.tx, &self.mem))
    }

    /// Moves frames from the TAP into posted receive buffers while both last.
    fn receive(&mut self) -> Result<bool, QueueError> {
        let mut used = false;
        loop {
            let frame = match self.pending.take() {
                Some(frame) => frame,
                None if self.io_readable => match self.io.read_frame(&mut self.frame) {
                    Ok(n) if n > VNET_HDR_LEN => self.frame[..n].to_vec(),
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        self.io_readable = false;
                        break;
                    }
                },
                None => break,
            };
            if !self.link.is_up() {
                continue; // no cable: the frame is lost
            }
            if !self.deliver(&frame)? {
                self.pending = Some(frame);
                break;
            }
            used = true;
        }
        Ok(used && needs_notification(&mut self.rx, &self.mem))
    }

    /// Writes `frame` into as many receive chains as it needs; false (and nothing consumed)
    /// when the guest has not posted enough buffers.
    fn deliver(&mut self, frame: &[u8]) -> Result<bool, QueueError> {
        let start = self.rx.next_avail();
        let mut chains: Vec<(Chain, u32)> = Vec::new();
        let mut offset = 0;
        while offset < frame.len() {
            let Some(chain) = pop_chain(&mut self.rx, &self.mem)? else {
                self.rx.set_next_avail(start);
                return Ok(false);
            };
            let mut written = 0u32;
            for desc in chain.descriptors.iter().filter(|d| d.writable) {
                let take = (desc.len as usize).min(frame.len() - offset);
                self.mem
                    .write_slice(&frame[offset..offset + take], desc.addr)
                    .map_err(|_| QueueError::UsedRing)?;
                offset += take;
                written += take as u32;
                if offset == frame.len() {
                    break;
                }
            }
            chains.push((chain, written));
            if !self.mergeable && offset < frame.len() {
                // Without mergeable buffers one chain must hold the frame: drop what does not fit.
                break;
            }
        }
        let count = chains.len() as u16;
        if let Some((first, _)) = chains.first() {
            if let Some(desc) = first
                .descriptors
                .iter()
                .find(|d| d.writable && d.len as u64 >= NUM_BUFFERS_OFFSET + 2)
            {
                let at = desc
                    .addr
                    .checked_add(NUM_BUFFERS_OFFSET)
                    .ok_or(QueueError::UsedRing)?;
                self.mem
                    .write_obj(count, at)
                    .map_err(|_| QueueError::UsedRing)?;
            }
        }
        for (chain, written) in chains {
            add_used(&mut self.rx, &self.mem, chain.head, written)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::queue::testing::*;
    use std::collections::VecDeque;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[derive(Default)]
    struct FakeWire {
        inbound: VecDeque<Vec<u8>>,
        outbound: Vec<Vec<u8>>,
    }

    impl FrameIo for FakeWire {
        fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let frame = self.inbound.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
            buf[..frame.len()].copy_from_slice(&frame);
            Ok(frame.len())
        }
        fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
            self.outbound.push(frame.to_vec());
            Ok(())
        }
    }

    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend(std::iter::repeat_n(fill, len));
        f
    }

    /// RX and TX share the test memory: RX is the standard test queue, TX sits above it.
    fn net(wire: FakeWire) -> (NetQueues<FakeWire>, GuestMemoryMmap) {
        let mem = memory();
        let rx = queue(8);
        let tx = queue_at(8, SECOND);
        (NetQueues::new(rx, tx, mem.clone(), wire, true), mem)
    }

    fn signals() -> DeviceSignals {
        DeviceSignals::new(EventFd::new(EFD_NONBLOCK).unwrap())
    }

    #[test]
    fn a_frame_spreads_over_mergeable_buffers_with_num_buffers_set() {
        let mut wire = FakeWire::default();
        wire.inbound.push_back(frame(3000, 0xab));
        let (mut net, mem) = net(wire);
        for i in 0..4u16 {
            set_desc(&mem, i, BUFFERS + u64::from(i) * 0x1000, 1526, WRITE, 0);
        }
        publish(&mem, &[0, 1, 2, 3]);
        let s = signals();
        net.serve(TAP_SOURCE, &s);
        assert_eq!(used_idx(&mem), 2, "3012 bytes need two 1526-byte buffers");
        assert_eq!(used_entry(&mem, 0), (0, 1526));
        assert_eq!(used_entry(&mem, 1), (1, 3012 - 1526));
        assert_eq!(mem.read_obj::<u16>(GuestAddress(BUFFERS + 10)).unwrap(), 2);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(BUFFERS + 0x1000 + 100))
                .unwrap(),
            0xab
        );
        assert!(!s.is_broken());
    }

    #[test]
    fn a_frame_waits_until_the_guest_posts_enough_buffers() {
        let mut wire = FakeWire::default();
        wire.inbound.push_back(frame(3000, 1));
        let (mut net, mem) = net(wire);
        set_desc(&mem, 0, BUFFERS, 1526, WRITE, 0);
        publish(&mem, &[0]);
        let s = signals();
        net.serve(TAP_SOURCE, &s);
        assert_eq!(
            used_idx(&mem),
            0,
            "nothing consumed while the frame does not fit"
        );
        set_desc(&mem, 1, BUFFERS + 0x1000, 1526, WRITE, 0);
        publish(&mem, &[0, 1]);
        net.serve(RX_QUEUE, &s);
        assert_eq!(used_idx(&mem), 2);
    }

    #[test]
    fn transmitted_chains_reach_the_wire_whole() {
        let (mut net, mem) = net(FakeWire::default());
        let head = frame(0, 0);
        mem.write_slice(&head, GuestAddress(BUFFERS)).unwrap();
        mem.write_slice(&[7u8; 60], GuestAddress(BUFFERS + 0x100))
            .unwrap();
        set_desc_in(&mem, SECOND, 0, BUFFERS, VNET_HDR_LEN as u32, NEXT, 1);
        set_desc_in(&mem, SECOND, 1, BUFFERS + 0x100, 60, 0, 0);
        publish_in(&mem, SECOND, &[0]);
        let s = signals();
        net.serve(TX_QUEUE, &s);
        assert_eq!(net.io.outbound.len(), 1);
        assert_eq!(net.io.outbound[0].len(), VNET_HDR_LEN + 60);
        assert_eq!(used_idx_in(&mem, SECOND), 1);
    }

    #[test]
    fn an_unplugged_card_drops_frames_both_ways() {
        let mut wire = FakeWire::default();
        wire.inbound.push_back(frame(100, 1));
        let (net, mem) = net(wire);
        let link = NicLink::new(false);
        let mut net = net.with_link(link.clone());
        set_desc(&mem, 0, BUFFERS, 1526, WRITE, 0);
        publish(&mem, &[0]);
        mem.write_slice(&frame(60, 7), GuestAddress(BUFFERS + 0x1000))
            .unwrap();
        set_desc_in(
            &mem,
            SECOND,
            0,
            BUFFERS + 0x1000,
            60 + VNET_HDR_LEN as u32,
            0,
            0,
        );
        publish_in(&mem, SECOND, &[0]);
        let s = signals();
        net.serve(TAP_SOURCE, &s);
        net.serve(TX_QUEUE, &s);
        assert_eq!(used_idx(&mem), 0, "the arriving frame is lost");
        assert!(net.io.inbound.is_empty());
        assert!(net.io.outbound.is_empty(), "the sent frame is lost");
        assert_eq!(used_idx_in(&mem, SECOND), 1, "but its buffer is returned");
        assert!(link.set(true) && !link.set(true));
        net.io.inbound.push_back(frame(100, 2));
        net.serve(TAP_SOURCE, &s);
        assert_eq!(used_idx(&mem), 1, "plugged in again, frames arrive");
    }

    #[test]
    fn a_hostile_receive_queue_breaks_the_card() {
        let mut wire = FakeWire::default();
        wire.inbound.push_back(frame(100, 1));
        let (mut net, mem) = net(wire);
        set_desc(&mem, 0, BUFFERS, 1526, WRITE | NEXT, 0);
        publish(&mem, &[0]);
        let s = signals();
        net.serve(TAP_SOURCE, &s);
        assert!(s.is_broken());
    }
}
