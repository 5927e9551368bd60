//! The 8254 programmable interval timer at ports 0x40–0x43, and port B (0x61), whose low bits
//! gate its channel 2 and whose bit 5 reads that channel's output.
//!
//! It lives in the VMM rather than in KVM: removing KVM's in-kernel PIT from a VM waits for
//! SRCU grace periods, which made every VM's exit 15 ms slower (docs/kvm-pvm.md). A channel
//! keeps the instant its count was loaded and computes its count and output from the time
//! since, on the 1.193182 MHz input clock. Rising edges of channel 0's output raise IRQ 0 from
//! a thread of their own ([`Ticker`]), started when the guest first programs channel 0.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::devices::bus::{lock, BusDevice};
use crate::devices::irq::InterruptLine;

/// The first port: counters 0–2, then the mode/command register.
pub const PIT_PORT: u16 = 0x40;
/// Ports the timer claims from [`PIT_PORT`].
pub const PIT_PORT_COUNT: u16 = 4;
/// Port B of the PC's system control logic (channel 2's gate and speaker, its output).
pub const PORT_B: u16 = 0x61;
/// The ISA IRQ (and GSI) of channel 0's output.
pub const PIT_IRQ: u32 = 0;

/// The input clock.
const INPUT_HZ: u128 = 1_193_182;
/// The shortest time between two IRQ 0s: a guest that programs a faster rate gets coalesced
/// interrupts at this rate rather than a host thread that spins.
const MIN_IRQ_INTERVAL: Duration = Duration::from_micros(100);
/// Port B bit 4 (DRAM refresh) toggles at this period; old delay loops poll it.
const REFRESH_TOGGLE: Duration = Duration::from_nanos(15_085);
const COMMAND_OFFSET: u64 = 3;
const PORT_B_GATE2: u8 = 0x01;
const PORT_B_WRITABLE: u8 = 0x0f;
const PORT_B_REFRESH: u8 = 0x10;
const PORT_B_OUT2: u8 = 0x20;

fn ticks(elapsed: Duration) -> u64 {
    (elapsed.as_nanos() * INPUT_HZ / 1_000_000_000) as u64
}

/// The time `ticks` input clocks take, rounded up.
fn duration(ticks: u64) -> Duration {
    let nanos = (u128::from(ticks) * 1_000_000_000).div_ceil(INPUT_HZ);
    Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
}

fn from_bcd(value: u16) -> u64 {
    (0..4).rev().fold(0, |acc, digit| {
        acc * 10 + u64::from((value >> (digit * 4)) & 0xf).min(9)
    })
}

fn to_bcd(value: u64) -> u16 {
    (0..4).rev().fold(0, |acc, digit| {
        (acc << 4) | (value / 10u64.pow(digit) % 10) as u16
    })
}

/// Where a channel's count is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counting {
    /// No count since the control word, or (modes 1 and 5) no gate trigger yet.
    Waiting,
    /// Counting since this instant.
    Since(Instant),
    /// Held by a low gate after this many input clocks.
    Held(u64),
}

/// Saved state of one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    /// Counting mode, 0..=5.
    pub mode: u8,
    /// How the count is accessed: 1 low byte, 2 high byte, 3 low then high byte.
    pub access: u8,
    /// Counts in BCD.
    pub bcd: bool,
    /// The count last loaded (0 stands for the largest).
    pub reload: u16,
    /// Input clocks counted since the count was loaded or the gate triggered; `None` while the
    /// channel waits for a count or a trigger.
    pub counted: Option<u64>,
    /// Counting is held by a low gate.
    pub held: bool,
    /// The gate input.
    pub gate: bool,
    /// A latched count, not yet read out.
    pub latched_count: Option<u16>,
    /// A latched status byte, not yet read.
    pub latched_status: Option<u8>,
    /// The next read returns the high byte (access 3).
    pub read_high: bool,
    /// The low byte of a count whose high byte is still to come (access 3).
    pub low_written: Option<u8>,
    /// The status byte's "null count": a control word was written and no count since.
    pub null_count: bool,
}

/// Saved state of the timer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitState {
    /// Channels 0, 1 and 2.
    pub channels: [ChannelState; 3],
    /// Port B's writable bits (channel 2's gate, speaker data, parity checks).
    pub port_b: u8,
}

