//! HttpNfcLease objects handed out by VirtualMachine.ExportVm and ResourcePool.ImportVApp:
//! the registry of live leases, their state machine (initializing → ready → done, or error
//! when aborted or timed out), the `info` they publish (one deviceUrl per disk, file sizes
//! once a transfer completed), the manifest (SHA-1 of each file sent or received), and the
//! lease timeout ESXi applies (no progress or transfer for `lease_timeout_secs` → error
//! Timedout). An import lease that ends in error removes the VM it made, once no upload
//! runs any more. Disks go out through `download` and come in through `upload`.

pub mod download;
pub mod endpoint;
pub mod upload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vireo_api::{DataObject, Fault, MoRef, Value};

use crate::faults;
use crate::host::Host;
use crate::locks::lock;

/// How long an ended lease stays in the inventory for clients to read its state.
const ENDED_LEASE_KEPT: Duration = Duration::from_secs(60);

/// Which way a lease moves disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// ExportVm: clients GET the disks.
    Export,
    /// ImportVApp: clients PUT or POST the disks.
    Import,
}

/// One disk a lease serves or receives.
#[derive(Debug, Clone)]
pub struct LeaseDisk {
    /// The deviceUrl key (the disk's device, as CreateDescriptor's ovfFiles name it back).
    pub key: String,
    /// The deviceUrl importKey (CreateImportSpec's `fileItem.deviceId`; the key on export).
    pub import_key: String,
    /// The file name in the URL and the OVF package (`disk-N.vmdk`).
    pub target_id: String,
    /// Export: the top layer of the disk's chain; import: the disk file an upload replaces.
    pub path: PathBuf,
    /// The disk's size in bytes.
    pub capacity: u64,
}

/// What a completed transfer of one disk's file recorded.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Bytes sent or received.
    pub bytes: u64,
    /// Their SHA-1, lowercase hex.
    pub sha1: String,
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
    transfers: Vec<Option<Transfer>>,
    /// Import: which disks an upload is writing now.
    uploading: Vec<bool>,
    /// Import: the partial VM was removed.
    cleaned: bool,
}

/// A lease.
pub struct Lease {
    /// The HttpNfcLease object.
    pub moref: MoRef,
    /// The exported or imported VM.
    pub entity: MoRef,
    /// Which way it moves disks.
    pub direction: Direction,
    /// The disks it serves or receives, in the VM's order.
    pub disks: Vec<LeaseDisk>,
    /// How long it lives without activity.
    pub timeout: Duration,
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

    /// Import: claims disk `index` for an upload (false when one runs or one completed).
    pub fn begin_upload(&self, index: usize) -> bool {
        let mut progress = lock(&self.progress);
        let free = progress.uploading.get(index) == Some(&false)
            && progress.transfers.get(index).is_some_and(Option::is_none);
        if free {
            progress.uploading[index] = true;
        }
        free
    }

