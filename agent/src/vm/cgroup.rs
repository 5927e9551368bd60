//! A VM's cpuAllocation and memoryAllocation, enforced on its `vireo-vmm` process through Linux
//! control groups: each running VM's VMM is moved into a cgroup of its own beside vireod's
//! and given its CPU limit (a CFS quota: MHz over the host's MHz per core), its CPU shares (as
//! a weight relative to the other VMs') and its memory limit (plus the VMM's own overhead).
//! cgroup v2 (`cpu.max`, `cpu.weight`, `memory.max`) where vireod's cgroup delegates the cpu
//! and memory controllers; else the v1 hierarchies of a hybrid host (`cpu.cfs_quota_us`,
//! `cpu.shares`, `memory.limit_in_bytes`); without either the allocations are recorded only.
//! Reservations are not enforced (a single host has no admission control to make).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::reconfig::allocation::{self, Resource};
use super::spec::VmSpec;
use super::Vm;
use crate::inventory::host_facts::HostFacts;

/// The CFS period the CPU limit is a quota of, in microseconds.
const PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel takes, in microseconds.
const MIN_QUOTA_US: u64 = 1_000;
/// Memory the VMM needs beyond the guest's (its code, device queues, buffers), added to a
/// memory limit so that the limit bounds the guest rather than killing the VMM.
const VMM_OVERHEAD_BYTES: u64 = 64 << 20;

/// What the cgroup of a VM's VMM holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// CPU time per period, all vCPUs together; None: no limit.
    pub cpu_quota_us: Option<u64>,
    /// The VM's CPU shares (ESXi's scale: 1000 per vCPU at normal).
    pub cpu_shares: u64,
    /// Memory limit in bytes; None: no limit.
    pub memory_bytes: Option<u64>,
}

impl Limits {
    /// The limits `spec` records, on a host whose cores run at `cpu_mhz`.
    pub fn of(spec: &VmSpec, cpu_mhz: u64) -> Limits {
        let limit =
            |resource| allocation::limit(spec, resource).and_then(|l| u64::try_from(l).ok());
        Limits {
            cpu_quota_us: limit(Resource::Cpu)
                .map(|mhz| (mhz.saturating_mul(PERIOD_US) / cpu_mhz.max(1)).max(MIN_QUOTA_US)),
            cpu_shares: u64::try_from(allocation::shares(spec, Resource::Cpu)).unwrap_or(1),
            memory_bytes: limit(Resource::Memory).map(|mb| {
                mb.saturating_mul(1 << 20)
                    .saturating_add(VMM_OVERHEAD_BYTES)
            }),
        }
    }

    /// The files of a v2 cgroup and their contents.
    fn v2_files(&self) -> [(&'static str, String); 3] {
        let quota = self
            .cpu_quota_us
            .map_or_else(|| "max".to_string(), |q| q.to_string());
        [
            ("cpu.max", format!("{quota} {PERIOD_US}")),
            // cpu.weight is 1..10000 (100 by default); ESXi's shares are 1000 per vCPU.
            (
                "cpu.weight",
                (self.cpu_shares / 10).clamp(1, 10_000).to_string(),
            ),
            (
                "memory.max",
                self.memory_bytes
                    .map_or_else(|| "max".to_string(), |b| b.to_string()),
            ),
        ]
    }

    /// The files of the v1 cpu and memory cgroups and their contents.
    fn v1_files(&self) -> ([(&'static str, String); 3], (&'static str, String)) {
        let quota = self
            .cpu_quota_us
            .map_or_else(|| "-1".to_string(), |q| q.to_string());
        let cpu = [
            ("cpu.cfs_period_us", PERIOD_US.to_string()),
            ("cpu.cfs_quota_us", quota),
            // cpu.shares is 1024 for a normal task; ESXi's normal is 1000 per vCPU.
            (
                "cpu.shares",
                (self.cpu_shares * 1024 / 1000).max(2).to_string(),
            ),
        ];
        let memory = (
            "memory.limit_in_bytes",
            self.memory_bytes
                .map_or_else(|| "-1".to_string(), |b| b.to_string()),
        );
        (cpu, memory)
    }
}

/// Where this host's VM cgroups go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// Under vireod's own v2 cgroup.
    V2(PathBuf),
    /// Under vireod's cgroups in the v1 cpu and memory hierarchies.
    V1 { cpu: PathBuf, memory: PathBuf },
}

impl Layout {
    /// This process's layout, read once; None when no hierarchy is usable.
    fn here() -> Option<&'static Layout> {
        static LAYOUT: OnceLock<Option<Layout>> = OnceLock::new();
        LAYOUT
            .get_or_init(|| {
                let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
                let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
                let layout = Layout::find(&mountinfo, &cgroups, |dir| {
                    std::fs::read_to_string(dir.join("cgroup.subtree_control")).ok()
                });
                match &layout {
                    Some(layout) => tracing::info!(?layout, "VM allocations go to cgroups"),
                    None => tracing::warn!(
                        "no cgroup hierarchy with the cpu and memory controllers: VM \
                         allocations are recorded, not enforced"
                    ),
                }
                layout
            })
            .as_ref()
    }

