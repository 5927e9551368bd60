//! The console on COM1 (an 8250 at 0x3f8, ISA IRQ 4): line output through the I/O queue (and
//! mirrored on the framebuffer screen), and interrupt-driven input (IER.RDA; the caller sleeps
//! on the COM1 vector, never polls).

use core::fmt;

use crate::io::{Io, Width};
use crate::screen;

const COM1: u16 = 0x3f8;
const RBR_THR: u16 = COM1;
const IER: u16 = COM1 + 1;
const FCR: u16 = COM1 + 2;
const LCR: u16 = COM1 + 3;
const MCR: u16 = COM1 + 4;
const LSR: u16 = COM1 + 5;
const LSR_DATA_READY: u8 = 1;

/// The ISA IRQ of COM1.
pub const COM1_ISA_IRQ: u8 = 4;

/// Queues the UART set-up: 8N1, FIFO on (trigger at 1 byte), OUT2, receive interrupt on.
pub fn init(io: &mut Io) {
    io.out(LCR, Width::Byte, 0x03);
    io.out(FCR, Width::Byte, 0x07);
    io.out(MCR, Width::Byte, 0x0b);
    io.out(IER, Width::Byte, 0x01);
}

/// A `fmt::Write` that queues text for COM1.
pub struct ConsoleWriter<'a>(&'a mut Io);

impl fmt::Write for ConsoleWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(self.0, s.as_bytes());
        Ok(())
    }
}

/// A writer for console output (queued: `Io::flush` sends it).
pub fn out(io: &mut Io) -> ConsoleWriter<'_> {
    ConsoleWriter(io)
}

/// Prints one line (`args` and a newline).
pub fn line(io: &mut Io, args: fmt::Arguments) {
    use fmt::Write as _;
    let _ = writeln!(out(io), "{args}");
}

/// Queues raw bytes (typed-character echo, erase sequences).
pub fn write_bytes(io: &mut Io, bytes: &[u8]) {
    io.write_bytes(COM1, bytes);
    screen::write(bytes);
}

/// Reads whatever input the UART holds (flushes queued output first). Returns the count.
pub fn read_available(io: &mut Io, buf: &mut [u8]) -> usize {
    io.drain(RBR_THR, LSR, LSR_DATA_READY, buf)
}

/// Prints `vireo-test-guest: <message>` as one console line.
#[macro_export]
macro_rules! say {
    ($io:expr, $($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::console::out($io), "vireo-test-guest: {}", format_args!($($arg)*));
    }};
}