    /// Whether any upload runs.
    fn uploads_running(&self) -> bool {
        lock(&self.progress).uploading.contains(&true)
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

    /// Whether a lease that has not ended reads or writes `entity`'s disks (it must not
    /// power on).
    pub fn transferring(&self, entity: &MoRef) -> bool {
        lock(&self.map).values().any(|lease| {
            lease.entity == *entity
                && matches!(lease.state(), LeaseState::Initializing | LeaseState::Ready)
        })
    }
}

/// Creates a lease moving `entity`'s `disks` in `direction`: the object appears
/// initializing, becomes ready once its info is published, and times out after the
/// configured lease timeout without activity.
pub fn start(
    host: &Arc<Host>,
    entity: &MoRef,
    direction: Direction,
    disks: Vec<LeaseDisk>,
) -> MoRef {
    let schema = host.schema;
    let id = crate::vm::uuid::random();
    let moref = MoRef::new("HttpNfcLease", id.as_str());
    let lease = Arc::new(Lease {
        moref: moref.clone(),
        entity: entity.clone(),
        direction,
        timeout: Duration::from_secs(host.config.lease_timeout_secs),
        progress: Mutex::new(Progress {
            state: LeaseState::Initializing,
            timed_out: false,
            last_activity: Instant::now(),
            transfers: vec![None; disks.len()],
            uploading: vec![false; disks.len()],
            cleaned: false,
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
        if idle >= lease.timeout {
            let fault = faults::timed_out(host.schema, "The lease timed out");
            if end(host, lease, LeaseState::Error, Some(fault.data), true).is_ok() {
                break;
            }
        }
        tokio::time::sleep((lease.timeout.saturating_sub(idle)).max(Duration::from_secs(1))).await;
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
        faults::timed_out(host.schema, "The lease timed out")
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
/// object `fault`). An import completes only when no upload runs; one that ends in error
/// loses its VM.
pub fn end(
    host: &Arc<Host>,
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
        if state == LeaseState::Done && progress.uploading.contains(&true) {
            return Err(faults::invalid_state(
                host.schema,
                "an upload through the lease is still running",
            ));
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
    if state == LeaseState::Error {
        remove_partial_import(host, lease);
    }
    Ok(())
}

/// Import: an upload of disk `index` ended (`transfer` when it completed); removes the
/// partial VM when the lease ended in error meanwhile.
pub fn end_upload(host: &Arc<Host>, lease: &Lease, index: usize, transfer: Option<Transfer>) {
    {
        let mut progress = lock(&lease.progress);
        progress.uploading[index] = false;
        if transfer.is_some() {
            progress.transfers[index] = transfer;
        }
        progress.last_activity = Instant::now();
    }
    publish(host, lease);
    remove_partial_import(host, lease);
}

/// Destroys the VM of an import lease that ended in error, once no upload writes into its
/// folder any more (whoever comes last does it, once).
fn remove_partial_import(host: &Arc<Host>, lease: &Lease) {
    if lease.direction != Direction::Import || lease.uploads_running() {
        return;
    }
    {
        let mut progress = lock(&lease.progress);
        if progress.state != LeaseState::Error || progress.cleaned {
            return;
        }
        progress.cleaned = true;
    }
    let Some(vm) = host.vms.get(&lease.entity) else {
        return;
    };
    if let Err(error) = crate::vm::removal::destroy(host, &vm) {
        tracing::warn!(lease = %lease.moref.id, vm = %vm.moref, "the failed import's VM stays: {error}");
    }
}

/// Export: records that disk `index` was sent whole (deviceUrl.fileSize, the manifest).
pub fn record_download(host: &Host, lease: &Lease, index: usize, transfer: Transfer) {
    if let Some(slot) = lock(&lease.progress).transfers.get_mut(index) {
        *slot = Some(transfer);
    }
    publish(host, lease);
}

/// HttpNfcLeaseGetManifest: one entry per file transferred whole so far, with its SHA-1.
pub fn manifest(host: &Host, lease: &Lease) -> Result<Vec<Value>, Fault> {
    if lease.state() != LeaseState::Ready {
        return Err(not_ready(host, lease));
    }
    let schema = host.schema;
    let transfers = lock(&lease.progress).transfers.clone();
    Ok(lease
        .disks
        .iter()
        .zip(transfers)
        .filter_map(|(disk, transfer)| {
            let transfer = transfer?;
            Some(
                DataObject::of(schema, "HttpNfcLeaseManifestEntry")
                    .with(schema, "key", disk.key.as_str())
                    .with(schema, "sha1", transfer.sha1.as_str())
                    .with(schema, "checksum", transfer.sha1.as_str())
                    .with(
                        schema,
                        "checksumType",
                        Value::enumeration(schema, "HttpNfcLeaseManifestEntryChecksumType", "sha1"),
                    )
                    .with(schema, "size", transfer.bytes as i64)
                    .with(schema, "disk", true)
                    .with(schema, "capacity", disk.capacity as i64)
                    .into(),
            )
        })
        .collect())
}

/// Lowercase hex SHA-1 of a finished digest.
pub fn hex(digest: ring::digest::Digest) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Publishes the lease's `info` and `state`.
fn publish(host: &Host, lease: &Lease) {
    let schema = host.schema;
    let (state, transfers) = {
        let progress = lock(&lease.progress);
        (progress.state, progress.transfers.clone())
    };
    // Host `*` is whatever name the client reached this host by; the port is ours unless 443.
    let port = match host.config.listen.port() {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let urls: Vec<Value> = lease
        .disks
        .iter()
        .zip(transfers)
        .map(|(disk, transfer)| {
            let mut url = DataObject::of(schema, "HttpNfcLeaseDeviceUrl")
                .with(schema, "key", disk.key.as_str())
                .with(schema, "importKey", disk.import_key.as_str())
                .with(
                    schema,
                    "url",
                    format!("https://*{port}/nfc/{}/{}", lease.moref.id, disk.target_id),
                )
                .with(schema, "sslThumbprint", host.certificate_sha1.as_str())
                .with(schema, "disk", true)
                .with(schema, "targetId", disk.target_id.as_str());
            if let Some(transfer) = transfer {
                url.set(schema, "fileSize", transfer.bytes as i64);
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
        .with(
            schema,
            "leaseTimeout",
            lease.timeout.as_secs().min(i32::MAX as u64) as i32,
        );
    host.mutate(|inv| {
        inv.set(schema, &lease.moref, "info", info);
        inv.set(schema, &lease.moref, "initializeProgress", 100);
        inv.set(schema, &lease.moref, "state", state_value(host, state));
    });
}

fn state_value(host: &Host, state: LeaseState) -> Value {
    Value::enumeration(host.schema, "HttpNfcLeaseState", state.name())
}
