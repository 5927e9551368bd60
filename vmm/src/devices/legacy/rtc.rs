//! CMOS RTC at ports 0x70/0x71: the host's current UTC date and time in BCD, 24-hour mode,
//! plus the battery-backed NVRAM bytes guests may use as scratch.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::devices::bus::BusDevice;

/// Index port (0x71 is data).
pub const RTC_PORT: u16 = 0x70;
/// Ports the RTC claims.
pub const RTC_PORT_COUNT: u16 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;
/// 32.768 kHz time base, 1024 Hz rate, no update in progress.
const STATUS_A_DEFAULT: u8 = 0x26;
/// 24-hour mode, BCD.
const STATUS_B_DEFAULT: u8 = 0x02;
/// Valid RAM and time.
const STATUS_D_VALID: u8 = 0x80;

/// A UTC calendar time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalendarTime {
    /// Full year.
    pub year: i64,
    /// 1..=12.
    pub month: u8,
    /// 1..=31.
    pub day: u8,
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=59.
    pub second: u8,
    /// 1 = Sunday .. 7 = Saturday (the RTC convention).
    pub weekday: u8,
}

impl CalendarTime {
    /// The calendar time `unix_seconds` after the epoch (proleptic Gregorian, UTC).
    pub fn from_unix(unix_seconds: i64) -> Self {
        let days = unix_seconds.div_euclid(86_400);
        let secs = unix_seconds.rem_euclid(86_400);
        // Days-to-civil conversion over 400-year eras (Howard Hinnant's published algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + i64::from(month <= 2);
        CalendarTime {
            year,
            month,
            day,
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
            weekday: ((days + 4).rem_euclid(7) + 1) as u8,
        }
    }
}

fn bcd(value: u8) -> u8 {
    ((value / 10) << 4) | (value % 10)
}

/// Saved CMOS index and NVRAM (the clock always reads the host's time).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CmosState {
    /// Selected register.
    pub index: u8,
    /// The 128 NVRAM bytes.
    pub nvram: Vec<u8>,
}

/// The CMOS chip.
pub struct Cmos {
    index: u8,
    nvram: [u8; 128],
    clock: fn() -> i64,
}

fn host_unix_time() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Default for Cmos {
    fn default() -> Self {
        Cmos::with_clock(host_unix_time)
    }
}

impl Cmos {
    /// A CMOS reading time from `clock` (Unix seconds).
    pub fn with_clock(clock: fn() -> i64) -> Self {
        Cmos {
            index: 0,
            nvram: [0; 128],
            clock,
        }
    }

    /// The chip's state.
    pub fn state(&self) -> CmosState {
        CmosState {
            index: self.index,
            nvram: self.nvram.to_vec(),
        }
    }

    /// Loads a saved state (a short NVRAM leaves the rest zero).
    pub fn restore(&mut self, state: &CmosState) {
        self.index = state.index & 0x7f;
        let len = state.nvram.len().min(self.nvram.len());
        self.nvram[..len].copy_from_slice(&state.nvram[..len]);
    }

    fn register(&self, index: u8) -> u8 {
        let now = CalendarTime::from_unix((self.clock)());
        match index {
            REG_SECONDS => bcd(now.second),
            REG_MINUTES => bcd(now.minute),
            REG_HOURS => bcd(now.hour),
            REG_WEEKDAY => bcd(now.weekday),
            REG_DAY => bcd(now.day),
            REG_MONTH => bcd(now.month),
            REG_YEAR => bcd(now.year.rem_euclid(100) as u8),
            REG_CENTURY => bcd(now.year.div_euclid(100).clamp(0, 99) as u8),
            REG_STATUS_A => STATUS_A_DEFAULT,
            REG_STATUS_B => STATUS_B_DEFAULT,
            REG_STATUS_D => STATUS_D_VALID,
            other => self.nvram[usize::from(other & 0x7f)],
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = if offset == 0 {
            self.index
        } else {
            self.register(self.index)
        };
        data.fill(value);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.last() else { return };
        if offset == 0 {
            // Bit 7 is the NMI mask, not part of the index.
            self.index = value & 0x7f;
        } else if self.index > REG_STATUS_D && self.index != REG_CENTURY {
            self.nvram[usize::from(self.index)] = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_conversion_matches_known_dates() {
        assert_eq!(
            CalendarTime::from_unix(0),
            CalendarTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                weekday: 5
            }
        );
        // 2026-11-29 20:49:29 UTC was a Sunday.
        let t = CalendarTime::from_unix(1_795_985_369);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday),
            (2026, 11, 29, 20, 49, 29, 1)
        );
        // Leap day.
        let t = CalendarTime::from_unix(951_782_400);
        assert_eq!((t.year, t.month, t.day), (2000, 2, 29));
    }

    #[test]
    fn registers_read_as_bcd_and_nvram_keeps_values() {
        let mut cmos = Cmos::with_clock(|| 1_795_985_369);
        let read = |cmos: &mut Cmos, index: u8| {
            cmos.write(0, &[index | 0x80]);
            let mut data = [0u8];
            cmos.read(1, &mut data);
            data[0]
        };
        assert_eq!(read(&mut cmos, REG_YEAR), 0x26);
        assert_eq!(read(&mut cmos, REG_CENTURY), 0x20);
        assert_eq!(read(&mut cmos, REG_MONTH), 0x11);
        assert_eq!(read(&mut cmos, REG_HOURS), 0x20);
        assert_eq!(read(&mut cmos, REG_STATUS_B), STATUS_B_DEFAULT);
        cmos.write(0, &[0x40]);
        cmos.write(1, &[0x5a]);
        assert_eq!(read(&mut cmos, 0x40), 0x5a);
        cmos.write(0, &[REG_SECONDS]);
        cmos.write(1, &[0x99]);
        assert_ne!(
            read(&mut cmos, REG_SECONDS),
            0x99,
            "time registers are the host's"
        );
    }
}
