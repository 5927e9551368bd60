//! Batched port and MMIO access. Ring 3 cannot execute port I/O, and each trap to ring 0
//! costs ~80 µs, so operations are queued here and ring 0 runs the whole queue in one trap.
//! Reads flush the queue (in order) and return their result.

use crate::arch;

/// Operations ring 0 knows (the order of `io_table` in services.s).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum IoKind {
    Out8 = 1,
    Out16,
    Out32,
    In8,
    In16,
    In32,
    MmioWrite8,
    MmioWrite16,
    MmioWrite32,
    MmioWrite64,
    MmioRead8,
    MmioRead16,
    MmioRead32,
    MmioRead64,
    Outs8,
    Drain8,
}

const _: () = assert!(IoKind::Drain8 as u32 + 1 == arch::abi::IO_KIND_COUNT);

/// One queued operation, as ring 0 reads it (layout shared with services.s).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct IoOp {
    kind: u8,
    reserved: u8,
    /// Drain8: the status port polled before each data read.
    status_port: u16,
    /// Drain8: the status bits that mean "data ready".
    ready_mask: u32,
    /// Port number or MMIO address.
    addr: u64,
    /// Value written or read; Outs8/Drain8: buffer address.
    value: u64,
    /// Outs8/Drain8: byte count (Drain8: capacity in, bytes read out).
    len: u64,
}

const _: () = assert!(core::mem::size_of::<IoOp>() == 32);

/// Access width of a register.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Width {
    /// 8 bits.
    Byte,
    /// 16 bits.
    Word,
    /// 32 bits.
    Dword,
    /// 64 bits (MMIO only).
    Qword,
}

const MAX_OPS: usize = 64;
const TEXT_CAPACITY: usize = 4096;

/// The queue of pending operations, plus the bytes of queued string output.
pub struct Io {
    ops: [IoOp; MAX_OPS],
    queued: usize,
    text: [u8; TEXT_CAPACITY],
    text_len: usize,
}

impl Io {
    /// An empty queue.
    pub const fn new() -> Self {
        const EMPTY: IoOp = IoOp {
            kind: 0,
            reserved: 0,
            status_port: 0,
            ready_mask: 0,
            addr: 0,
            value: 0,
            len: 0,
        };
        Io {
            ops: [EMPTY; MAX_OPS],
            queued: 0,
            text: [0; TEXT_CAPACITY],
            text_len: 0,
        }
    }

    /// Queues a port write.
    pub fn out(&mut self, port: u16, width: Width, value: u32) {
        let kind = match width {
            Width::Byte => IoKind::Out8,
            Width::Word => IoKind::Out16,
            Width::Dword | Width::Qword => IoKind::Out32,
        };
        self.push(kind, u64::from(port), u64::from(value));
    }

    /// Reads a port (flushes the queue first).
    pub fn input(&mut self, port: u16, width: Width) -> u32 {
        let kind = match width {
            Width::Byte => IoKind::In8,
            Width::Word => IoKind::In16,
            Width::Dword | Width::Qword => IoKind::In32,
        };
        self.push_and_run(kind, u64::from(port)) as u32
    }

    /// Queues an MMIO write.
    pub fn mmio_write(&mut self, addr: u64, width: Width, value: u64) {
        let kind = match width {
            Width::Byte => IoKind::MmioWrite8,
            Width::Word => IoKind::MmioWrite16,
            Width::Dword => IoKind::MmioWrite32,
            Width::Qword => IoKind::MmioWrite64,
        };
        self.push(kind, addr, value);
    }

    /// Reads an MMIO register (flushes the queue first).
    pub fn mmio_read(&mut self, addr: u64, width: Width) -> u64 {
        let kind = match width {
            Width::Byte => IoKind::MmioRead8,
            Width::Word => IoKind::MmioRead16,
            Width::Dword => IoKind::MmioRead32,
            Width::Qword => IoKind::MmioRead64,
        };
        self.push_and_run(kind, addr)
    }

    /// Queues `bytes` for output to `port` (one `rep outsb`, merged with adjacent text).
    pub fn write_bytes(&mut self, port: u16, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.text_len == TEXT_CAPACITY || self.queued == MAX_OPS {
                self.flush();
            }
            let take = bytes.len().min(TEXT_CAPACITY - self.text_len);
            let start = self.text_len;
            self.text[start..start + take].copy_from_slice(&bytes[..take]);
            self.text_len += take;
            bytes = &bytes[take..];
            if let Some(last) = self.last_text_op(port, start) {
                last.len += take as u64;
            } else {
                // Outs8 ops hold an offset into `text` until `flush` turns it into an address.
                self.push(IoKind::Outs8, u64::from(port), start as u64);
                self.ops[self.queued - 1].len = take as u64;
            }
        }
    }

    /// Reads bytes from `data_port` while `status_port & ready_mask` says one is ready, up to
    /// `buf.len()` (flushes the queue first). Returns how many were read.
    pub fn drain(
        &mut self,
        data_port: u16,
        status_port: u16,
        ready_mask: u8,
        buf: &mut [u8],
    ) -> usize {
        self.flush();
        self.ops[0] = IoOp {
            kind: IoKind::Drain8 as u8,
            reserved: 0,
            status_port,
            ready_mask: u32::from(ready_mask),
            addr: u64::from(data_port),
            value: buf.as_mut_ptr() as u64,
            len: buf.len() as u64,
        };
        arch::io_batch(&mut self.ops[..1]);
        (self.ops[0].len as usize).min(buf.len())
    }

    /// Runs every queued operation in one trap to ring 0.
    pub fn flush(&mut self) {
        if self.queued == 0 {
            return;
        }
        let text_base = self.text.as_ptr() as u64;
        for op in &mut self.ops[..self.queued] {
            if op.kind == IoKind::Outs8 as u8 {
                op.value += text_base;
            }
        }
        arch::io_batch(&mut self.ops[..self.queued]);
        self.queued = 0;
        self.text_len = 0;
    }

    fn push(&mut self, kind: IoKind, addr: u64, value: u64) {
        if self.queued == MAX_OPS {
            self.flush();
        }
        self.ops[self.queued] = IoOp {
            kind: kind as u8,
            reserved: 0,
            status_port: 0,
            ready_mask: 0,
            addr,
            value,
            len: 0,
        };
        self.queued += 1;
    }

    fn push_and_run(&mut self, kind: IoKind, addr: u64) -> u64 {
        self.push(kind, addr, 0);
        let index = self.queued - 1;
        self.flush();
        self.ops[index].value
    }

    /// The last queued op if it is text output to `port` ending right at `text_end`.
    fn last_text_op(&mut self, port: u16, text_end: usize) -> Option<&mut IoOp> {
        let last = self.ops[..self.queued].last_mut()?;
        let mergeable = last.kind == IoKind::Outs8 as u8
            && last.addr == u64::from(port)
            && last.value + last.len == text_end as u64;
        mergeable.then_some(last)
    }
}
