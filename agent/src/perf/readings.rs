//! What the performance counters are measured from, read at one moment: the host's
//! `/proc/stat`, `/proc/meminfo`, `/proc/diskstats`, `/proc/net/dev` and `/proc/uptime`; a
//! running VM's vireo-vmm process (`/proc/<pid>/stat` CPU time, `schedstat` run delay of its
//! threads, `smaps_rollup` resident and referenced pages), its disks' request counters (the
//! VMM's `stats` control command) and its TAPs' counters (`/sys/class/net`). A reading holds,
//! per counter and instance, an absolute value or a running total in the counter's unit
//! (times seconds for rates); the store turns two readings into a sample.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use vireo_vmm_protocol::control::{DeviceStats, Request};

use super::catalogue::*;
use crate::vm::{control, VmState};

/// Values by (counter id, instance); "" is the entity as a whole.
pub type Reading = BTreeMap<(i32, String), f64>;

/// Bytes per kilobyte (the counters' kiloBytes are KiB).
const KB: f64 = 1024.0;
/// Ten thousand: a percent counter's 100 %.
const PERCENT: f64 = 10_000.0;

/// The clock ticks per second of `/proc` CPU times.
pub fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

fn add(reading: &mut Reading, counter: i32, instance: &str, value: f64) {
    *reading.entry((counter, instance.to_string())).or_default() += value;
}

/// A disk's counters: requests read and written, KB read and written, KB in all.
const DISK_COUNTERS: [i32; 5] = [
    DISK_NUMBER_READ,
    DISK_NUMBER_WRITE,
    DISK_READ,
    DISK_WRITE,
    DISK_USAGE,
];
/// An interface's counters: packets received and sent, KB received and sent, KB in all.
const NET_COUNTERS: [i32; 5] = [
    NET_PACKETS_RX,
    NET_PACKETS_TX,
    NET_RECEIVED,
    NET_TRANSMITTED,
    NET_USAGE,
];

/// Adds one device's two counts and their bytes (`[a, b, bytes a, bytes b]`) to `counters`,
/// for the instance and in total.
fn add_device(reading: &mut Reading, counters: [i32; 5], instance: &str, counts: [f64; 4]) {
    let [a, b, bytes_a, bytes_b] = counts;
    let values = [a, b, bytes_a / KB, bytes_b / KB, (bytes_a + bytes_b) / KB];
    for at in ["", instance] {
        for (counter, value) in counters.iter().zip(values) {
            add(reading, *counter, at, value);
        }
    }
}

/// Adds CPU seconds used by something with `cpus` CPUs of `mhz`.
fn add_cpu(reading: &mut Reading, cpu_seconds: f64, cpus: f64, mhz: f64) {
    add(
        reading,
        CPU_USAGE,
        "",
        cpu_seconds / cpus.max(1.0) * PERCENT,
    );
    add(reading, CPU_USAGE_MHZ, "", cpu_seconds * mhz);
    add(reading, CPU_USED, "", cpu_seconds * 1000.0);
}

/// The host's reading.
pub fn host(mhz: f64) -> Reading {
    let mut reading = Reading::new();
    if let Some((busy, cpus)) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| cpu_busy_ticks(&s))
    {
        add_cpu(&mut reading, busy / ticks_per_second(), cpus, mhz);
    }
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        let field = |name: &str| meminfo_kb(&meminfo, name);
        if let (Some(total), Some(available)) = (field("MemTotal"), field("MemAvailable")) {
            add(&mut reading, MEM_CONSUMED, "", total - available);
            add(
                &mut reading,
                MEM_USAGE,
                "",
                (total - available) / total * PERCENT,
            );
        }
        if let Some(active) = field("Active") {
            add(&mut reading, MEM_ACTIVE, "", active);
        }
    }
    if let Ok(stats) = std::fs::read_to_string("/proc/diskstats") {
        for (name, counts) in disk_stats(&stats) {
            if Path::new("/sys/block").join(&name).exists() && !is_virtual_block(&name) {
                add_device(&mut reading, DISK_COUNTERS, &name, counts);
            }
        }
    }
    if let Ok(dev) = std::fs::read_to_string("/proc/net/dev") {
        for (name, counts) in net_dev(&dev) {
            // Physical interfaces only (ESXi's vmnics): bridges and TAPs repeat their traffic.
            if Path::new("/sys/class/net")
                .join(&name)
                .join("device")
                .exists()
            {
                add_device(&mut reading, NET_COUNTERS, &name, counts);
            }
        }
    }
    if let Some(uptime) = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
    {
        add(&mut reading, SYS_UPTIME, "", uptime.floor());
    }
    reading
}

/// Block devices that are not storage (loop and RAM disks).
fn is_virtual_block(name: &str) -> bool {
    ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p))
}

/// The instance name ESXi gives a VM's disk `n`: its SCSI controller and unit (7 is the
/// controller's own).
pub fn disk_instance(n: usize) -> String {
    format!("scsi0:{}", if n >= 7 { n + 1 } else { n })
}

