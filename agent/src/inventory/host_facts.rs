//! Facts about this machine that the ESXi host object reports: CPU model and topology,
//! memory, boot time, and a directory's filesystem capacity and free space.

use std::path::Path;

/// CPU and memory facts read from /proc.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `vendor_id` from /proc/cpuinfo.
    pub cpu_vendor: String,
    /// CPU MHz of the first processor.
    pub cpu_mhz: i32,
    /// Sockets (distinct physical ids).
    pub cpu_packages: i16,
    /// Physical cores in total.
    pub cpu_cores: i16,
    /// Logical processors.
    pub cpu_threads: i16,
    /// Total memory in bytes.
    pub memory_bytes: i64,
    /// Boot time, microseconds since the epoch.
    pub boot_time_micros: i64,
    /// Host name.
    pub hostname: String,
}

impl HostFacts {
    /// Reads the facts of this machine.
    pub fn read() -> HostFacts {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
        HostFacts::parse(
            &cpuinfo,
            &meminfo,
            &uptime,
            super::now_micros(),
            crate::tls::hostname(),
        )
    }

    /// Parses /proc/cpuinfo, /proc/meminfo and /proc/uptime text.
    pub fn parse(
        cpuinfo: &str,
        meminfo: &str,
        uptime: &str,
        now_micros: i64,
        hostname: String,
    ) -> HostFacts {
        let field = |key: &str| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
        };
        let threads = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(1);
        let mut packages: Vec<&str> = cpuinfo
            .lines()
            .filter(|l| l.starts_with("physical id"))
            .filter_map(|l| l.split(':').nth(1))
            .map(str::trim)
            .collect();
        packages.sort();
        packages.dedup();
        let packages = packages.len().max(1);
        let cores_per_package = field("cpu cores")
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(threads / packages);
        let mem_kib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        let uptime_secs = uptime
            .split_whitespace()
            .next()
            .and_then(|u| u.parse::<f64>().ok())
            .unwrap_or(0.0);
        HostFacts {
            cpu_model: field("model name").unwrap_or_else(|| "Unknown CPU".into()),
            cpu_vendor: field("vendor_id").unwrap_or_else(|| "unknown".into()),
            cpu_mhz: field("cpu MHz")
                .and_then(|m| m.parse::<f64>().ok())
                .map(|m| m as i32)
                .unwrap_or(0),
            cpu_packages: packages as i16,
            cpu_cores: (cores_per_package * packages).max(1) as i16,
            cpu_threads: threads as i16,
            memory_bytes: mem_kib * 1024,
            boot_time_micros: now_micros - (uptime_secs * 1e6) as i64,
            hostname,
        }
    }
}

/// Capacity and free bytes of the filesystem holding `dir`.
pub fn filesystem_space(dir: &Path) -> std::io::Result<(i64, i64)> {
    let stat = nix::sys::statvfs::statvfs(dir)?;
    let block = stat.fragment_size() as i64;
    Ok((
        stat.blocks() as i64 * block,
        stat.blocks_available() as i64 * block,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_topology_memory_and_boot_time() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2445.404\nphysical id\t: 0\ncpu cores\t: 2\n\nprocessor\t: 1\nphysical id\t: 0\ncpu cores\t: 2\n";
        let facts = HostFacts::parse(
            cpuinfo,
            "MemTotal:       24683656 kB\n",
            "100.50 3.0\n",
            1_000_000_000,
            "h".into(),
        );
        assert_eq!(
            (facts.cpu_packages, facts.cpu_cores, facts.cpu_threads),
            (1, 2, 2)
        );
        assert_eq!(facts.cpu_model, "AMD EPYC");
        assert_eq!(facts.cpu_mhz, 2445);
        assert_eq!(facts.memory_bytes, 24683656 * 1024);
        assert_eq!(facts.boot_time_micros, 1_000_000_000 - 100_500_000);
    }

    #[test]
    fn statvfs_of_temp_dir_is_sane() {
        let (capacity, free) = filesystem_space(&std::env::temp_dir()).unwrap();
        assert!(capacity > 0 && free >= 0 && free <= capacity);
    }
}
