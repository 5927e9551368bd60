//! Limits on HTTPS connections. At most `max_connections` are open at once; when full, the one
//! that has waited longest without a request in progress makes room for the newcomer (one that
//! never completed a request first, then an idle keep-alive one), so half-open connections can
//! never lock legitimate clients out. Each connection must send a request head within the read
//! timeout once it starts one (or once its TLS handshake ends), and is closed after the idle
//! timeout between requests. While it serves a request, a connection whose client has closed
//! its side ([`peer_closed`], looked at every [`PEER_CHECK`]) ends, and the request with it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::config::Config;
use crate::locks::lock;

/// The timeouts a connection lives by.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From accept to the end of the TLS handshake.
    pub handshake: Duration,
    /// From the first byte of a request head (or the end of the handshake) to its last byte;
    /// also bounds reading a SOAP body.
    pub read: Duration,
    /// Between requests on a keep-alive connection.
    pub idle: Duration,
}

impl Timeouts {
    /// The timeouts configured in `config`.
    pub fn from_config(config: &Config) -> Timeouts {
        Timeouts {
            handshake: Duration::from_secs(config.handshake_timeout_secs),
            read: Duration::from_secs(config.read_timeout_secs),
            idle: Duration::from_secs(config.idle_timeout_secs),
        }
    }
}

/// How often a connection serving a request looks whether its client has gone.
pub const PEER_CHECK: Duration = Duration::from_secs(1);

/// Whether the client has closed its side of `socket` (or the connection failed). A FIN counts
/// even behind bytes not read yet, as a TLS close_notify often is. One `poll`, no reading.
pub fn peer_closed(socket: &std::net::TcpStream) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    // nix does not name POLLRDHUP (Linux's "peer closed its side"), nor reads it back: the
    // count of descriptors with events says it, as POLLHUP and POLLERR are always reported.
    let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
    let mut fds = [PollFd::new(socket.as_fd(), rdhup)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|ready| ready > 0)
}

/// The open connections, capped.
pub struct Connections {
    cap: usize,
    open: Mutex<HashMap<u64, Arc<Tracker>>>,
    next_id: AtomicU64,
}

/// A connection's place among the open ones; leaving drops it.
pub struct Admission {
    connections: Arc<Connections>,
    id: u64,
    /// The connection's state.
    pub tracker: Arc<Tracker>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        lock(&self.connections.open).remove(&self.id);
    }
}

