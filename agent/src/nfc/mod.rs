//! HttpNfcLease objects handed out by VirtualMachine.ExportVm: the registry of live leases,
//! their state machine (initializing → ready → done, or error when aborted or timed out),
//! the `info` they publish (one deviceUrl per disk, file sizes once a download completed),
//! and the lease timeout ESXi applies (no progress or download for `LEASE_TIMEOUT` → error
//! Timedout). The disks themselves are served by `download`.

pub mod download;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vireo_api::{DataObject, Fault, MoRef, Value};

use crate::faults;
use crate::host::Host;
use crate::locks::lock;

/// How long a lease lives without progress reports or transfers (ESXi's `leaseTimeout`).
pub const LEASE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long an ended lease stays in the inventory for clients to read its state.
const ENDED_LEASE_KEPT: Duration = Duration::from_secs(60);

/// One disk an export lease serves.
#[derive(Debug, Clone)]
pub struct ExportDisk {
    /// The deviceUrl key (the disk's device, as CreateDescriptor's ovfFiles name it back).
    pub key: String,
    /// The file name in the URL and the OVF package (`disk-N.vmdk`).
    pub target_id: String,
    /// The top layer of the disk's chain.
    pub top: PathBuf,
    /// The disk's size in bytes.
    pub capacity: u64,
}

/// The deviceUrl `importKey` (and CreateImportSpec's `fileItem.deviceId`) of the disk at SCSI
/// `unit` of the VM `vm_name` an import makes.
pub fn import_key(vm_name: &str, unit: i32) -> String {
    format!("/{vm_name}/ParaVirtualSCSIController0:{unit}")
}

/// Where a lease is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Being prepared.
    Initializing,
    /// Its URLs can be downloaded.
    Ready,
    /// Completed by the client.
    Done,
    /// Aborted or timed out.
    Error,
}

impl LeaseState {
    fn name(self) -> &'static str {
        match self {
            LeaseState::Initializing => "initializing",
            LeaseState::Ready => "ready",
            LeaseState::Done => "done",
            LeaseState::Error => "error",
        }
    }
}

/// What changes during a lease's life.
struct Progress {
    state: LeaseState,
    timed_out: bool,
    last_activity: Instant,
    file_sizes: Vec<Option<u64>>,
}

/// An export lease.
pub struct Lease {
    /// The HttpNfcLease object.
    pub moref: MoRef,
    /// The exported VM.
    pub entity: MoRef,
    /// The disks it serves, in the VM's order.
    pub disks: Vec<ExportDisk>,
    progress: Mutex<Progress>,
}

impl Lease {
    /// The lease's state now.
    pub fn state(&self) -> LeaseState {
        lock(&self.progress).state
    }

    /// Records client activity (a progress report or a transfer), which keeps the lease alive.
    pub fn touch(&self) {
        lock(&self.progress).last_activity = Instant::now();
    }
}

/// The leases by id (the id is the lease object's moid and part of its URLs), kept
/// `ENDED_LEASE_KEPT` after they end.
#[derive(Default)]
pub struct Leases {
    map: Mutex<HashMap<String, Arc<Lease>>>,
}

impl Leases {
    /// The lease `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Lease>> {
        lock(&self.map).get(id).cloned()
    }

    /// Whether a lease that has not ended reads `entity`'s disks (it must not power on).
    pub fn exporting(&self, entity: &MoRef) -> bool {
        lock(&self.map).values().any(|lease| {
            lease.entity == *entity
                && matches!(lease.state(), LeaseState::Initializing | LeaseState::Ready)
        })
    }
}

/// Creates an export lease for `entity`'s `disks`: the object appears initializing, becomes
/// ready once its info is published, and times out after `LEASE_TIMEOUT` without activity.
pub fn start_export(host: &Arc<Host>, entity: &MoRef, disks: Vec<ExportDisk>) -> MoRef {
    let schema = host.schema;
    let id = crate::vm::uuid::random();
    let moref = MoRef::new("HttpNfcLease", id.as_str());
    let lease = Arc::new(Lease {
        moref: moref.clone(),
        entity: entity.clone(),
        progress: Mutex::new(Progress {
            state: LeaseState::Initializing,
            timed_out: false,
            last_activity: Instant::now(),
            file_sizes: vec![None; disks.len()],
        }),
        disks,
    });
    host.mutate(|inv| {
        inv.insert(schema, moref.clone(), None);
        inv.set(schema, &moref, "initializeProgress", 0);
        inv.set(schema, &moref, "transferProgress", 0);
        inv.set(schema, &moref, "mode", "pushOrGet");
        inv.set(
            schema,
            &moref,
            "capabilities",
            DataObject::of(schema, "HttpNfcLeaseCapabilities")
                .with(schema, "pullModeSupported", false)
                .with(schema, "corsSupported", false),
        );
        inv.set(
            schema,
            &moref,
            "state",
            state_value(host, LeaseState::Initializing),
        );
    });
    lock(&host.leases.map).insert(id, lease.clone());
    let host = host.clone();
    tokio::spawn(async move {
        {
            let mut progress = lock(&lease.progress);
            if progress.state == LeaseState::Initializing {
                progress.state = LeaseState::Ready;
                progress.last_activity = Instant::now();
            }
        }
        publish(&host, &lease);
        watch(&host, &lease).await;
    });
    moref
}