/// A saved state that cannot be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("PIT channel {channel}: mode {mode} or access {access} out of range")]
pub struct PitStateError {
    /// The channel.
    pub channel: usize,
    /// Its mode.
    pub mode: u8,
    /// Its access.
    pub access: u8,
}

#[derive(Clone, Copy, Debug)]
struct Channel {
    mode: u8,
    access: u8,
    bcd: bool,
    reload: u16,
    counting: Counting,
    gate: bool,
    latched_count: Option<u16>,
    latched_status: Option<u8>,
    read_high: bool,
    low_written: Option<u8>,
    null_count: bool,
}

impl Channel {
    /// A channel as firmware leaves it: mode 0 (output low), waiting for a count.
    fn new(gate: bool) -> Self {
        Channel {
            mode: 0,
            access: 3,
            bcd: false,
            reload: 0,
            counting: Counting::Waiting,
            gate,
            latched_count: None,
            latched_status: None,
            read_high: false,
            low_written: None,
            null_count: true,
        }
    }

    /// Input clocks in one count cycle.
    fn period(&self) -> u64 {
        let period = match (self.reload, self.bcd) {
            (0, true) => 10_000,
            (0, false) => 0x1_0000,
            (reload, true) => from_bcd(reload),
            (reload, false) => u64::from(reload),
        };
        // A count of 1 is illegal in modes 2 and 3; the chip needs two clocks per cycle there.
        period.max(if matches!(self.mode, 2 | 3) { 2 } else { 1 })
    }

    fn elapsed(&self, now: Instant) -> Option<u64> {
        match self.counting {
            Counting::Waiting => None,
            Counting::Since(start) => Some(ticks(now.saturating_duration_since(start))),
            Counting::Held(counted) => Some(counted),
        }
    }

    /// The counting element's value as the guest reads it.
    fn count(&self, now: Instant) -> u16 {
        let period = self.period();
        let Some(elapsed) = self.elapsed(now) else {
            return self.reload;
        };
        let wrap = if self.bcd { 10_000 } else { 0x1_0000 };
        let value = match self.mode {
            2 => period - elapsed % period,
            3 => {
                // Counts down by two, once for the high half and once for the low half.
                let phase = elapsed % period;
                let first_half = period.div_ceil(2);
                let into_half = phase.checked_sub(first_half).unwrap_or(phase);
                period.saturating_sub(2 * into_half) & !1
            }
            _ => (period % wrap + wrap - elapsed % wrap) % wrap,
        };
        if self.bcd {
            to_bcd(value % 10_000)
        } else {
            value as u16
        }
    }

    /// The OUT pin.
    fn out(&self, now: Instant) -> bool {
        if !self.gate && matches!(self.mode, 2 | 3) {
            return true;
        }
        let period = self.period();
        match (self.mode, self.elapsed(now)) {
            (0, None) => false,
            (_, None) => true,
            (0 | 1, Some(elapsed)) => elapsed >= period,
            (2, Some(elapsed)) => elapsed % period != period - 1,
            (3, Some(elapsed)) => elapsed % period < period.div_ceil(2),
            (_, Some(elapsed)) => elapsed != period,
        }
    }

    fn status(&self, now: Instant) -> u8 {
        (u8::from(self.out(now)) << 7)
            | (u8::from(self.null_count) << 6)
            | (self.access << 4)
            | (self.mode << 1)
            | u8::from(self.bcd)
    }

    fn set_control(&mut self, control: u8) {
        *self = Channel {
            mode: match (control >> 1) & 7 {
                mode @ 0..=5 => mode,
                // Modes 6 and 7 are modes 2 and 3 with a don't-care bit.
                mode => mode - 4,
            },
            access: (control >> 4) & 3,
            bcd: control & 1 != 0,
            ..Channel::new(self.gate)
        };
    }

