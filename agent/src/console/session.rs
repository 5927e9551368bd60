//! The console endpoint `GET /ticket/<ticket>` on vireod's HTTPS listener: a WebSocket upgrade
//! unlocked by a one-time ticket, then an RFB 3.8 session (security None: the ticket was the
//! authentication) that shows the VM's framebuffer and types key presses on its serial console.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::framebuffer::{FramebufferView, OpenFramebufferError};
use super::keyboard::SerialKeyboard;
use super::rfb::{self, ClientMessage, PixelFormat, Rect};
use super::screen::Screen;
use super::tickets::Redeemed;
use super::websocket::{self, Event, WebSocket, WebSocketError};
use crate::host::Host;
use crate::http_files::plain;
use crate::locks::lock;
use crate::vm::{control, Power, Vm};

/// How often a pending incremental update request looks for changed pixels.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a client may take over the RFB handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long typing on the serial console may take.
const SERIAL_INPUT_TIMEOUT: Duration = Duration::from_secs(15);
/// The WebSocket subprotocol noVNC and VMware's WebMKS clients offer for binary RFB.
const BINARY_PROTOCOL: &str = "binary";
/// The privilege a console needs.
const CONSOLE_INTERACT: &str = "VirtualMachine.Interact.ConsoleInteract";

/// `GET /ticket/<ticket>`: 101 and an RFB session, or 400 (not a WebSocket handshake),
/// 403 (unknown, used or expired ticket, or its holder's session ended or lost
/// ConsoleInteract on the VM since it was issued), 409 (the VM is not running).
pub async fn endpoint(host: Arc<Host>, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
    let accept = match websocket::check_handshake(request.headers()) {
        Ok(accept) => accept,
        Err(error) => return plain(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let ticket = request.uri().path().trim_start_matches("/ticket/");
    let redeemed = match host.console_tickets.redeem(ticket) {
        Ok(redeemed) => redeemed,
        Err(error) => return plain(StatusCode::FORBIDDEN, error.to_string()),
    };
    if let Err(why) = still_allowed(&host, &redeemed) {
        return plain(StatusCode::FORBIDDEN, why);
    }
    let Some(vm) = host.vms.get(&redeemed.vm) else {
        return plain(StatusCode::NOT_FOUND, "the virtual machine is gone");
    };
    let opened = tokio::task::spawn_blocking(move || LiveScreen::open(vm)).await;
    let live = match opened {
        Ok(Ok(live)) => live,
        Ok(Err(why)) => return plain(StatusCode::CONFLICT, why.to_string()),
        Err(error) => return plain(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    };
    let binary_offered = request
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == BINARY_PROTOCOL);
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded), live).await,
            Err(error) => tracing::debug!(%error, "console upgrade failed"),
        }
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "Upgrade")
        .header(SEC_WEBSOCKET_ACCEPT, accept);
    if binary_offered {
        response = response.header(SEC_WEBSOCKET_PROTOCOL, BINARY_PROTOCOL);
    }
    response
        .body(Full::new(Bytes::new()))
        .expect("valid response parts")
}

/// A ticket is only as good as its holder at the time it is used: their session still open
/// and VirtualMachine.Interact.ConsoleInteract still theirs on the VM.
fn still_allowed(host: &Host, redeemed: &Redeemed) -> Result<(), &'static str> {
    let holder = &redeemed.holder;
    let open = host
        .sessions
        .get(&holder.session)
        .is_some_and(|session| session.user == holder.user);
    if !open {
        return Err("the session that acquired the ticket has ended");
    }
    let inv = host.inventory();
    let allowed = host.authz().holds_on(
        host.schema,
        &inv,
        &holder.user,
        CONSOLE_INTERACT,
        &redeemed.vm,
    );
    if !allowed {
        return Err("the ticket's user no longer holds VirtualMachine.Interact.ConsoleInteract");
    }
    Ok(())
}

/// Why a console cannot be opened or kept open.
#[derive(Debug, thiserror::Error)]
enum ScreenGone {
    /// The VM is not (or no longer) powered on.
    #[error("the virtual machine is not powered on")]
    NotRunning,
    /// The framebuffer could not be mapped.
    #[error(transparent)]
    Framebuffer(#[from] OpenFramebufferError),
    /// A restarted VMM came back with another screen size.
    #[error("the screen size changed")]
    Resized,
}

/// The running VMM's framebuffer and what this client has seen of it.
struct LiveScreen {
    vm: Arc<Vm>,
    /// The VM's name when the console opened (the RFB desktop name).
    name: String,
    /// The VMM run whose framebuffer is mapped (`VmState::generation`).
    generation: u64,
    view: FramebufferView,
    screen: Screen,
}

impl LiveScreen {
    fn open(vm: Arc<Vm>) -> Result<LiveScreen, ScreenGone> {
        let generation = running_generation(&vm)?;
        let name = vm.state().spec.name.clone();
        let view = FramebufferView::open(&vm)?;
        let geometry = view.geometry();
        let screen = Screen::new(geometry.width as usize, geometry.height as usize);
        Ok(LiveScreen {
            vm,
            name,
            generation,
            view,
            screen,
        })
    }

