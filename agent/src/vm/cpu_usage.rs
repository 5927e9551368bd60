//! summary.quickStats.overallCpuUsage: the CPU time each running VMM process used (utime +
//! stime of `/proc/<pid>/stat`) over the last sampling period, in MHz of the host's CPUs, as
//! ESXi's quick stats give it. Sampled every [`SAMPLE_PERIOD`] on a thread of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::host::Host;
use crate::inventory::host_facts::HostFacts;

/// How often the VMs' CPU time is sampled (ESXi refreshes quick stats every 20 s).
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(5);

/// One reading of a VMM's CPU time.
#[derive(Clone, Copy)]
struct Sample {
    pid: i32,
    at: Instant,
    ticks: u64,
}

/// The CPU time (user + system, in clock ticks) a process used, from `/proc/<pid>/stat`.
pub fn process_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_ticks(&stat)
}

/// utime + stime of a `/proc/<pid>/stat` line (fields 14 and 15; the command name in
/// parentheses may hold spaces).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// MHz used between two samples of the same process, on CPUs of `mhz` each.
fn usage_mhz(before: Sample, after: Sample, ticks_per_second: u64, mhz: i32) -> i32 {
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    if seconds <= 0.0 || ticks_per_second == 0 {
        return 0;
    }
    let cpu_seconds = after.ticks.saturating_sub(before.ticks) as f64 / ticks_per_second as f64;
    (cpu_seconds / seconds * f64::from(mhz)).round() as i32
}

/// Samples every running VM's CPU time forever, publishing each VM whose usage moved.
pub fn watch(host: Arc<Host>) {
    let _ = std::thread::Builder::new()
        .name("cpu-usage".into())
        .spawn(move || {
            let mhz = HostFacts::read().cpu_mhz;
            let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
                .ok()
                .flatten()
                .map_or(100, |t| t as u64);
            let mut last: HashMap<u32, Sample> = HashMap::new();
            loop {
                std::thread::sleep(SAMPLE_PERIOD);
                for vm in host.vms.all() {
                    let pid = vm.state().process.as_ref().map(|p| p.pid);
                    let sample = pid.and_then(|pid| {
                        Some(Sample {
                            pid,
                            at: Instant::now(),
                            ticks: process_ticks(pid)?,
                        })
                    });
                    let usage = match (last.get(&vm.id), sample) {
                        (Some(&before), Some(after)) if before.pid == after.pid => {
                            usage_mhz(before, after, ticks_per_second, mhz)
                        }
                        _ => 0,
                    };
                    match sample {
                        Some(sample) => last.insert(vm.id, sample),
                        None => last.remove(&vm.id),
                    };
                    let mut state = vm.edit(&host);
                    if state.cpu_usage_mhz == usage {
                        state.unpublished();
                    } else {
                        state.cpu_usage_mhz = usage;
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_user_plus_system_ticks() {
        let stat =
            "4242 (vireo vmm) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 3 0 99 1 2";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn half_a_cpu_for_two_seconds_is_half_the_clock() {
        let at = Instant::now();
        let before = Sample {
            pid: 1,
            at,
            ticks: 1000,
        };
        let after = Sample {
            pid: 1,
            at: at + Duration::from_secs(2),
            ticks: 1100,
        };
        assert_eq!(usage_mhz(before, after, 100, 2400), 1200);
    }
}