    fn latch_count(&mut self, now: Instant) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.count(now));
        }
    }

    fn load(&mut self, reload: u16, now: Instant) {
        self.reload = reload;
        self.null_count = false;
        self.counting = match self.mode {
            1 | 5 => Counting::Waiting,
            _ if !self.gate => Counting::Held(0),
            _ => Counting::Since(now),
        };
    }

    fn write(&mut self, value: u8, now: Instant) {
        match self.access {
            1 => self.load(u16::from(value), now),
            2 => self.load(u16::from(value) << 8, now),
            _ => match self.low_written.take() {
                Some(low) => self.load(u16::from(low) | (u16::from(value) << 8), now),
                None => {
                    self.low_written = Some(value);
                    if self.mode == 0 {
                        // Mode 0 stops counting when the first byte of a new count arrives.
                        self.counting = Counting::Waiting;
                    }
                }
            },
        }
    }

    fn read(&mut self, now: Instant) -> u8 {
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        let value = self.latched_count.unwrap_or_else(|| self.count(now));
        let [low, high] = value.to_le_bytes();
        let (byte, done) = match self.access {
            1 => (low, true),
            2 => (high, true),
            _ => {
                self.read_high = !self.read_high;
                if self.read_high {
                    (low, false)
                } else {
                    (high, true)
                }
            }
        };
        if done {
            self.latched_count = None;
        }
        byte
    }

    fn set_gate(&mut self, high: bool, now: Instant) {
        if high == self.gate {
            return;
        }
        self.gate = high;
        let loaded = !self.null_count;
        self.counting = match (self.mode, high, self.counting) {
            // A rising gate (re)starts modes 1, 2, 3 and 5 from the count.
            (1 | 2 | 3 | 5, true, _) if loaded => Counting::Since(now),
            // Modes 0 and 4 go on from where the low gate held them.
            (0 | 4, true, Counting::Held(counted)) => {
                Counting::Since(now.checked_sub(duration(counted)).unwrap_or(now))
            }
            (0 | 2 | 3 | 4, false, Counting::Since(_)) => {
                Counting::Held(self.elapsed(now).unwrap_or(0))
            }
            (_, _, counting) => counting,
        };
    }

    /// When channel 0's output next rises, and the period after that, counted from `now`.
    fn irq_schedule(&self, now: Instant) -> Option<(Instant, Option<Duration>)> {
        let Counting::Since(start) = self.counting else {
            return None;
        };
        let period = self.period();
        let elapsed = ticks(now.saturating_duration_since(start));
        match self.mode {
            // Modes 0 and 4 raise it once: at the terminal count, one clock after it.
            0 | 4 => {
                let edge = period + u64::from(self.mode == 4);
                (elapsed < edge).then(|| (start + duration(edge), None))
            }
            2 | 3 => {
                let next = (elapsed / period + 1) * period;
                let every = duration(period).max(MIN_IRQ_INTERVAL);
                Some((start + duration(next), Some(every)))
            }
            _ => None,
        }
    }

    fn state(&self, now: Instant) -> ChannelState {
        ChannelState {
            mode: self.mode,
            access: self.access,
            bcd: self.bcd,
            reload: self.reload,
            counted: self.elapsed(now),
            held: matches!(self.counting, Counting::Held(_)),
            gate: self.gate,
            latched_count: self.latched_count,
            latched_status: self.latched_status,
            read_high: self.read_high,
            low_written: self.low_written,
            null_count: self.null_count,
        }
    }

    fn from_state(index: usize, state: &ChannelState, now: Instant) -> Result<Self, PitStateError> {
        if state.mode > 5 || !(1..=3).contains(&state.access) {
            return Err(PitStateError {
                channel: index,
                mode: state.mode,
                access: state.access,
            });
        }
        let counting = match (state.counted, state.held) {
            (None, _) => Counting::Waiting,
            (Some(counted), true) => Counting::Held(counted),
            (Some(counted), false) => {
                Counting::Since(now.checked_sub(duration(counted)).unwrap_or(now))
            }
        };
        Ok(Channel {
            mode: state.mode,
            access: state.access,
            bcd: state.bcd,
            reload: state.reload,
            counting,
            gate: state.gate || index < 2,
            latched_count: state.latched_count,
            latched_status: state.latched_status,
            read_high: state.read_high,
            low_written: state.low_written,
            null_count: state.null_count,
        })
    }
}

/// What the ticker thread waits for.
#[derive(Default)]
struct Schedule {
    /// The next rising edge of channel 0's output.
    at: Option<Instant>,
    /// The time between edges after it.
    every: Option<Duration>,
    /// The timer is gone.
    stop: bool,
}

#[derive(Default)]
struct TickerShared {
    schedule: Mutex<Schedule>,
    changed: Condvar,
}

/// Raises IRQ 0 at channel 0's rising edges, from a thread started with the first edge.
struct Ticker {
    shared: Arc<TickerShared>,
    irq: Arc<dyn InterruptLine>,
    started: bool,
}

impl Ticker {
    fn new(irq: Arc<dyn InterruptLine>) -> Self {
        Ticker {
            shared: Arc::default(),
            irq,
            started: false,
        }
    }