/// Ends the lease when it stays idle too long, and forgets it a while after it ended.
async fn watch(host: &Arc<Host>, lease: &Arc<Lease>) {
    loop {
        let (state, idle) = {
            let progress = lock(&lease.progress);
            (progress.state, progress.last_activity.elapsed())
        };
        if matches!(state, LeaseState::Done | LeaseState::Error) {
            break;
        }
        if idle >= LEASE_TIMEOUT {
            let fault = Fault::new(host.schema, "Timedout", "The lease timed out");
            if end(host, lease, LeaseState::Error, Some(fault.data), true).is_ok() {
                break;
            }
        }
        tokio::time::sleep((LEASE_TIMEOUT.saturating_sub(idle)).max(Duration::from_secs(1))).await;
    }
    tokio::time::sleep(ENDED_LEASE_KEPT).await;
    lock(&host.leases.map).remove(&*lease.moref.id);
    host.mutate(|inv| inv.remove(&lease.moref));
}

/// The lease behind the HttpNfcLease object `this`, or ManagedObjectNotFound.
pub fn lease_of(host: &Host, this: &MoRef) -> Result<Arc<Lease>, Fault> {
    host.leases
        .get(&this.id)
        .ok_or_else(|| Fault::managed_object_not_found(host.schema, this))
}

/// The fault for a call on a lease that is no longer ready.
fn not_ready(host: &Host, lease: &Lease) -> Fault {
    let progress = lock(&lease.progress);
    if progress.timed_out {
        Fault::new(host.schema, "Timedout", "The lease timed out")
    } else {
        faults::invalid_state(
            host.schema,
            format!("the lease is {}", progress.state.name()),
        )
    }
}

/// HttpNfcLeaseProgress: keeps the lease alive and records the client's percentage.
pub fn report_progress(host: &Host, lease: &Lease, percent: i64) -> Result<(), Fault> {
    match lease.state() {
        LeaseState::Ready | LeaseState::Initializing => {}
        _ => return Err(not_ready(host, lease)),
    }
    lease.touch();
    let percent = percent.clamp(0, 100) as i32;
    host.mutate(|inv| inv.set(host.schema, &lease.moref, "transferProgress", percent));
    Ok(())
}

/// Moves a ready (or initializing) lease to `state` (done, or error with the MethodFault
/// object `fault`).
pub fn end(
    host: &Host,
    lease: &Lease,
    state: LeaseState,
    fault: Option<DataObject>,
    timed_out: bool,
) -> Result<(), Fault> {
    {
        let mut progress = lock(&lease.progress);
        let allowed = match state {
            LeaseState::Done => progress.state == LeaseState::Ready,
            _ => matches!(progress.state, LeaseState::Ready | LeaseState::Initializing),
        };
        if !allowed {
            drop(progress);
            return Err(not_ready(host, lease));
        }
        progress.state = state;
        progress.timed_out = timed_out;
    }
    let schema = host.schema;
    host.mutate(|inv| {
        inv.set(schema, &lease.moref, "state", state_value(host, state));
        if state == LeaseState::Done {
            inv.set(schema, &lease.moref, "transferProgress", 100);
        }
        if let Some(fault) = fault {
            inv.set(schema, &lease.moref, "error", fault);
        }
    });
    Ok(())
}

/// Records that disk `index` was sent whole in `bytes` bytes (deviceUrl.fileSize).
pub fn record_file_size(host: &Host, lease: &Lease, index: usize, bytes: u64) {
    if let Some(size) = lock(&lease.progress).file_sizes.get_mut(index) {
        *size = Some(bytes);
    }
    publish(host, lease);
}

/// Publishes the lease's `info` and `state`.
fn publish(host: &Host, lease: &Lease) {
    let schema = host.schema;
    let (state, sizes) = {
        let progress = lock(&lease.progress);
        (progress.state, progress.file_sizes.clone())
    };
    let urls: Vec<Value> = lease
        .disks
        .iter()
        .zip(sizes)
        .map(|(disk, size)| {
            let mut url = DataObject::of(schema, "HttpNfcLeaseDeviceUrl")
                .with(schema, "key", disk.key.as_str())
                .with(schema, "importKey", disk.key.as_str())
                .with(
                    schema,
                    "url",
                    format!("https://*/nfc/{}/{}", lease.moref.id, disk.target_id),
                )
                .with(schema, "sslThumbprint", host.certificate_sha1.as_str())
                .with(schema, "disk", true)
                .with(schema, "targetId", disk.target_id.as_str());
            if let Some(size) = size {
                url.set(schema, "fileSize", size as i64);
            }
            url.into()
        })
        .collect();
    let total_kb: u64 = lease.disks.iter().map(|d| d.capacity.div_ceil(1024)).sum();
    let info = DataObject::of(schema, "HttpNfcLeaseInfo")
        .with(schema, "lease", lease.moref.clone())
        .with(schema, "entity", lease.entity.clone())
        .with(
            schema,
            "deviceUrl",
            Value::Array(schema.known_type("HttpNfcLeaseDeviceUrl"), urls),
        )
        .with(schema, "totalDiskCapacityInKB", total_kb as i64)
        .with(schema, "leaseTimeout", LEASE_TIMEOUT.as_secs() as i32);
    host.mutate(|inv| {
        inv.set(schema, &lease.moref, "info", info);
        inv.set(schema, &lease.moref, "initializeProgress", 100);
        inv.set(schema, &lease.moref, "state", state_value(host, state));
    });
}

fn state_value(host: &Host, state: LeaseState) -> Value {
    Value::enumeration(host.schema, "HttpNfcLeaseState", state.name())
}
