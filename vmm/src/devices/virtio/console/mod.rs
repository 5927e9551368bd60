//! The tools channel: a virtio-console port whose host end is a Unix socket the VMM listens on
//! (one client at a time — vireod). We chose virtio-console over virtio-vsock because the
//! tools protocol is a single byte stream between one host agent and one guest daemon: a
//! console port carries exactly that with two queues and no connection state machine, and
//! every guest kernel has the driver (/dev/hvc0, or /dev/vportNp0 with multiport).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::queue::{add_used, needs_notification, pop_chain, QueueError};
use super::worker::{self, Worker};
use super::{
    read_config_bytes, ActivateError, Activation, DeviceSignals, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
use crate::devices::bus::lock;

/// virtio device type of a console.
pub const VIRTIO_ID_CONSOLE: u32 = 3;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 128;
/// Host-to-guest bytes buffered before the socket reader waits for the guest.
const INBOUND_LIMIT: usize = 1 << 20;

/// The worker's sources: the two queues, then the host end's inbound bytes.
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const INBOUND_SOURCE: usize = 2;

/// The host end: bytes from the connected client waiting for the guest, and the client.
pub struct HostEnd {
    inbound: Mutex<VecDeque<u8>>,
    drained: Condvar,
    inbound_ready: EventFd,
    client: Mutex<Option<UnixStream>>,
}

impl HostEnd {
    fn new() -> std::io::Result<Self> {
        Ok(HostEnd {
            inbound: Mutex::new(VecDeque::new()),
            drained: Condvar::new(),
            inbound_ready: EventFd::new(EFD_NONBLOCK)?,
            client: Mutex::new(None),
        })
    }

    /// Queues bytes for the guest, waiting while the buffer is full.
    fn push_inbound(&self, bytes: &[u8]) {
        let mut inbound = lock(&self.inbound);
        while inbound.len() >= INBOUND_LIMIT {
            inbound = self
                .drained
                .wait(inbound)
                .unwrap_or_else(|p| p.into_inner());
        }
        inbound.extend(bytes);
        let _ = self.inbound_ready.write(1);
    }

    /// Sends guest bytes to the client; dropped when nobody is connected.
    fn send(&self, bytes: &[u8]) {
        let mut client = lock(&self.client);
        if let Some(stream) = client.as_mut() {
            if stream.write_all(bytes).is_err() {
                *client = None;
            }
        }
    }
}

/// Errors creating the tools channel.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The socket could not be bound.
    #[error("cannot listen on tools socket {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The tools-channel console device.
pub struct Console {
    host: Arc<HostEnd>,
    worker: Option<Worker>,
    name: String,
}

impl Console {
    /// Listens on `socket` (replacing a stale one) and serves one client at a time.
    pub fn listen(socket: &Path, name: String) -> Result<Console, ConsoleError> {
        let error = |source| ConsoleError::Listen {
            path: socket.to_owned(),
            source,
        };
        if socket.exists() {
            std::fs::remove_file(socket).map_err(error)?;
        }
        let listener = UnixListener::bind(socket).map_err(error)?;
        let host = Arc::new(HostEnd::new().map_err(error)?);
        let accepting = host.clone();
        std::thread::Builder::new()
            .name(format!("{name}-host"))
            .spawn(move || match crate::seccomp::filter_this_thread() {
                Ok(()) => accept_clients(listener, &accepting),
                Err(e) => eprintln!("vireo-vmm: tools socket not served: {e}"),
            })
            .map_err(error)?;
        Ok(Console {
            host,
            worker: None,
            name,
        })
    }
}

/// Serves clients one after another: each replaces the previous one.
fn accept_clients(listener: UnixListener, host: &HostEnd) {
    for stream in listener.incoming().flatten() {
        let Ok(reader) = stream.try_clone() else {
            continue;
        };
        *lock(&host.client) = Some(stream);
        pump_client(reader, host);
    }
}

fn pump_client(mut reader: UnixStream, host: &HostEnd) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = reader.read(&mut buf) {
        host.push_inbound(&buf[..n]);
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols, rows, max_nr_ports, emerg_wr: meaningful only with features we do not offer.
        read_config_bytes(&[0; 12], offset, data);
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        let [rx, tx] = activation.take_queues()?;
        let signals = activation.signals;
        let mut port = ConsolePort {
            rx,
            tx,
            mem: activation.memory,
            host: self.host.clone(),
        };
        let inbound_fd = self.host.inbound_ready.as_raw_fd();
        let host = self.host.clone();
        let worker = Worker::spawn_with_fds(
            self.name.clone(),
            activation.queue_events,
            &[inbound_fd],
            move |source| {
                if source == INBOUND_SOURCE {
                    let _ = host.inbound_ready.read();
                }
                port.serve(source, &signals);
            },
        )?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        worker::stop(&mut self.worker);
    }
}

