//! The historical interval a standalone ESXi host keeps beside the real-time one: "Past day",
//! one sample per 5 minutes for 24 hours, each rolled up from the 20-second samples of its five
//! minutes by the counter's rollup type (average, maximum, minimum, summation, latest).

use std::collections::{BTreeMap, VecDeque};

use super::catalogue;
use super::Sample;

/// Seconds per historical sample.
pub const PERIOD_SECS: i64 = 300;
/// Historical samples kept per entity: one day.
pub const KEPT: usize = 288;
/// The interval's name, as ESXi calls it.
pub const NAME: &str = "Past day";

/// Whether a real-time sample at `timestamp` ends a 5-minute period.
pub fn ends_period(timestamp: i64) -> bool {
    timestamp % (PERIOD_SECS * 1_000_000) == 0
}

/// The 5-minute sample ending at `end` from the real-time samples in (end − 5 min, end];
/// `None` when there are none.
pub fn roll_up(samples: &VecDeque<Sample>, end: i64) -> Option<Sample> {
    let start = end - PERIOD_SECS * 1_000_000;
    let mut series: BTreeMap<(i32, String), Vec<i64>> = BTreeMap::new();
    for sample in samples
        .iter()
        .filter(|s| s.timestamp > start && s.timestamp <= end)
    {
        for (key, value) in &sample.values {
            series.entry(key.clone()).or_default().push(*value);
        }
    }
    if series.is_empty() {
        return None;
    }
    let values = series
        .into_iter()
        .filter_map(|(key, values)| {
            let rollup = catalogue::by_id(key.0)?.rollup;
            Some((key, combine(rollup, &values)?))
        })
        .collect();
    Some(Sample {
        timestamp: end,
        values,
    })
}

/// Combines one counter's values over a period by its rollup type.
fn combine(rollup: &str, values: &[i64]) -> Option<i64> {
    let last = *values.last()?;
    Some(match rollup {
        "average" => {
            let sum: i128 = values.iter().map(|&v| i128::from(v)).sum();
            (sum / values.len() as i128) as i64
        }
        "maximum" => values.iter().copied().max()?,
        "minimum" => values.iter().copied().min()?,
        "summation" => values.iter().sum(),
        _ => last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::catalogue::{CPU_USAGE, SYS_UPTIME};

    fn sample(seconds: i64, usage: i64, uptime: i64) -> Sample {
        Sample {
            timestamp: seconds * 1_000_000,
            values: BTreeMap::from([
                ((CPU_USAGE, String::new()), usage),
                ((SYS_UPTIME, String::new()), uptime),
            ]),
        }
    }

    #[test]
    fn five_minutes_roll_up_by_each_counters_type() {
        let samples: VecDeque<Sample> = [
            sample(280, 9999, 1),
            sample(300, 100, 2),
            sample(320, 200, 3),
            sample(600, 600, 4),
            sample(620, 5, 5),
        ]
        .into();
        assert!(ends_period(600 * 1_000_000) && !ends_period(620 * 1_000_000));
        let rolled = roll_up(&samples, 600 * 1_000_000).unwrap();
        // cpu.usage is an average, sys.uptime the latest value.
        assert_eq!(rolled.values[&(CPU_USAGE, String::new())], 400);
        assert_eq!(rolled.values[&(SYS_UPTIME, String::new())], 4);
        assert!(roll_up(&samples, 1200 * 1_000_000).is_none());
    }
}