    /// The layout `mountinfo` and `cgroups` (this process's /proc files) describe;
    /// `subtree` reads a v2 cgroup's `cgroup.subtree_control`.
    fn find(
        mountinfo: &str,
        cgroups: &str,
        subtree: impl Fn(&Path) -> Option<String>,
    ) -> Option<Layout> {
        let own = |controller: &str| {
            cgroups.lines().find_map(|line| {
                let mut fields = line.splitn(3, ':');
                let (_, names, path) = (fields.next()?, fields.next()?, fields.next()?);
                (names.split(',').any(|n| n == controller)).then(|| path.to_string())
            })
        };
        let mount = |fstype: &str, controller: Option<&str>| {
            mountinfo.lines().find_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let mut right = right.split(' ');
                let (kind, _, options) = (right.next()?, right.next()?, right.next()?);
                let point = left.split(' ').nth(4)?;
                let has = controller.is_none_or(|c| options.split(',').any(|o| o == c));
                (kind == fstype && has).then(|| PathBuf::from(point))
            })
        };
        let join = |base: PathBuf, path: &str| base.join(path.trim_start_matches('/'));
        if let (Some(base), Some(path)) = (mount("cgroup2", None), own("")) {
            let dir = join(base, &path);
            let delegated = subtree(&dir).is_some_and(|s| {
                let names: Vec<&str> = s.split_whitespace().collect();
                names.contains(&"cpu") && names.contains(&"memory")
            });
            if delegated {
                return Some(Layout::V2(dir));
            }
        }
        Some(Layout::V1 {
            cpu: join(mount("cgroup", Some("cpu"))?, &own("cpu")?),
            memory: join(mount("cgroup", Some("memory"))?, &own("memory")?),
        })
    }
}

/// The name of the cgroup of `vm`'s VMM: the same for the VM across vireod restarts.
fn group_name(vm: &Vm) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    vm.run_dir.hash(&mut hasher);
    format!("vireo-vm-{:016x}", hasher.finish())
}

/// The directories of `vm`'s cgroup (one on v2, the cpu and memory ones on v1); none where no
/// hierarchy is usable.
fn group_dirs(vm: &Vm) -> Vec<PathBuf> {
    let name = group_name(vm);
    match Layout::here() {
        Some(Layout::V2(parent)) => vec![parent.join(&name)],
        Some(Layout::V1 { cpu, memory }) => vec![cpu.join(&name), memory.join(&name)],
        None => Vec::new(),
    }
}

fn write_files<'a>(
    dir: &Path,
    files: impl IntoIterator<Item = &'a (&'static str, String)>,
) -> std::io::Result<()> {
    for (name, value) in files {
        std::fs::write(dir.join(name), value)?;
    }
    Ok(())
}

