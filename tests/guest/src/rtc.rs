//! The CMOS real-time clock (index port 0x70, data port 0x71): the wall clock (UTC) the
//! platform keeps for the guest, read as a PC operating system reads it: only while no update
//! is in progress, and twice until two reads agree (so a read never straddles the clock's
//! tick), decoding BCD or binary and 12- or 24-hour mode as status register B says.

use crate::io::{Io, Width};

const INDEX: u16 = 0x70;
const DATA: u16 = 0x71;
/// Seconds, minutes, hours, day of month, month, year, century.
const TIME_REGISTERS: [u8; 7] = [0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32];
const STATUS_A: u8 = 0x0a;
const STATUS_B: u8 = 0x0b;
const STATUS_D: u8 = 0x0d;
/// Status A: the clock is updating its registers.
const UPDATE_IN_PROGRESS: u8 = 0x80;
/// Status B: values in binary rather than BCD.
const BINARY: u8 = 0x04;
/// Status B: 24-hour mode.
const HOURS_24: u8 = 0x02;
/// The hours register's PM bit in 12-hour mode.
const PM: u8 = 0x80;
/// Status D: the clock's time is valid (its battery is good).
const VALID: u8 = 0x80;
/// Reads before giving up on a clock that never holds still.
const MAX_READS: usize = 16;

/// The clock's time in seconds since the Unix epoch, or `None` when it says its time is not
/// valid, never reads the same twice, or reads a date that does not exist.
pub fn unix_seconds(io: &mut Io) -> Option<u64> {
    if register(io, STATUS_D) & VALID == 0 {
        return None;
    }
    let mut previous = None;
    for _ in 0..MAX_READS {
        if register(io, STATUS_A) & UPDATE_IN_PROGRESS != 0 {
            continue;
        }
        let raw = TIME_REGISTERS.map(|r| register(io, r));
        if previous == Some(raw) {
            return decode(raw, register(io, STATUS_B));
        }
        previous = Some(raw);
    }
    None
}

fn register(io: &mut Io, index: u8) -> u8 {
    io.out(INDEX, Width::Byte, u32::from(index));
    io.input(DATA, Width::Byte) as u8
}

/// Seconds since the epoch of the raw time registers, in the mode `status_b` gives.
fn decode(raw: [u8; 7], status_b: u8) -> Option<u64> {
    let value = |byte: u8| {
        if status_b & BINARY != 0 {
            u64::from(byte)
        } else {
            u64::from(byte >> 4) * 10 + u64::from(byte & 0x0f)
        }
    };
    let [second, minute, hour, day, month, year, century] = raw;
    let mut hours = value(hour & !PM);
    if status_b & HOURS_24 == 0 {
        hours = hours % 12 + if hour & PM != 0 { 12 } else { 0 };
    }
    // A clock without a century register reads 0 there: this century then.
    let century = match value(century) {
        0 => 20,
        c => c,
    };
    let (year, month, day) = (century * 100 + value(year), value(month), value(day));
    let (second, minute) = (value(second), value(minute));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hours > 23 || minute > 59 {
        return None;
    }
    if second > 59 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hours * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a date in or after 1970 (the proleptic Gregorian calendar, over
/// 400-year eras as in Howard Hinnant's published algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}