    /// Follows the VM across a VMM restart (reset, revert): maps the new framebuffer.
    fn follow_vmm(&mut self) -> Result<(), ScreenGone> {
        let generation = running_generation(&self.vm)?;
        if generation == self.generation {
            return Ok(());
        }
        let view = FramebufferView::open(&self.vm)?;
        let (old, new) = (self.view.geometry(), view.geometry());
        if (old.width, old.height) != (new.width, new.height) {
            return Err(ScreenGone::Resized);
        }
        self.view = view;
        self.generation = generation;
        Ok(())
    }

    fn update(
        &mut self,
        area: Rect,
        incremental: bool,
        format: PixelFormat,
    ) -> Result<Option<Vec<u8>>, ScreenGone> {
        self.follow_vmm()?;
        Ok(self.screen.update(&self.view, area, incremental, format))
    }
}

fn running_generation(vm: &Vm) -> Result<u64, ScreenGone> {
    let state = vm.state();
    match state.power {
        Power::On if state.process.is_some() => Ok(state.generation),
        _ => Err(ScreenGone::NotRunning),
    }
}

/// Why an RFB session ended early.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// The WebSocket layer failed or was misused (it already sent its close frame).
    #[error(transparent)]
    WebSocket(#[from] WebSocketError),
    /// Writing to the client failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// An unreadable RFB message.
    #[error(transparent)]
    Message(#[from] rfb::ClientMessageError),
    /// Not an RFB 3.x client.
    #[error(transparent)]
    Version(#[from] rfb::BadVersion),
    /// The handshake stalled.
    #[error("the client did not finish the RFB handshake in time")]
    HandshakeTimeout,
    /// The client wants a security type we do not offer.
    #[error("the client chose security type {0}; only None (1) is offered")]
    Security(u8),
    /// The client asked for a pixel format we cannot produce.
    #[error("pixel format {0:?} is not supported (true colour, 8/16/32 bits only)")]
    PixelFormat(rfb::PixelFormat),
    /// The VM stopped or its framebuffer went away.
    #[error("{0}")]
    Screen(#[from] ScreenGone),
    /// A blocking worker panicked.
    #[error("the console worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

impl SessionError {
    /// The WebSocket close code that reports this error (protocol errors already sent one).
    fn close_code(&self) -> Option<u16> {
        match self {
            SessionError::WebSocket(_) | SessionError::Io(_) => None,
            SessionError::Screen(ScreenGone::NotRunning) => Some(1000),
            SessionError::Screen(_) | SessionError::Worker(_) => Some(1011),
            _ => Some(1002),
        }
    }
}

/// Serves RFB on an upgraded connection until either side ends it.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, live: LiveScreen) {
    let vm_id = live.vm.id;
    let geometry = live.view.geometry();
    let mut session = RfbSession {
        ws: WebSocket::new(stream),
        inbound: Vec::new(),
        server_init: rfb::server_init(geometry.width as u16, geometry.height as u16, &live.name),
        control_socket: live.vm.run_dir.join("control.sock"),
        format: PixelFormat::XRGB8888,
        keyboard: SerialKeyboard::default(),
        live: Arc::new(Mutex::new(live)),
    };
    tracing::info!(vm = vm_id, "console client connected");
    let result = session.run().await;
    if let Err(error) = &result {
        if let Some(code) = error.close_code() {
            let _ = session.ws.close(code, &error.to_string()).await;
        }
    }
    tracing::info!(vm = vm_id, outcome = ?result.err().map(|e| e.to_string()), "console client gone");
}

/// One client's RFB session. The async side never locks `live` (an update may wait on the VM's
/// state while a VMM restarts); it is only touched on blocking threads.
struct RfbSession<S> {
    ws: WebSocket<S>,
    /// RFB bytes received and not yet parsed.
    inbound: Vec<u8>,
    /// The ServerInit message.
    server_init: Vec<u8>,
    /// The VMM's control socket (for typing).
    control_socket: PathBuf,
    /// The client's pixel format.
    format: PixelFormat,
    keyboard: SerialKeyboard,
    live: Arc<Mutex<LiveScreen>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RfbSession<S> {
    async fn run(&mut self) -> Result<(), SessionError> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake()).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Ok(()),
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(SessionError::HandshakeTimeout),
        }
        let mut pending: Option<Rect> = None;
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while let Some(event) = self.ws.next_event().await? {
                match event {
                    Event::Data(bytes) => self.inbound.extend_from_slice(&bytes),
                    Event::Closed => return Ok(()),
                }
            }
            let mut typed = Vec::new();
            while let Some((message, used)) = rfb::parse_client_message(&self.inbound)? {
                self.inbound.drain(..used);
                match message {
                    ClientMessage::SetPixelFormat(format) if format.is_supported() => {
                        self.format = format;
                    }
                    ClientMessage::SetPixelFormat(format) => {
                        return Err(SessionError::PixelFormat(format))
                    }
                    ClientMessage::FramebufferUpdateRequest {
                        incremental: false,
                        area,
                    } => {
                        pending = None;
                        self.send_update(area, false).await?;
                    }
                    ClientMessage::FramebufferUpdateRequest {
                        incremental: true,
                        area,
                    } => pending = Some(area),
                    ClientMessage::KeyEvent { down, keysym } => {
                        typed.extend(self.keyboard.key(down, keysym));
                    }
                    // Raw needs no negotiation; there is no pointer device or clipboard.
                    ClientMessage::SetEncodings(_)
                    | ClientMessage::PointerEvent { .. }
                    | ClientMessage::ClientCutText(_) => {}
                }
            }
            if !typed.is_empty() {
                self.type_on_serial(typed).await;
            }
            let polled = tokio::select! {
                more = self.ws.receive() => if more? { None } else { return Ok(()) },
                _ = ticker.tick(), if pending.is_some() => pending,
            };
            if let Some(area) = polled {
                if self.send_update(area, true).await? {
                    pending = None;
                }
            }
        }
    }

    /// Version, security (None) and init messages; false if the client left meanwhile.
    async fn handshake(&mut self) -> Result<bool, SessionError> {
        self.ws.send_binary(rfb::SERVER_VERSION).await?;
        let Some(version) = self.take(12).await? else {
            return Ok(false);
        };
        let version = rfb::parse_version(&version.try_into().expect("12 bytes"))?;
        self.ws.send_binary(&rfb::security_offer(version)).await?;
        if rfb::client_chooses_security(version) {
            let Some(choice) = self.take(1).await? else {
                return Ok(false);
            };
            if choice[0] != rfb::SECURITY_NONE {
                if version == rfb::Version::V3_8 {
                    let reason = "only security type None is offered";
                    self.ws.send_binary(&rfb::security_failed(reason)).await?;
                }
                return Err(SessionError::Security(choice[0]));
            }
        }
        if let Some(ok) = rfb::security_ok(version) {
            self.ws.send_binary(&ok).await?;
        }
        // ClientInit: the shared flag does not matter, every client shares the screen.
        if self.take(1).await?.is_none() {
            return Ok(false);
        }
        self.ws.send_binary(&self.server_init).await?;
        Ok(true)
    }

    /// The next `n` RFB bytes from the client, or `None` if it left.
    async fn take(&mut self, n: usize) -> Result<Option<Vec<u8>>, SessionError> {
        while self.inbound.len() < n {
            match self.ws.next_event().await? {
                Some(Event::Data(bytes)) => self.inbound.extend_from_slice(&bytes),
                Some(Event::Closed) => return Ok(None),
                None if !self.ws.receive().await? => return Ok(None),
                None => {}
            }
        }
        Ok(Some(self.inbound.drain(..n).collect()))
    }

    /// Sends the update for `area` if there is one; returns whether it sent one.
    async fn send_update(&mut self, area: Rect, incremental: bool) -> Result<bool, SessionError> {
        let (live, format) = (self.live.clone(), self.format);
        let update =
            tokio::task::spawn_blocking(move || lock(&live).update(area, incremental, format))
                .await??;
        match update {
            Some(bytes) => {
                self.ws.send_binary(&bytes).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Types `bytes` on the VM's serial console through its VMM.
    async fn type_on_serial(&mut self, bytes: Vec<u8>) {
        let socket = self.control_socket.clone();
        let text: String = bytes.into_iter().map(char::from).collect();
        let request = vireo_vmm_protocol::Request::SerialInput { text };
        let sent = tokio::task::spawn_blocking(move || {
            control::command(&socket, request, SERIAL_INPUT_TIMEOUT)
        })
        .await;
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "console keys not typed"),
            Err(error) => tracing::warn!(%error, "console keys not typed"),
        }
    }
}
