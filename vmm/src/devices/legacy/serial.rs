//! COM1: a 16550-style UART (vm-superio) whose output goes to the console sinks (terminal
//! and/or log file) and whose input comes from the host side (stdin or a test).

use std::io::{self, Write};
use std::sync::Arc;

use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::Serial;

use crate::devices::bus::BusDevice;
use crate::devices::irq::{InterruptLine, SerialTrigger};

/// First port of COM1.
pub const COM1_PORT: u16 = 0x3f8;
/// Number of COM1 ports.
pub const COM1_PORT_COUNT: u16 = 8;
/// ISA IRQ (and GSI) of COM1.
pub const COM1_IRQ: u32 = 4;

/// Where the guest's console output goes: any number of sinks, each flushed per write.
pub struct ConsoleSinks(pub Vec<Box<dyn Write + Send>>);

impl Write for ConsoleSinks {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for sink in &mut self.0 {
            // A console sink that goes away (closed pipe) must not stop the guest.
            let _ = sink.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        for sink in &mut self.0 {
            let _ = sink.flush();
        }
        Ok(())
    }
}

/// Saved UART registers and receive FIFO.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialPortState {
    /// DLL, DLM, IER, IIR, LCR, LSR, MCR, MSR, SCR.
    pub registers: [u8; 9],
    /// Bytes received and not yet read by the guest.
    pub in_buffer: Vec<u8>,
}

/// COM1 as a port I/O device.
pub struct SerialPort {
    uart: Serial<SerialTrigger, NoEvents, ConsoleSinks>,
}

impl SerialPort {
    /// A UART raising `irq` and writing to `sinks`.
    pub fn new(irq: Arc<dyn InterruptLine>, sinks: ConsoleSinks) -> Self {
        SerialPort {
            uart: Serial::new(SerialTrigger(irq), sinks),
        }
    }

    /// The UART's state.
    pub fn state(&self) -> SerialPortState {
        let s = self.uart.state();
        SerialPortState {
            registers: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            in_buffer: s.in_buffer,
        }
    }

    /// A UART restored to `state`, raising `irq` and writing to `sinks`; a receive buffer
    /// longer than the FIFO is refused.
    pub fn from_state(
        irq: Arc<dyn InterruptLine>,
        sinks: ConsoleSinks,
        state: &SerialPortState,
    ) -> Option<Self> {
        let [dll, dlm, ier, iir, lcr, lsr, mcr, msr, scr] = state.registers;
        let saved = SerialState {
            baud_divisor_low: dll,
            baud_divisor_high: dlm,
            interrupt_enable: ier,
            interrupt_identification: iir,
            line_control: lcr,
            line_status: lsr,
            modem_control: mcr,
            modem_status: msr,
            scratch: scr,
            in_buffer: state.in_buffer.clone(),
        };
        let uart = Serial::from_state(&saved, SerialTrigger(irq), NoEvents, sinks).ok()?;
        Some(SerialPort { uart })
    }

    /// Queues host input for the guest; returns how many bytes fit in the receive FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl BusDevice for SerialPort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Every UART register is one byte wide: longer accesses are string I/O.
        for byte in data {
            *byte = self.uart.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for byte in data {
            // Output errors are the sink's problem, not the guest's.
            let _ = self.uart.write(offset as u8, *byte);
        }
        let _ = self.uart.writer_mut().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::irq::testing::RecordingLine;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn string_output_reaches_every_sink_and_input_interrupts() {
        let (a, b) = (SharedBuffer::default(), SharedBuffer::default());
        let line = Arc::new(RecordingLine::default());
        let mut port = SerialPort::new(
            line.clone(),
            ConsoleSinks(vec![Box::new(a.clone()), Box::new(b.clone())]),
        );
        port.write(0, b"hello\n");
        assert_eq!(&*a.0.lock().unwrap(), b"hello\n");
        assert_eq!(&*b.0.lock().unwrap(), b"hello\n");
        port.write(1, &[0x01]); // IER: received-data interrupt
        assert_eq!(port.enqueue_input(b"ok"), 2);
        assert!(
            !line.0.lock().unwrap().is_empty(),
            "input raised the interrupt"
        );
        let mut rx = [0u8; 2];
        port.read(0, &mut rx);
        assert_eq!(&rx, b"ok");
    }
}
