//! Virtual machines: each a folder on a datastore with a `.vmx` config, registered under a
//! stable integer MoID (recorded in `<data_dir>/vm-inventory`), run by one `vireo-vmm` process
//! while powered on. This module holds the registry; [`lifecycle`] the power operations,
//! [`properties`] what clients read, [`tools_host`] the host end of the tools channel.

pub mod beneath;
pub mod cdroms;
pub mod cgroup;
pub mod change_tracking;
pub mod clone;
pub mod config_option;
pub mod control;
pub mod cpu_usage;
pub mod create;
pub mod datastore_path;
pub mod destroy;
pub mod device_change;
pub mod disks;
pub mod guest_os;
pub mod handoff;
pub mod jail;
pub mod journal;
pub mod lifecycle;
pub mod logs;
pub mod macs;
pub mod network;
pub mod paced_delete;
pub mod process;
pub mod properties;
pub mod question;
pub mod reconfig;
pub mod recovery;
pub mod removal;
pub mod screenshot;
pub mod slots;
pub mod snapshots;
pub mod spec;
pub mod standby;
pub mod tools_host;
pub mod tools_installer;
pub mod uuid;
pub mod vmx_file;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use vireo_api::MoRef;

use crate::host::Host;
use crate::inventory::esxi::DatastoreDir;
use datastore_path::{DatastorePath, DatastorePathError};
use process::VmmProcess;
use spec::VmSpec;
use tools_host::ToolsState;
use vmx_file::VmxFile;

/// A VM's power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// No process, no saved state.
    Off,
    /// A VMM process runs it.
    On,
    /// Its state and memory are saved in the VM folder's `suspend/`.
    Suspended,
}

impl Power {
    /// The VirtualMachinePowerState value.
    pub fn as_str(self) -> &'static str {
        match self {
            Power::Off => "poweredOff",
            Power::On => "poweredOn",
            Power::Suspended => "suspended",
        }
    }
}

/// Why vireod expects the running VMM to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopping {
    /// PowerOff or TerminateVM: the VM ends powered off.
    PowerOff,
    /// SuspendVM: the VM ends suspended.
    Suspend,
}

/// What changes while a VM lives.
pub struct VmState {
    /// Its configuration (the `.vmx`).
    pub spec: VmSpec,
    /// Power state.
    pub power: Power,
    /// The running VMM.
    pub process: Option<Arc<VmmProcess>>,
    /// Bumped whenever a VMM starts or ends (operations wait for it to move).
    pub generation: u64,
    /// When the VM was last powered on (µs since the epoch).
    pub boot_time: Option<i64>,
    /// When it was suspended.
    pub suspend_time: Option<i64>,
    /// An end of the process vireod asked for.
    pub stopping: Option<Stopping>,
    /// The guest tools as last heard.
    pub tools: ToolsState,
    /// Guest-visible size of each disk, in bytes (read from the images).
    pub disk_capacities: Vec<u64>,
    /// Its snapshots (the `.vmsd`).
    pub snapshots: snapshots::vmsd::SnapshotList,
    /// What it shows of each disk: layer chains, changeIds (from the disk trees).
    pub disk_views: Vec<disks::trees::DiskView>,
    /// TAP devices created for the running VMM.
    pub taps: Vec<String>,
    /// Whether each NIC's cable is plugged in while the VMM runs (empty while it does not).
    pub nic_links: Vec<bool>,
    /// What the running VMM's CD-ROM drives hold (empty while it does not run).
    pub cdroms: cdroms::Drives,
    /// The question the VM waits on (`runtime.question`).
    pub question: Option<question::Question>,
    /// The answer to a question a task waits on ("moved or copied?"), until the task reads it.
    pub answer: Option<String>,
    /// Set once the VM is unregistered or destroyed.
    pub removed: bool,
    /// CPU its VMM used over the last sample, in MHz ([`cpu_usage`]).
    pub cpu_usage_mhz: i32,
    /// The DHCP leases vireod's dnsmasq holds for its NICs' MACs.
    pub leases: Vec<network::leases::Lease>,
    /// A VMM started ahead for the resume of the suspended VM ([`standby`]).
    pub standby: Option<standby::Standby>,
}

/// One registered VM.
pub struct Vm {
    /// Its integer id.
    pub id: u32,
    /// `VirtualMachine:<id>`.
    pub moref: MoRef,
    /// `[datastore1] folder/name.vmx`.
    pub vmx_path: DatastorePath,
    /// The `.vmx` on the host.
    pub vmx_file: PathBuf,
    /// The VM folder on the host.
    pub dir: PathBuf,
    /// Runtime files (sockets, pid file): `<data_dir>/run/vm-<id>`.
    pub run_dir: PathBuf,
    state: Mutex<VmState>,
    changed: Condvar,
}

