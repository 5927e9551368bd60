//! Performance statistics as ESXi keeps them for its real-time charts: every 20 seconds
//! (aligned to the wall clock) the host and each running VM are read ([`readings`]) and the
//! counters of the [`catalogue`] computed from this reading and the last one (rates and
//! deltas over the interval, absolute values as read), kept in memory for one hour per
//! entity. Nothing is estimated: a counter the host cannot read is simply absent.

pub mod catalogue;
pub mod publish;
pub mod readings;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vireo_api::MoRef;

use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::host_facts::HostFacts;
use crate::inventory::now_micros;
use crate::locks::lock;
use catalogue::Stats;
use readings::Reading;

/// Seconds between samples (the real-time interval, PerfProviderSummary.refreshRate).
pub const INTERVAL_SECS: i64 = 20;
/// Samples kept per entity: one hour.
pub const KEPT: usize = 180;

/// One sample of an entity: when, and each counter's value by (counter id, instance).
#[derive(Debug, Clone)]
pub struct Sample {
    /// The end of the interval it covers, microseconds since the epoch.
    pub timestamp: i64,
    /// Values.
    pub values: BTreeMap<(i32, String), i64>,
}

/// What is kept of one entity.
#[derive(Default)]
struct History {
    samples: VecDeque<Sample>,
    /// The last reading, when, and of which process (a VM's readings restart with its VMM).
    last: Option<(Instant, Option<i32>, Reading)>,
}

/// Every entity's samples.
#[derive(Default)]
pub struct Store {
    entities: HashMap<MoRef, History>,
}

impl Store {
    /// The samples of `entity`, oldest first.
    pub fn samples(&self, entity: &MoRef) -> impl Iterator<Item = &Sample> {
        self.entities
            .get(entity)
            .into_iter()
            .flat_map(|h| h.samples.iter())
    }

    /// Records a reading of `entity` (of process `pid`) taken at `at` for `timestamp`.
    fn record(
        &mut self,
        entity: MoRef,
        timestamp: i64,
        at: Instant,
        pid: Option<i32>,
        reading: Reading,
    ) {
        let history = self.entities.entry(entity).or_default();
        let previous = history
            .last
            .take()
            .filter(|(_, last_pid, _)| *last_pid == pid);
        let values = sample_values(previous.as_ref().map(|(t, _, r)| (*t, r)), at, &reading);
        history.last = Some((at, pid, reading));
        history.samples.push_back(Sample { timestamp, values });
        while history.samples.len() > KEPT {
            history.samples.pop_front();
        }
    }

    /// Forgets the last reading of entities not read this round (a VM powered off).
    fn forget_others(&mut self, read: &[MoRef]) {
        for (entity, history) in &mut self.entities {
            if !read.contains(entity) {
                history.last = None;
            }
        }
    }
}

/// The counters' values from `reading` and the one before it (taken `seconds` apart):
/// absolute values as read; deltas and rates only with an earlier reading, and only where
/// the running total did not go back.
fn sample_values(
    previous: Option<(Instant, &Reading)>,
    at: Instant,
    reading: &Reading,
) -> BTreeMap<(i32, String), i64> {
    let mut values = BTreeMap::new();
    for (key, &value) in reading {
        let Some(counter) = catalogue::by_id(key.0) else {
            continue;
        };
        let computed = match counter.stats {
            Stats::Absolute => Some(value),
            Stats::Delta | Stats::Rate => previous.and_then(|(then, before)| {
                let delta = value - before.get(key)?;
                let seconds = at.duration_since(then).as_secs_f64();
                match counter.stats {
                    _ if delta < 0.0 || seconds <= 0.0 => None,
                    Stats::Rate => Some(delta / seconds),
                    _ => Some(delta),
                }
            }),
        };
        if let Some(v) = computed {
            values.insert(key.clone(), v.round() as i64);
        }
    }
    values
}

/// Samples the host and its running VMs every interval, forever, on a thread of its own.
pub fn watch(host: Arc<Host>) {
    let _ = std::thread::Builder::new()
        .name("perf".into())
        .spawn(move || {
            let mhz = f64::from(HostFacts::read().cpu_mhz);
            loop {
                let now = now_micros();
                let period = INTERVAL_SECS * 1_000_000;
                let next = (now / period + 1) * period;
                std::thread::sleep(Duration::from_micros((next - now) as u64));
                sample_all(&host, next, mhz);
            }
        });
}

fn sample_all(host: &Host, timestamp: i64, mhz: f64) {
    let at = Instant::now();
    let mut read = vec![refs::host()];
    let mut readings = vec![(refs::host(), None, readings::host(mhz))];
    for vm in host.vms.all() {
        let state = vm.state();
        if let Some((pid, reading)) = readings::vm(&state, &vm.run_dir, mhz, timestamp) {
            read.push(vm.moref.clone());
            readings.push((vm.moref.clone(), Some(pid), reading));
        }
    }
    let mut store = lock(&host.perf);
    for (entity, pid, reading) in readings {
        store.record(entity, timestamp, at, pid, reading);
    }
    store.forget_others(&read);
}

#[cfg(test)]
mod tests {
    use super::*;
    use catalogue::{CPU_USAGE, SYS_UPTIME};

    #[test]
    fn rates_need_two_readings_of_the_same_process() {
        let mut store = Store::default();
        let vm = MoRef::new("VirtualMachine", "1");
        let start = Instant::now();
        let reading = |usage: f64| {
            Reading::from([
                ((CPU_USAGE, String::new()), usage),
                ((SYS_UPTIME, String::new()), 5.0),
            ])
        };
        store.record(vm.clone(), 20, start, Some(7), reading(100.0));
        let later = start + Duration::from_secs(20);
        store.record(vm.clone(), 40, later, Some(7), reading(500.0));
        store.record(
            vm.clone(),
            60,
            later + Duration::from_secs(20),
            Some(8),
            reading(9.0),
        );
        let samples: Vec<_> = store.samples(&vm).collect();
        let usage = |s: &Sample| s.values.get(&(CPU_USAGE, String::new())).copied();
        assert_eq!(
            samples.iter().map(|s| usage(s)).collect::<Vec<_>>(),
            [None, Some(20), None]
        );
        assert!(samples
            .iter()
            .all(|s| s.values[&(SYS_UPTIME, String::new())] == 5));
    }
}