/// The queues of an active port.
pub struct ConsolePort {
    rx: Queue,
    tx: Queue,
    mem: GuestMemoryMmap,
    host: Arc<HostEnd>,
}

impl ConsolePort {
    fn serve(&mut self, source: usize, signals: &DeviceSignals) {
        signals.serve(|| match source {
            TX_QUEUE => self.transmit(),
            RX_QUEUE | INBOUND_SOURCE => self.receive(),
            _ => Ok(false),
        });
    }

    /// Guest → host.
    fn transmit(&mut self) -> Result<bool, QueueError> {
        let mut used = false;
        while let Some(chain) = pop_chain(&mut self.tx, &self.mem)? {
            let mut bytes = Vec::new();
            for desc in chain.descriptors.iter().filter(|d| !d.writable) {
                let start = bytes.len();
                bytes.resize(start + desc.len as usize, 0);
                self.mem
                    .read_slice(&mut bytes[start..], desc.addr)
                    .map_err(|_| QueueError::UsedRing)?;
            }
            self.host.send(&bytes);
            add_used(&mut self.tx, &self.mem, chain.head, 0)?;
            used = true;
        }
        Ok(used && needs_notification(&mut self.tx, &self.mem))
    }

    /// Host → guest, as far as posted buffers and waiting bytes go.
    fn receive(&mut self) -> Result<bool, QueueError> {
        let mut used = false;
        loop {
            if lock(&self.host.inbound).is_empty() {
                break;
            }
            let Some(chain) = pop_chain(&mut self.rx, &self.mem)? else {
                break;
            };
            let mut written = 0u32;
            {
                let mut inbound = lock(&self.host.inbound);
                for desc in chain.descriptors.iter().filter(|d| d.writable) {
                    let take = (desc.len as usize).min(inbound.len());
                    let bytes: Vec<u8> = inbound.drain(..take).collect();
                    self.mem
                        .write_slice(&bytes, desc.addr)
                        .map_err(|_| QueueError::UsedRing)?;
                    written += take as u32;
                }
                self.host.drained.notify_all();
            }
            add_used(&mut self.rx, &self.mem, chain.head, written)?;
            used = true;
        }
        Ok(used && needs_notification(&mut self.rx, &self.mem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::queue::testing::*;
    use vm_memory::GuestAddress;

    #[test]
    fn bytes_flow_both_ways_between_socket_and_queues() {
        let host = Arc::new(HostEnd::new().unwrap());
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        *lock(&host.client) = Some(theirs);
        host.push_inbound(b"hello guest");
        let mem = memory();
        let rx = queue(8);
        let tx = queue_at(8, SECOND);
        let mut port = ConsolePort {
            rx,
            tx,
            mem: mem.clone(),
            host: host.clone(),
        };
        let signals = DeviceSignals::new(EventFd::new(EFD_NONBLOCK).unwrap());

        set_desc(&mem, 0, BUFFERS, 64, WRITE, 0);
        publish(&mem, &[0]);
        port.serve(RX_QUEUE, &signals);
        assert_eq!(used_entry(&mem, 0), (0, 11));
        let mut got = [0u8; 11];
        mem.read_slice(&mut got, GuestAddress(BUFFERS)).unwrap();
        assert_eq!(&got, b"hello guest");

        mem.write_slice(b"hello host", GuestAddress(BUFFERS + 0x100))
            .unwrap();
        set_desc_in(&mem, SECOND, 0, BUFFERS + 0x100, 10, 0, 0);
        publish_in(&mem, SECOND, &[0]);
        port.serve(TX_QUEUE, &signals);
        let mut back = [0u8; 10];
        ours.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello host");
        assert!(!signals.is_broken());
    }
}