impl Vm {
    /// Locks the VM's state.
    pub fn state(&self) -> MutexGuard<'_, VmState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the VM's state for a change: its properties are published when the edit ends.
    pub fn edit<'a>(&'a self, host: &'a Host) -> properties::VmEdit<'a> {
        properties::VmEdit::new(host, self, self.state())
    }

    /// Wakes operations waiting for this VM's state to move.
    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Waits (up to `timeout`) until `done` holds; returns the guard and whether it held.
    pub fn wait_until<'a>(
        &'a self,
        guard: MutexGuard<'a, VmState>,
        timeout: std::time::Duration,
        done: impl FnMut(&mut VmState) -> bool,
    ) -> (MutexGuard<'a, VmState>, bool) {
        let mut done = done;
        let (guard, result) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| !done(s))
            .unwrap_or_else(|p| p.into_inner());
        (guard, !result.timed_out())
    }

    /// A file of the VM folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Where SuspendVM saves the VM.
    pub fn suspend_dir(&self) -> PathBuf {
        self.file("suspend")
    }

    /// Where one of its files is: `file_name` as the `.vmx` stores it (a datastore path, or a
    /// name relative to the VM folder; absolute names and `..` are refused).
    pub fn locate(&self, file_name: &str) -> Result<DatastorePath, DatastorePathError> {
        if file_name.starts_with('[') {
            return DatastorePath::parse(file_name);
        }
        if Path::new(file_name).is_absolute() {
            return Err(DatastorePathError::Escapes(file_name.to_string()));
        }
        DatastorePath::parse(&self.vmx_path.parent().join(file_name).to_string())
    }

    /// The host path of one of its existing files (a disk), through the datastore resolver.
    pub fn disk_path(
        &self,
        file_name: &str,
        datastores: &[DatastoreDir],
    ) -> Result<PathBuf, DatastorePathError> {
        self.locate(file_name)?.resolve(datastores)
    }

    /// The datastore path of one of its files.
    pub fn datastore_path_of(&self, file_name: &str) -> String {
        if file_name.starts_with('[') {
            file_name.to_string()
        } else {
            self.vmx_path.parent().join(file_name).to_string()
        }
    }
}

/// Every registered VM.
pub struct Vms {
    data_dir: PathBuf,
    table: Mutex<BTreeMap<u32, Arc<Vm>>>,
    /// The MACs changes in flight are giving to NICs.
    pub macs: macs::Claims,
}

/// Why a VM could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The path is not a usable datastore path.
    #[error(transparent)]
    Path(#[from] datastore_path::DatastorePathError),
    /// The `.vmx` could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The `.vmx` is at the datastore's root (a VM folder is always a subfolder).
    #[error("{0}: a VM's .vmx must be in a folder of the datastore, not at its root")]
    AtRoot(String),
    /// Already registered.
    #[error("{0} is already registered")]
    AlreadyRegistered(String),
    /// The inventory file could not be written.
    #[error("cannot record the inventory: {0}")]
    Record(std::io::Error),
}

impl Vms {
    /// An empty registry keeping its records under `data_dir`.
    pub fn new(data_dir: &Path) -> Vms {
        Vms {
            data_dir: data_dir.to_owned(),
            table: Mutex::new(BTreeMap::new()),
            macs: macs::Claims::default(),
        }
    }

    fn inventory_file(&self) -> PathBuf {
        self.data_dir.join("vm-inventory")
    }