    fn set(&mut self, next: Option<(Instant, Option<Duration>)>) {
        let mut schedule = lock(&self.shared.schedule);
        (schedule.at, schedule.every) = match next {
            Some((at, every)) => (Some(at), every),
            None => (None, None),
        };
        drop(schedule);
        self.shared.changed.notify_all();
        if next.is_some() && !self.started {
            self.started = true;
            let (shared, irq) = (self.shared.clone(), self.irq.clone());
            let spawned = std::thread::Builder::new()
                .name("pit".into())
                .spawn(move || tick(&shared, irq.as_ref()));
            if let Err(e) = spawned {
                eprintln!("vireo-vmm: PIT interrupts disabled: {e}");
            }
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        lock(&self.shared.schedule).stop = true;
        self.shared.changed.notify_all();
    }
}

/// The ticker thread: waits for each edge and pulses `irq`; edges missed while the thread was
/// not scheduled are delivered as one.
fn tick(shared: &TickerShared, irq: &dyn InterruptLine) {
    let mut schedule = lock(&shared.schedule);
    loop {
        if schedule.stop {
            return;
        }
        let now = Instant::now();
        schedule = match schedule.at {
            None => shared
                .changed
                .wait(schedule)
                .unwrap_or_else(|p| p.into_inner()),
            Some(at) if at > now => {
                shared
                    .changed
                    .wait_timeout(schedule, at - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            Some(at) => {
                schedule.at = schedule
                    .every
                    .map(|every| (at + every).max(now + MIN_IRQ_INTERVAL));
                drop(schedule);
                irq.pulse();
                lock(&shared.schedule)
            }
        };
    }
}

/// The timer.
pub struct Pit {
    channels: [Channel; 3],
    port_b: u8,
    ticker: Ticker,
    clock: fn() -> Instant,
    created: Instant,
}

impl Pit {
    /// A timer raising `irq` for channel 0, reading time from `clock`.
    pub fn new(irq: Arc<dyn InterruptLine>, clock: fn() -> Instant) -> Self {
        Pit {
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            port_b: 0,
            ticker: Ticker::new(irq),
            created: clock(),
            clock,
        }
    }

    /// The timer's state.
    pub fn state(&self) -> PitState {
        let now = (self.clock)();
        PitState {
            channels: self.channels.map(|channel| channel.state(now)),
            port_b: self.port_b,
        }
    }

    /// Loads a saved state; channel 0 goes on raising IRQ 0 where it left off.
    pub fn restore(&mut self, state: &PitState) -> Result<(), PitStateError> {
        let now = (self.clock)();
        for (index, saved) in state.channels.iter().enumerate() {
            self.channels[index] = Channel::from_state(index, saved, now)?;
        }
        self.port_b = state.port_b & PORT_B_WRITABLE;
        self.channels[2].gate = self.port_b & PORT_B_GATE2 != 0;
        self.reschedule(now);
        Ok(())
    }

    fn reschedule(&mut self, now: Instant) {
        let next = self.channels[0].irq_schedule(now);
        if next.is_some() || self.ticker.started {
            self.ticker.set(next);
        }
    }

    fn command(&mut self, command: u8, now: Instant) {
        let select = command >> 6;
        if select == 3 {
            // Read-back: bit 5 clear latches counts, bit 4 clear latches status, bits 1-3
            // select channels 0-2.
            for (index, channel) in self.channels.iter_mut().enumerate() {
                if command & (2 << index) == 0 {
                    continue;
                }
                if command & 0x20 == 0 {
                    channel.latch_count(now);
                }
                if command & 0x10 == 0 && channel.latched_status.is_none() {
                    channel.latched_status = Some(channel.status(now));
                }
            }
            return;
        }
        let channel = &mut self.channels[usize::from(select)];
        if command & 0x30 == 0 {
            channel.latch_count(now);
        } else {
            channel.set_control(command);
            if select == 0 {
                self.reschedule(now);
            }
        }
    }

    fn read_port_b(&self, now: Instant) -> u8 {
        let toggles =
            now.saturating_duration_since(self.created).as_nanos() / REFRESH_TOGGLE.as_nanos();
        let refresh = if toggles % 2 == 1 { PORT_B_REFRESH } else { 0 };
        let out2 = if self.channels[2].out(now) {
            PORT_B_OUT2
        } else {
            0
        };
        self.port_b | refresh | out2
    }

    fn write_port_b(&mut self, value: u8, now: Instant) {
        self.port_b = value & PORT_B_WRITABLE;
        self.channels[2].set_gate(value & PORT_B_GATE2 != 0, now);
    }
}

impl BusDevice for Pit {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let now = (self.clock)();
        for byte in data.iter_mut() {
            *byte = match self.channels.get_mut(offset as usize) {
                Some(channel) => channel.read(now),
                // The command register is write-only.
                None => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let now = (self.clock)();
        for &value in data {
            if offset == COMMAND_OFFSET {
                self.command(value, now);
            } else if let Some(channel) = self.channels.get_mut(offset as usize) {
                channel.write(value, now);
                if offset == 0 {
                    self.reschedule(now);
                }
            }
        }
    }
}

/// Port B, on the bus at [`PORT_B`]: the part of the system control port that belongs to the
/// timer.
pub struct PortB(pub Arc<Mutex<Pit>>);

impl BusDevice for PortB {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        let pit = lock(&self.0);
        let now = (pit.clock)();
        data.fill(pit.read_port_b(now));
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let mut pit = lock(&self.0);
        let now = (pit.clock)();
        if let Some(&value) = data.last() {
            pit.write_port_b(value, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::irq::testing::RecordingLine;
    use std::cell::Cell;
    use std::sync::OnceLock;

    thread_local! {
        static ADVANCED: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    }

    /// A clock each test thread moves by hand.
    fn test_clock() -> Instant {
        static BASE: OnceLock<Instant> = OnceLock::new();
        *BASE.get_or_init(Instant::now) + ADVANCED.get()
    }

    fn advance(input_clocks: u64) {
        ADVANCED.set(ADVANCED.get() + duration(input_clocks));
    }

    fn pit() -> Pit {
        Pit::new(Arc::new(RecordingLine::default()), test_clock)
    }

    fn read_word(pit: &mut Pit, channel: u64) -> u16 {
        let mut bytes = [0u8; 2];
        pit.read(channel, &mut bytes[..1]);
        pit.read(channel, &mut bytes[1..]);
        u16::from_le_bytes(bytes)
    }

    #[test]
    fn a_rate_generator_counts_down_and_reloads() {
        let mut pit = pit();
        // Linux's periodic tick: channel 0, low then high byte, mode 2, LATCH for 100 Hz.
        pit.write(3, &[0x34]);
        pit.write(0, &[0x9c, 0x2e]);
        advance(1000);
        pit.write(3, &[0x00]);
        advance(500);
        assert_eq!(read_word(&mut pit, 0), 11932 - 1000, "the latched count");
        assert_eq!(read_word(&mut pit, 0), 11932 - 1500, "the live count");
        advance(11932);
        assert_eq!(read_word(&mut pit, 0), 11932 - 1500, "one period later");
    }

    #[test]
    fn channel_2_calibration_through_port_b() {
        // Linux's PIT calibration of the TSC: gate on, speaker off, mode 0, poll OUT2.
        let pit = Arc::new(Mutex::new(pit()));
        let mut port_b = PortB(pit.clone());
        let mut byte = [0u8];
        port_b.write(0, &[PORT_B_GATE2]);
        pit.lock().unwrap().write(3, &[0xb0]);
        pit.lock().unwrap().write(2, &[0xff, 0xff]);
        port_b.read(0, &mut byte);
        assert_eq!(byte[0] & (PORT_B_OUT2 | PORT_B_GATE2), PORT_B_GATE2);
        advance(0xfffe);
        port_b.read(0, &mut byte);
        assert_eq!(
            byte[0] & PORT_B_OUT2,
            0,
            "one clock before the terminal count"
        );
        advance(1);
        port_b.read(0, &mut byte);
        assert_eq!(byte[0] & PORT_B_OUT2, PORT_B_OUT2, "at the terminal count");
    }

    #[test]
    fn a_low_gate_holds_the_count_of_mode_0() {
        let pit = Arc::new(Mutex::new(pit()));
        let mut port_b = PortB(pit.clone());
        port_b.write(0, &[PORT_B_GATE2]);
        pit.lock().unwrap().write(3, &[0xb0]);
        pit.lock().unwrap().write(2, &[0x00, 0x10]);
        advance(0x100);
        port_b.write(0, &[0]);
        advance(0x800);
        assert_eq!(read_word(&mut pit.lock().unwrap(), 2), 0x0f00);
        port_b.write(0, &[PORT_B_GATE2]);
        advance(0x100);
        assert_eq!(read_word(&mut pit.lock().unwrap(), 2), 0x0e00);
    }

    #[test]
    fn read_back_latches_status_then_count() {
        let mut pit = pit();
        pit.write(3, &[0x76]); // channel 1, low then high byte, mode 3
        let mut status = [0u8];
        pit.write(3, &[0xe4]); // read-back of channel 1's status only
        pit.read(1, &mut status);
        assert_eq!(
            status[0],
            0x80 | 0x40 | 0x36,
            "OUT high, null count, access 3, mode 3"
        );
        pit.write(1, &[0x10, 0x00]);
        advance(3);
        pit.write(3, &[0xc4]); // read-back of channel 1's status and count
        pit.read(1, &mut status);
        assert_eq!(status[0] & 0x40, 0, "a count is loaded");
        assert_eq!(read_word(&mut pit, 1), 0x10 - 6, "mode 3 counts by two");
    }

    #[test]
    fn state_round_trips_and_bad_state_is_refused() {
        let mut pit = pit();
        pit.write(3, &[0x34]);
        pit.write(0, &[0x00, 0x01]);
        advance(0x40);
        let state = pit.state();
        let mut restored = self::pit();
        restored.restore(&state).unwrap();
        assert_eq!(restored.state(), state);
        assert_eq!(read_word(&mut restored, 0), 0xc0);
        let mut bad = state.clone();
        bad.channels[1].mode = 6;
        assert_eq!(
            restored.restore(&bad),
            Err(PitStateError {
                channel: 1,
                mode: 6,
                access: 3
            })
        );
    }

    #[test]
    fn any_sequence_of_port_accesses_is_survived_and_saved() {
        // A hostile guest: random control words (every mode, read-back, latch), counts, reads
        // and port B values, with time passing in between. Nothing may panic, and the state
        // must load back as saved at every step.
        let shared = Arc::new(Mutex::new(pit()));
        let mut port_b = PortB(shared.clone());
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let value = random();
            let byte = (value >> 8) as u8;
            match value % 5 {
                0 => shared.lock().unwrap().write(value % 4, &[byte]),
                1 => shared.lock().unwrap().read(value % 4, &mut [0u8; 2]),
                2 => port_b.write(0, &[byte]),
                3 => port_b.read(0, &mut [0u8]),
                _ => advance(value >> 48),
            }
            // Channel 0 may have been left running: the ticker must not see a bad schedule.
            let state = shared.lock().unwrap().state();
            let mut restored = self::pit();
            restored.restore(&state).unwrap();
            assert_eq!(restored.state(), state);
        }
    }

    fn pulses(line: &RecordingLine) -> usize {
        line.0.lock().unwrap().iter().filter(|&&high| high).count()
    }

    #[test]
    fn channel_0_raises_irq_0_periodically_and_stops_when_reprogrammed() {
        let line = Arc::new(RecordingLine::default());
        let mut pit = Pit::new(line.clone(), Instant::now);
        pit.write(3, &[0x34]);
        pit.write(0, &(1193u16).to_le_bytes()); // 1 kHz
        let deadline = Instant::now() + Duration::from_secs(10);
        while pulses(&line) < 3 {
            assert!(Instant::now() < deadline, "no periodic IRQ 0");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The shutdown Linux uses: mode 0, and no count.
        pit.write(3, &[0x30]);
        let stopped = pulses(&line);
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            pulses(&line) <= stopped + 1,
            "IRQ 0 went on after the shutdown"
        );
        assert!(!line.level(), "every pulse ends low");
    }

    #[test]
    fn a_guest_cannot_make_the_ticker_spin() {
        let line = Arc::new(RecordingLine::default());
        let mut pit = Pit::new(line.clone(), Instant::now);
        let start = Instant::now();
        pit.write(3, &[0x34]);
        pit.write(0, &[2, 0]); // 600 kHz
        std::thread::sleep(Duration::from_millis(30));
        pit.write(3, &[0x30]);
        let elapsed = start.elapsed();
        let allowed = elapsed.as_nanos() / MIN_IRQ_INTERVAL.as_nanos() + 1;
        assert!(
            pulses(&line) as u128 <= allowed,
            "{} pulses in {elapsed:?}",
            pulses(&line)
        );
    }
}
