//! The performance counters this host measures, with the ids ESXi's hostd gives them (clients
//! find counters by `group.name.rollup`, scripts written against ESXi also by id), their
//! units, statistics types and collection levels.

/// How a counter's values relate to time (PerfStatsType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stats {
    /// A value at the sample's time.
    Absolute,
    /// The change over the sample's interval.
    Delta,
    /// A rate over the sample's interval.
    Rate,
}

/// One counter of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    /// The counter id.
    pub id: i32,
    /// Its group (`cpu`, `mem`, `disk`, `virtualDisk`, `net`, `sys`).
    pub group: &'static str,
    /// Its name in the group.
    pub name: &'static str,
    /// Its rollup (PerfSummaryType).
    pub rollup: &'static str,
    /// Its unit (PerformanceManagerUnit).
    pub unit: &'static str,
    /// Its statistics type.
    pub stats: Stats,
    /// The collection level it belongs to.
    pub level: i32,
    /// A short label.
    pub label: &'static str,
    /// What it measures here.
    pub summary: &'static str,
}

impl Counter {
    /// `group.name.rollup`.
    pub fn full_name(&self) -> String {
        format!("{}.{}.{}", self.group, self.name, self.rollup)
    }
}

const fn counter(
    id: i32,
    (group, name, rollup): (&'static str, &'static str, &'static str),
    unit: &'static str,
    stats: Stats,
    level: i32,
    (label, summary): (&'static str, &'static str),
) -> Counter {
    Counter {
        id,
        group,
        name,
        rollup,
        unit,
        stats,
        level,
        label,
        summary,
    }
}

/// cpu.usage.average: CPU use in hundredths of a percent of the capacity.
pub const CPU_USAGE: i32 = 1;
/// cpu.usagemhz.average.
pub const CPU_USAGE_MHZ: i32 = 5;
/// cpu.ready.summation: ms the VM's threads waited to run.
pub const CPU_READY: i32 = 11;
/// cpu.used.summation: ms of CPU used.
pub const CPU_USED: i32 = 12;
/// mem.usage.average.
pub const MEM_USAGE: i32 = 65537;
/// mem.active.average.
pub const MEM_ACTIVE: i32 = 65545;
/// mem.consumed.average.
pub const MEM_CONSUMED: i32 = 65611;
/// disk.usage.average.
pub const DISK_USAGE: i32 = 131073;
/// disk.numberRead.summation.
pub const DISK_NUMBER_READ: i32 = 131076;
/// disk.numberWrite.summation.
pub const DISK_NUMBER_WRITE: i32 = 131077;
/// disk.read.average.
pub const DISK_READ: i32 = 131078;
/// disk.write.average.
pub const DISK_WRITE: i32 = 131079;
/// net.usage.average.
pub const NET_USAGE: i32 = 196609;
/// net.packetsRx.summation.
pub const NET_PACKETS_RX: i32 = 196612;
/// net.packetsTx.summation.
pub const NET_PACKETS_TX: i32 = 196613;
/// net.received.average.
pub const NET_RECEIVED: i32 = 196614;
/// net.transmitted.average.
pub const NET_TRANSMITTED: i32 = 196615;
/// sys.uptime.latest.
pub const SYS_UPTIME: i32 = 262144;
/// virtualDisk.numberReadAveraged.average.
pub const VDISK_READS_PER_SECOND: i32 = 589824;
/// virtualDisk.numberWriteAveraged.average.
pub const VDISK_WRITES_PER_SECOND: i32 = 589825;
/// virtualDisk.read.average.
pub const VDISK_READ: i32 = 589826;
/// virtualDisk.write.average.
pub const VDISK_WRITE: i32 = 589827;

use Stats::{Absolute, Delta, Rate};

/// Every counter, by id.
pub const COUNTERS: &[Counter] = &[
    counter(
        CPU_USAGE,
        ("cpu", "usage", "average"),
        "percent",
        Rate,
        1,
        (
            "Usage",
            "CPU time used (the VM's vireo-vmm threads; the host's busy time) over the capacity",
        ),
    ),
    counter(
        CPU_USAGE_MHZ,
        ("cpu", "usagemhz", "average"),
        "megaHertz",
        Rate,
        1,
        (
            "Usage in MHz",
            "CPU time used over the interval, in MHz of the host's CPUs",
        ),
    ),
    counter(
        CPU_READY,
        ("cpu", "ready", "summation"),
        "millisecond",
        Delta,
        1,
        (
            "Ready",
            "Time the VM's threads were runnable but waited for a CPU (schedstat run delay)",
        ),
    ),
    counter(
        CPU_USED,
        ("cpu", "used", "summation"),
        "millisecond",
        Delta,
        3,
        ("Used", "CPU time used during the interval"),
    ),
    counter(
        MEM_USAGE,
        ("mem", "usage", "average"),
        "percent",
        Absolute,
        1,
        (
            "Usage",
            "Memory in use (host) or recently referenced (VM) over the memory size",
        ),
    ),
    counter(
        MEM_ACTIVE,
        ("mem", "active", "average"),
        "kiloBytes",
        Absolute,
        1,
        (
            "Active",
            "Memory recently used: the host's Active, a VM's referenced resident pages",
        ),
    ),
    counter(
        MEM_CONSUMED,
        ("mem", "consumed", "average"),
        "kiloBytes",
        Absolute,
        1,
        (
            "Consumed",
            "Memory in use: the host's total less available, a VM's resident pages",
        ),
    ),
    counter(
        DISK_USAGE,
        ("disk", "usage", "average"),
        "kiloBytesPerSecond",
        Rate,
        1,
        ("Usage", "Bytes read and written per second"),
    ),
    counter(
        DISK_NUMBER_READ,
        ("disk", "numberRead", "summation"),
        "number",
        Delta,
        3,
        (
            "Read requests",
            "Read requests completed during the interval",
        ),
    ),
    counter(
        DISK_NUMBER_WRITE,
        ("disk", "numberWrite", "summation"),
        "number",
        Delta,
        3,
        (
            "Write requests",
            "Write requests completed during the interval",
        ),
    ),
    counter(
        DISK_READ,
        ("disk", "read", "average"),
        "kiloBytesPerSecond",
        Rate,
        2,
        ("Read rate", "Bytes read per second"),
    ),
    counter(
        DISK_WRITE,
        ("disk", "write", "average"),
        "kiloBytesPerSecond",
        Rate,
        2,
        ("Write rate", "Bytes written per second"),
    ),
    counter(
        NET_USAGE,
        ("net", "usage", "average"),
        "kiloBytesPerSecond",
        Rate,
        1,
        ("Usage", "Bytes received and transmitted per second"),
    ),
    counter(
        NET_PACKETS_RX,
        ("net", "packetsRx", "summation"),
        "number",
        Delta,
        3,
        ("Packets received", "Packets received during the interval"),
    ),
    counter(
        NET_PACKETS_TX,
        ("net", "packetsTx", "summation"),
        "number",
        Delta,
        3,
        (
            "Packets transmitted",
            "Packets transmitted during the interval",
        ),
    ),
    counter(
        NET_RECEIVED,
        ("net", "received", "average"),
        "kiloBytesPerSecond",
        Rate,
        2,
        ("Data receive rate", "Bytes received per second"),
    ),
    counter(
        NET_TRANSMITTED,
        ("net", "transmitted", "average"),
        "kiloBytesPerSecond",
        Rate,
        2,
        ("Data transmit rate", "Bytes transmitted per second"),
    ),
    counter(
        SYS_UPTIME,
        ("sys", "uptime", "latest"),
        "second",
        Absolute,
        1,
        (
            "Uptime",
            "Seconds since the host booted or the VM powered on",
        ),
    ),
    counter(
        VDISK_READS_PER_SECOND,
        ("virtualDisk", "numberReadAveraged", "average"),
        "number",
        Rate,
        1,
        (
            "Average read requests per second",
            "Read requests the virtual disk completed per second",
        ),
    ),
    counter(
        VDISK_WRITES_PER_SECOND,
        ("virtualDisk", "numberWriteAveraged", "average"),
        "number",
        Rate,
        1,
        (
            "Average write requests per second",
            "Write requests the virtual disk completed per second",
        ),
    ),
    counter(
        VDISK_READ,
        ("virtualDisk", "read", "average"),
        "kiloBytesPerSecond",
        Rate,
        2,
        ("Read rate", "Bytes the virtual disk read per second"),
    ),
    counter(
        VDISK_WRITE,
        ("virtualDisk", "write", "average"),
        "kiloBytesPerSecond",
        Rate,
        2,
        ("Write rate", "Bytes the virtual disk wrote per second"),
    ),
];

/// The counter with id `id`.
pub fn by_id(id: i32) -> Option<&'static Counter> {
    COUNTERS.iter().find(|c| c.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique() {
        for (i, a) in COUNTERS.iter().enumerate() {
            for b in &COUNTERS[i + 1..] {
                assert_ne!(a.id, b.id);
                assert_ne!(a.full_name(), b.full_name());
            }
        }
        assert_eq!(by_id(CPU_USAGE).unwrap().full_name(), "cpu.usage.average");
    }
}
