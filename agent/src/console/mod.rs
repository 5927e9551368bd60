//! The VM console: AcquireTicket/AcquireMksTicket hand out one-time tickets ([`tickets`]) that
//! unlock `wss://<host>:<port>/ticket/<ticket>` ([`session`]), an RFB server over WebSocket that
//! shows the VM's framebuffer, mapped straight from the VMM's shared file ([`framebuffer`]), and
//! types key presses on the guest's serial console ([`keyboard`]). See docs/console.md.

pub mod framebuffer;
pub mod keyboard;
pub mod rfb;
pub mod screen;
pub mod session;
pub mod tickets;
pub mod websocket;