/// A running VM's reading (`now_micros` for its uptime); `None` when it has no VMM.
pub fn vm(state: &VmState, run_dir: &Path, mhz: f64, now_micros: i64) -> Option<(i32, Reading)> {
    let pid = state.process.as_ref()?.pid;
    let mut reading = Reading::new();
    let proc = Path::new("/proc").join(pid.to_string());
    let cpu_seconds = crate::vm::cpu_usage::process_ticks(pid)? as f64 / ticks_per_second();
    add_cpu(
        &mut reading,
        cpu_seconds,
        f64::from(state.spec.num_cpus),
        mhz,
    );
    add(&mut reading, CPU_READY, "", run_delay_ns(&proc) / 1e6);
    if let Ok(rollup) = std::fs::read_to_string(proc.join("smaps_rollup")) {
        let memory_kb = state.spec.memory_mb as f64 * KB;
        if let Some(rss) = meminfo_kb(&rollup, "Rss") {
            add(&mut reading, MEM_CONSUMED, "", rss);
        }
        if let Some(referenced) = meminfo_kb(&rollup, "Referenced") {
            add(&mut reading, MEM_ACTIVE, "", referenced);
            let usage = (referenced / memory_kb * PERCENT).min(PERCENT);
            add(&mut reading, MEM_USAGE, "", usage);
        }
    }
    let stats: Option<DeviceStats> = control::call(
        &run_dir.join("control.sock"),
        &Request::Stats,
        Duration::from_secs(2),
    )
    .ok();
    for (n, disk) in stats.iter().flat_map(|s| s.disks.iter()).enumerate() {
        let counts =
            [disk.reads, disk.writes, disk.read_bytes, disk.written_bytes].map(|c| c as f64);
        let instance = disk_instance(n);
        add(&mut reading, VDISK_READS_PER_SECOND, &instance, counts[0]);
        add(&mut reading, VDISK_WRITES_PER_SECOND, &instance, counts[1]);
        add(&mut reading, VDISK_READ, &instance, counts[2] / KB);
        add(&mut reading, VDISK_WRITE, &instance, counts[3] / KB);
        add_device(&mut reading, DISK_COUNTERS, &instance, counts);
    }
    for (n, tap) in state.taps.iter().enumerate() {
        // The TAP's receive side is what the guest transmitted, and the other way round.
        let stat = |name: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{tap}/statistics/{name}"))
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
        };
        if let [Some(tx_packets), Some(rx_packets), Some(tx_bytes), Some(rx_bytes)] =
            ["rx_packets", "tx_packets", "rx_bytes", "tx_bytes"].map(stat)
        {
            let instance = (crate::vm::properties::devices::NIC_KEY + n as i32).to_string();
            add_device(
                &mut reading,
                NET_COUNTERS,
                &instance,
                [rx_packets, tx_packets, rx_bytes, tx_bytes],
            );
        }
    }
    if let Some(boot) = state.boot_time {
        add(
            &mut reading,
            SYS_UPTIME,
            "",
            ((now_micros - boot) / 1_000_000) as f64,
        );
    }
    Some((pid, reading))
}

/// Busy ticks (all but idle and iowait) over every CPU, and the CPU count, from `/proc/stat`.
fn cpu_busy_ticks(stat: &str) -> Option<(f64, f64)> {
    let mut lines = stat.lines();
    let total: Vec<f64> = lines
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let cpus = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let all: f64 = total.iter().take(8).sum();
    let idle = total.get(3).copied().unwrap_or(0.0) + total.get(4).copied().unwrap_or(0.0);
    Some((all - idle, cpus as f64))
}

/// Nanoseconds the process's threads spent runnable but waiting (schedstat's second field).
fn run_delay_ns(proc: &Path) -> f64 {
    let Ok(tasks) = std::fs::read_dir(proc.join("task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum()
}

/// A `Name:   123 kB` field of `/proc/meminfo` or `smaps_rollup`.
fn meminfo_kb(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (key, rest) = line.split_once(':')?;
        (key.trim() == name).then(|| rest.split_whitespace().next()?.parse().ok())?
    })
}

/// Each device of `/proc/diskstats`: (name, [reads, writes, bytes read, bytes written]).
fn disk_stats(text: &str) -> Vec<(String, [f64; 4])> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let n = |i: usize| f.get(i)?.parse::<f64>().ok();
            let name = f.get(2)?.to_string();
            Some((name, [n(3)?, n(7)?, n(5)? * 512.0, n(9)? * 512.0]))
        })
        .collect()
}

/// Each interface of `/proc/net/dev`: (name, [rx packets, tx packets, rx bytes, tx bytes]).
fn net_dev(text: &str) -> Vec<(String, [f64; 4])> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let f: Vec<f64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0.0))
                .collect();
            Some((
                name.trim().to_string(),
                [*f.get(1)?, *f.get(9)?, *f.first()?, *f.get(8)?],
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_as_the_kernel_lays_them_out() {
        let stat = "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 50 2 25 400 10 0 1 1 0 0\ncpu1 50 3 25 400 10 1 1 2 0 0\nintr 1\n";
        assert_eq!(cpu_busy_ticks(stat), Some((161.0, 2.0)));
        let disks = disk_stats("   8       0 sda 10 0 80 5 4 0 16 3 0 8 8 0 0 0 0\n");
        assert_eq!(disks, [("sda".to_string(), [10.0, 4.0, 40960.0, 8192.0])]);
        let dev = "Inter-|   Receive\n face |bytes packets\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n";
        assert_eq!(
            net_dev(dev),
            [("eth0".to_string(), [10.0, 20.0, 1000.0, 2000.0])]
        );
        assert_eq!(
            meminfo_kb("MemTotal:  2048 kB\nActive:   100 kB\n", "Active"),
            Some(100.0)
        );
        assert_eq!(disk_instance(7), "scsi0:8");
    }
}