impl Connections {
    /// Room for `cap` connections.
    pub fn new(cap: usize) -> Arc<Connections> {
        Arc::new(Connections {
            cap: cap.max(1),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Admits a new connection, evicting a waiting one if full; `None` when every open
    /// connection is serving a request.
    pub fn admit(self: &Arc<Self>) -> Option<Admission> {
        let mut open = lock(&self.open);
        if open.len() >= self.cap {
            let (&victim, _) = open
                .iter()
                .filter_map(|(id, t)| t.eviction_rank().map(|rank| (id, rank)))
                .min_by_key(|(_, rank)| *rank)?;
            if let Some(tracker) = open.remove(&victim) {
                tracker.evicted.notify_one();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tracker = Arc::new(Tracker::new());
        open.insert(id, tracker.clone());
        Some(Admission {
            connections: self.clone(),
            id,
            tracker,
        })
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        lock(&self.open).len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one connection is doing.
pub struct Tracker {
    state: Mutex<State>,
    /// Woken when the connection must close to make room for another.
    pub evicted: Notify,
}

#[derive(Clone, Copy)]
enum State {
    /// No request in progress since `since`; `head` is when a request head began arriving.
    Waiting {
        since: Instant,
        head: Option<Instant>,
        served: bool,
    },
    /// A request is being served.
    Serving,
}

impl Tracker {
    fn new() -> Tracker {
        Tracker {
            state: Mutex::new(State::Waiting {
                since: Instant::now(),
                head: None,
                served: false,
            }),
            evicted: Notify::new(),
        }
    }

    /// Restarts the clock once the TLS handshake is done.
    pub fn handshake_done(&self) {
        if let State::Waiting { since, .. } = &mut *lock(&self.state) {
            *since = Instant::now();
        }
    }

    /// Marks a request as being served until the guard drops.
    pub fn serving(self: &Arc<Self>) -> Serving {
        *lock(&self.state) = State::Serving;
        Serving {
            tracker: self.clone(),
        }
    }

    fn bytes_arrived(&self) {
        if let State::Waiting {
            head: head @ None, ..
        } = &mut *lock(&self.state)
        {
            *head = Some(Instant::now());
        }
    }

    /// Lower ranks are evicted first; `None` while serving.
    fn eviction_rank(&self) -> Option<(bool, Instant)> {
        match *lock(&self.state) {
            State::Waiting { since, served, .. } => Some((served, since)),
            State::Serving => None,
        }
    }

    /// When the connection times out as things stand, or `None` while serving.
    pub fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        match *lock(&self.state) {
            State::Serving => None,
            State::Waiting {
                head: Some(head), ..
            } => Some(head + timeouts.read),
            State::Waiting {
                since,
                served: false,
                ..
            } => Some(since + timeouts.read),
            State::Waiting { since, .. } => Some(since + timeouts.idle),
        }
    }
}

/// A request in progress; dropping it returns the connection to waiting.
pub struct Serving {
    tracker: Arc<Tracker>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        *lock(&self.tracker.state) = State::Waiting {
            since: Instant::now(),
            head: None,
            served: true,
        };
    }
}

/// A stream that tells its tracker when request bytes arrive.
pub struct Tracked<S> {
    inner: S,
    tracker: Arc<Tracker>,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, tracker: Arc<Tracker>) -> Tracked<S> {
        Tracked { inner, tracker }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.tracker.bytes_arrived();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_house_evicts_the_longest_waiting_unserved_connection_first() {
        let connections = Connections::new(3);
        let served = connections.admit().unwrap();
        drop(served.tracker.serving());
        let half_open = connections.admit().unwrap();
        let busy = connections.admit().unwrap();
        let _request = busy.tracker.serving();
        assert_eq!(connections.len(), 3);

        let newcomer = connections.admit().unwrap();
        assert_eq!(connections.len(), 3);
        assert!(
            !lock(&connections.open).contains_key(&half_open.id),
            "the half-open connection made room"
        );
        let first_request = newcomer.tracker.serving();
        let second = connections.admit().unwrap();
        assert!(
            !lock(&connections.open).contains_key(&served.id),
            "then the idle keep-alive one"
        );
        // Once every open connection is serving, nothing can make room.
        let second_request = second.tracker.serving();
        assert!(connections.admit().is_none());
        drop((first_request, second_request));
        assert!(connections.admit().is_some());
    }

    #[test]
    fn a_client_that_shuts_its_side_is_seen_gone_even_behind_unread_bytes() {
        use std::io::Write;
        use std::net::{Shutdown, TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.write_all(b"a request").unwrap();
        assert!(!peer_closed(&server), "the client is still there");
        client.shutdown(Shutdown::Write).unwrap();
        // Wait for the FIN to arrive, however long that takes.
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&server),
            nix::poll::PollFlags::from_bits_retain(libc::POLLRDHUP),
        )];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE).unwrap();
        assert!(peer_closed(&server), "the request bytes are still unread");
    }

    #[test]
    fn deadlines_follow_the_phase() {
        let timeouts = Timeouts {
            handshake: Duration::from_secs(1),
            read: Duration::from_secs(20),
            idle: Duration::from_secs(900),
        };
        let tracker = Arc::new(Tracker::new());
        let fresh = tracker.deadline(&timeouts).unwrap();
        assert!(fresh <= Instant::now() + timeouts.read);
        let request = tracker.serving();
        assert!(tracker.deadline(&timeouts).is_none());
        drop(request);
        let idle = tracker.deadline(&timeouts).unwrap();
        assert!(idle > Instant::now() + timeouts.read);
        tracker.bytes_arrived();
        assert!(tracker.deadline(&timeouts).unwrap() <= Instant::now() + timeouts.read);
    }
}