/// Gives `vm`'s cgroup the limits `spec` records (making it first if need be; called again
/// when they change); does nothing where no hierarchy is usable.
pub fn enforce(vm: &Vm, spec: &VmSpec) -> std::io::Result<()> {
    let Some(layout) = Layout::here() else {
        return Ok(());
    };
    let cpu_mhz = u64::try_from(HostFacts::read().cpu_mhz).unwrap_or(0);
    let limits = Limits::of(spec, cpu_mhz);
    let name = group_name(vm);
    let made = |dir: &Path, files: &[(&'static str, String)]| {
        std::fs::create_dir_all(dir)?;
        write_files(dir, files)
    };
    match layout {
        Layout::V2(parent) => made(&parent.join(&name), &limits.v2_files()),
        Layout::V1 { cpu, memory } => {
            let (cpu_files, memory_file) = limits.v1_files();
            made(&cpu.join(&name), &cpu_files)?;
            made(&memory.join(&name), &[memory_file])
        }
    }
}

/// Moves `vm`'s VMM (`pid`) into the VM's cgroup, made by [`enforce`]. This can take
/// milliseconds (a v1 hierarchy waits for an RCU grace period before it moves a process), so
/// it is done off the VM's lock and off the path of its start.
pub fn join(vm: &Vm, pid: i32) -> std::io::Result<()> {
    for dir in group_dirs(vm) {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
    }
    Ok(())
}

/// [`enforce`] for a VM that runs, a warning when it fails (the VM runs on unconstrained).
pub fn enforce_running(vm: &Vm, state: &super::VmState) {
    if state.process.is_none() {
        return;
    }
    if let Err(error) = enforce(vm, &state.spec) {
        tracing::warn!(vm = vm.id, "cannot enforce the VM's allocations: {error}");
    }
}

/// Removes the cgroup of `vm` once its VMM has ended.
pub fn remove(vm: &Vm) {
    for dir in group_dirs(vm) {
        if let Err(error) = std::fs::remove_dir(&dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove the cgroup {}: {error}", dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::vmx_file::VmxFile;

    fn spec(extra: &str) -> VmSpec {
        VmSpec::from_vmx(
            &VmxFile::parse(&format!("numvcpus = \"2\"\nmemsize = \"256\"\n{extra}")),
            "x",
        )
    }

    #[test]
    fn limits_follow_the_recorded_allocations() {
        let none = Limits::of(&spec(""), 2000);
        assert_eq!(
            none,
            Limits {
                cpu_quota_us: None,
                cpu_shares: 2000,
                memory_bytes: None
            }
        );
        assert_eq!(none.v2_files()[0].1, "max 100000");
        assert_eq!(none.v1_files().0[2].1, "2048");
        let set = Limits::of(
            &spec(
                "sched.cpu.max = \"500\"\nsched.cpu.shares = \"high\"\nsched.mem.max = \"128\"\n",
            ),
            2000,
        );
        assert_eq!(set.cpu_quota_us, Some(25_000), "500 MHz of a 2000 MHz core");
        assert_eq!(set.cpu_shares, 4000);
        assert_eq!(set.memory_bytes, Some((128 << 20) + VMM_OVERHEAD_BYTES));
        assert_eq!(set.v2_files()[1].1, "400");
        assert_eq!(set.v1_files().0[1].1, "25000");
        let tiny = Limits::of(&spec("sched.cpu.max = \"1\"\n"), 3000);
        assert_eq!(tiny.cpu_quota_us, Some(MIN_QUOTA_US));
    }

    #[test]
    fn the_layout_prefers_delegated_v2_and_falls_back_to_v1() {
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                         32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                         35 31 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                         40 31 0:40 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let cgroups = "4:memory:/job/7\n1:cpu:/\n0::/svc\n";
        let v1 = Layout::find(mountinfo, cgroups, |_| Some("hugetlb".into()));
        assert_eq!(
            v1,
            Some(Layout::V1 {
                cpu: "/sys/fs/cgroup/cpu/".into(),
                memory: "/sys/fs/cgroup/memory/job/7".into(),
            })
        );
        let v2 = Layout::find(mountinfo, cgroups, |dir| {
            (dir == Path::new("/sys/fs/cgroup/unified/svc")).then(|| "cpu io memory".into())
        });
        assert_eq!(v2, Some(Layout::V2("/sys/fs/cgroup/unified/svc".into())));
        assert_eq!(Layout::find("", cgroups, |_| None), None);
    }
}