    /// A VM by reference.
    pub fn get(&self, moref: &MoRef) -> Option<Arc<Vm>> {
        if &*moref.ty != "VirtualMachine" {
            return None;
        }
        let id: u32 = moref.id.parse().ok()?;
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Every VM.
    pub fn all(&self) -> Vec<Arc<Vm>> {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The VM registered from this `.vmx`, if any.
    pub fn by_path(&self, path: &DatastorePath) -> Option<Arc<Vm>> {
        self.all().into_iter().find(|vm| vm.vmx_path == *path)
    }

    /// Rebuilds the registry at start: the recorded VMs (or, on the very first start, every
    /// `.vmx` one folder deep in the datastores), each re-adopting its running VMM.
    pub fn load(host: &Arc<Host>) {
        let vms = &host.vms;
        let recorded = std::fs::read_to_string(vms.inventory_file());
        let entries: Vec<(Option<u32>, DatastorePath)> = match &recorded {
            Ok(text) => text
                .lines()
                .filter_map(|line| {
                    let (id, path) = line.split_once('\t')?;
                    Some((Some(id.parse().ok()?), DatastorePath::parse(path).ok()?))
                })
                .collect(),
            Err(_) => scan(&host.datastores())
                .into_iter()
                .map(|p| (None, p))
                .collect(),
        };
        for (id, path) in entries {
            if let Err(error) = vms.register(host, &path, id) {
                tracing::warn!(%path, "VM not registered: {error}");
            }
        }
        if recorded.is_err() {
            if let Err(error) = vms.record() {
                tracing::warn!("cannot record the VM inventory: {error}");
            }
        }
        recovery::finish_destroys(host);
    }

    /// Registers the VM whose `.vmx` is at `path` (under `id`, or the next free one).
    pub fn register(
        &self,
        host: &Arc<Host>,
        path: &DatastorePath,
        id: Option<u32>,
    ) -> Result<Arc<Vm>, RegisterError> {
        if path.is_at_root() {
            return Err(RegisterError::AtRoot(path.to_string()));
        }
        let vmx_file = path.resolve(&host.datastores())?;
        let vmx = VmxFile::read(&vmx_file).map_err(|source| RegisterError::Read {
            path: path.to_string(),
            source,
        })?;
        let default_name = vmx_file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut spec = VmSpec::from_vmx(&vmx, &default_name);
        if spec.uuid.is_empty() {
            spec.uuid = uuid::random();
        }
        if spec.instance_uuid.is_empty() {
            spec.instance_uuid = uuid::random();
        }
        let vm = {
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            if table.values().any(|vm| vm.vmx_path == *path) {
                return Err(RegisterError::AlreadyRegistered(path.to_string()));
            }
            let id = id.unwrap_or_else(|| table.keys().next_back().map_or(1, |last| last + 1));
            let dir = vmx_file.parent().map(Path::to_owned).unwrap_or_default();
            let vm = Arc::new(Vm {
                id,
                moref: MoRef::new("VirtualMachine", id.to_string()),
                vmx_path: path.clone(),
                vmx_file,
                dir,
                run_dir: self.data_dir.join("run").join(format!("vm-{id}")),
                state: Mutex::new(VmState {
                    spec,
                    power: Power::Off,
                    process: None,
                    generation: 0,
                    boot_time: None,
                    suspend_time: None,
                    stopping: None,
                    tools: ToolsState::default(),
                    disk_capacities: Vec::new(),
                    snapshots: Default::default(),
                    disk_views: Vec::new(),
                    taps: Vec::new(),
                    nic_links: Vec::new(),
                    cdroms: cdroms::Drives::default(),
                    question: None,
                    answer: None,
                    removed: false,
                    cpu_usage_mhz: 0,
                    leases: Vec::new(),
                    standby: None,
                }),
                changed: Condvar::new(),
            });
            table.insert(id, vm.clone());
            vm
        };
        lifecycle::bring_up(host, &vm);
        Ok(vm)
    }

    /// Forgets a VM (its files stay).
    pub fn unregister(&self, vm: &Vm) -> Result<(), std::io::Error> {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&vm.id);
        self.record()
    }

    /// Writes `<data_dir>/vm-inventory`: `id<TAB>[datastore] path` per VM.
    pub fn record(&self) -> Result<(), std::io::Error> {
        let text: String = self
            .all()
            .iter()
            .map(|vm| format!("{}\t{}\n", vm.id, vm.vmx_path))
            .collect();
        vmx_file::write_atomically(&self.inventory_file(), text.as_bytes())
    }
}

/// Every `.vmx` one folder deep in the datastores, in path order.
fn scan(datastores: &[DatastoreDir]) -> Vec<DatastorePath> {
    let mut found = Vec::new();
    for ds in datastores {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&ds.dir)
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        dirs.retain(|p| p.is_dir());
        dirs.sort();
        for dir in dirs {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
                .unwrap_or_default();
            files.retain(|p| p.extension().is_some_and(|e| e == "vmx"));
            files.sort();
            for file in files {
                if let Ok(relative) = file.strip_prefix(&ds.dir) {
                    found.push(DatastorePath {
                        datastore: ds.name.clone(),
                        path: relative.to_string_lossy().into_owned(),
                    });
                }
            }
        }
    }
    found
}
