//! ReconfigVM's deviceChange on disks, NICs and CD-ROMs ([`super::cdroms`]), for the
//! reconfigure pipeline
//! ([`super::reconfig`]): every VirtualDeviceConfigSpec is checked against the VM first
//! ([`plan`]; a fault names the change's index; new disk files are made then), then the plan
//! is carried out around the one write of the `.vmx`: disks grown before it (under a stunned
//! VMM while the VM runs, so that the guest sees its new size) and CD-ROM media changed, the files of removed disks
//! destroyed and NIC links plugged in or out after it. A change that fails leaves the VM and
//! its files as they were ([`DevicePlan::abandon`]; a disk already grown stays grown).

use std::path::PathBuf;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, Value};
use vireo_disk::grow::grow_image;
use vireo_disk::open::ImageFormat;
use vireo_vmm_protocol::control::Request;

use super::create::{add_disk, nic_model, nic_network, NewDisk};
use super::disks::{self, trees};
use super::journal::{Intent, Journal};
use super::macs::{self, MacsInUse};
use super::properties::{DISK_KEY, NIC_KEY};
use super::slots::{DiskSlot, SataController};
use super::snapshots::live;
use super::spec::{
    is_manual_mac, DiskMode, DiskSpec, NicSpec, VmSpec, MAX_DISKS, MAX_NICS, MAX_VIRTIO_DEVICES,
};
use super::{cdroms, control, Power, Vm, VmState};
use crate::faults;
use crate::host::Host;

/// How long a link change on the running VMM may take.
const CONTROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a checked deviceChange does.
pub struct DevicePlan {
    /// The VM's configuration with its devices changed.
    pub spec: VmSpec,
    /// Files made for new disks (removed again if the change fails).
    created: Vec<PathBuf>,
    /// Disks to grow: index in `spec.disks`, new size in bytes.
    grows: Vec<(usize, u64)>,
    /// Files of removed disks (fileOperation destroy), deleted once the `.vmx` is written.
    destroys: Vec<PathBuf>,
    /// Links to set on the running VM: index in `spec.nics`, plugged in.
    links: Vec<(usize, bool)>,
    /// Media to change on the running VM: index in `spec.cdroms`, new medium.
    media: Vec<(usize, Option<PathBuf>)>,
}

/// Where the device at `old` among `kept` ends up once the removed ones (`None`) are gone.
fn new_index<T>(kept: &[Option<T>], old: usize) -> usize {
    kept[..old].iter().flatten().count()
}

/// The operation of one change.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    Add,
    Remove,
    Edit,
}

/// One VirtualDeviceConfigSpec, read.
pub(super) struct Change<'a> {
    /// Its index in deviceChange.
    pub index: usize,
    pub operation: Operation,
    file_operation: Option<&'a str>,
    change: &'a DataObject,
    pub device: &'a DataObject,
}

/// The devices of the VM as the changes leave them (existing ones by their index).
struct Working {
    disks: Vec<Option<DiskSpec>>,
    nics: Vec<Option<NicSpec>>,
    added_disks: Vec<DiskSpec>,
    added_nics: Vec<NicSpec>,
    /// Grows and links by the index of an existing device.
    grows: Vec<(usize, u64)>,
    links: Vec<(usize, bool)>,
    created: Vec<PathBuf>,
    destroys: Vec<PathBuf>,
    cdroms: cdroms::Working,
    sata: SataController,
    /// The MACs of the host's other VMs.
    used_macs: MacsInUse,
}

impl Working {
    /// The slots of the disks the changes so far leave.
    fn disk_slots(&self) -> Vec<DiskSlot> {
        let kept = self.disks.iter().flatten();
        kept.chain(&self.added_disks).map(|d| d.slot).collect()
    }

    /// The slots the disks and the CD-ROM drives on SATA the changes so far leave hold.
    fn taken_slots(&self) -> Vec<DiskSlot> {
        let mut taken = self.disk_slots();
        taken.extend(self.cdroms.sata_slots());
        taken
    }

    /// The MACs a NIC of this VM may not take: the other VMs', and its other NICs' (all but
    /// existing NIC `except`).
    fn macs_taken(&self, vm_name: &str, except: Option<usize>) -> MacsInUse {
        let existing = self
            .nics
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != except);
        let own = existing.filter_map(|(_, nic)| nic.as_ref());
        let mut taken = self.used_macs.clone();
        for nic in own.chain(&self.added_nics) {
            taken.insert(nic.mac.clone(), vm_name.to_string());
        }
        taken
    }
}

/// Checks every change of `changes` against the VM (`state`), starting from `spec` (the
/// configuration the rest of the reconfigure leaves), and makes the files of new disks.
/// `used_macs`: the MACs of the host's other VMs, which its NICs may not take.
pub fn plan(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    spec: VmSpec,
    changes: &[&Value],
    used_macs: MacsInUse,
) -> Result<DevicePlan, Fault> {
    let mut working = Working {
        disks: spec.disks.iter().cloned().map(Some).collect(),
        nics: spec.nics.iter().cloned().map(Some).collect(),
        added_disks: Vec::new(),
        added_nics: Vec::new(),
        grows: Vec::new(),
        links: Vec::new(),
        created: Vec::new(),
        destroys: Vec::new(),
        cdroms: cdroms::Working::new(&spec.cdroms),
        sata: SataController::new(spec.sata),
        used_macs,
    };
    let checked = changes.iter().enumerate().try_for_each(|(index, value)| {
        let change = read_change(host.schema, index, value)?;
        apply(host, vm, state, &spec, &mut working, &change)
    });
    let checked = checked.and_then(|()| check_virtio_slots(host.schema, &working, changes.len()));
    if let Err(fault) = checked {
        remove_files(&working.created);
        return Err(fault);
    }
    Ok(finish(spec, working))
}

/// The plan the working set describes, indices moved to where the devices end up.
fn finish(mut spec: VmSpec, working: Working) -> DevicePlan {
    let grows = working
        .grows
        .iter()
        .map(|&(old, size)| (new_index(&working.disks, old), size))
        .collect();
    let links = working
        .links
        .iter()
        .map(|&(old, up)| (new_index(&working.nics, old), up))
        .collect();
    spec.disks = working.disks.into_iter().flatten().collect();
    spec.disks.extend(working.added_disks);
    spec.nics = working.nics.into_iter().flatten().collect();
    spec.nics.extend(working.added_nics);
    let (cdroms, media) = working.cdroms.finish();
    spec.cdroms = cdroms;
    spec.sata = working.sata.present;
    DevicePlan {
        spec,
        created: working.created,
        grows,
        destroys: working.destroys,
        links,
        media,
    }
}

/// InvalidDeviceSpec (naming the last change) when the disks, NICs and CD-ROM drives the
/// changes leave, with the tools channel, need more virtio devices than the VMM has slots.
fn check_virtio_slots(schema: &Schema, working: &Working, changes: usize) -> Result<(), Fault> {
    let devices = working.disks.iter().flatten().count()
        + working.added_disks.len()
        + working.nics.iter().flatten().count()
        + working.added_nics.len()
        + working.cdroms.count()
        + 1;
    if devices <= MAX_VIRTIO_DEVICES {
        return Ok(());
    }
    Err(faults::invalid_device_spec(
        schema,
        "InvalidDeviceSpec",
        changes.saturating_sub(1),
        format!(
            "The VM's disks, NICs and CD-ROM drives would need {devices} device slots;              this host gives a VM {MAX_VIRTIO_DEVICES}."
        ),
    ))
}

fn read_change<'a>(schema: &Schema, index: usize, value: &'a Value) -> Result<Change<'a>, Fault> {
    let invalid = |why: &str| faults::invalid_device_spec(schema, "InvalidDeviceSpec", index, why);
    let change = value
        .as_data()
        .ok_or_else(|| invalid("not a VirtualDeviceConfigSpec"))?;
    let operation = match change.get(schema, "operation").and_then(Value::as_str) {
        Some("add") => Operation::Add,
        Some("remove") => Operation::Remove,
        Some("edit") => Operation::Edit,
        _ => return Err(invalid("a device change needs an operation")),
    };
    let device = change
        .get(schema, "device")
        .and_then(Value::as_data)
        .ok_or_else(|| invalid("a device change needs a device"))?;
    Ok(Change {
        index,
        operation,
        file_operation: change.get(schema, "fileOperation").and_then(Value::as_str),
        change,
        device,
    })
}

/// Checks one change and records what it does in `working`.
fn apply(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    spec: &VmSpec,
    working: &mut Working,
    change: &Change<'_>,
) -> Result<(), Fault> {
    let schema = host.schema;
    let is = |ty: &str| schema.is_a(change.device.ty, schema.known_type(ty));
    if state.power == Power::Suspended {
        return Err(faults::invalid_power_state(
            schema,
            Some(Power::Off),
            Power::Suspended,
        ));
    }
    let running = state.power == Power::On;
    if running && change.operation != Operation::Edit {
        return Err(faults::invalid_device_spec(
            schema,
            "DeviceHotPlugNotSupported",
            change.index,
            "Devices are added and removed while the VM is powered off on this host.",
        ));
    }
    if is("VirtualDisk") {
        disk_change(host, vm, state, spec, working, change)
    } else if is("VirtualEthernetCard") {
        nic_change(host, state, working, change)
    } else if is("VirtualCdrom") {
        let sata = cdroms::Sata {
            controller: &working.sata,
            disks: working.disk_slots(),
        };
        cdroms::change(host, vm, state, &mut working.cdroms, &sata, change)
    } else if SataController::is_sata(schema, change.device) {
        sata_change(schema, working, change)
    } else if is("VirtualController") && change.operation == Operation::Add {
        // Other disks sit on the VM's paravirtual controller: an added SCSI controller is
        // accepted and that one presented (as CreateVM does).
        Ok(())
    } else {
        let ty = schema.ty(change.device.ty).name.to_string();
        Err(faults::invalid_device_spec(
            schema,
            "InvalidDeviceOperation",
            change.index,
            format!("{ty} devices cannot be changed on this host"),
        ))
    }
}

/// Adds or removes the VM's SATA controller (removed only when it holds no disk).
fn sata_change(schema: &Schema, working: &mut Working, change: &Change<'_>) -> Result<(), Fault> {
    let done = match change.operation {
        Operation::Add => working.sata.add(schema, change.device),
        Operation::Remove => {
            let taken = working.taken_slots();
            working.sata.remove(&taken)
        }
        Operation::Edit => return Ok(()),
    };
    done.map_err(|e| {
        faults::invalid_device_spec(schema, "InvalidDeviceSpec", change.index, e.to_string())
    })
}

/// The index of the existing device of `kind` that `change` names by key (`base` + index).
fn existing<T>(
    schema: &Schema,
    devices: &[Option<T>],
    base: i32,
    change: &Change<'_>,
) -> Result<usize, Fault> {
    let key = change
        .device
        .get(schema, "key")
        .and_then(Value::as_i64)
        .unwrap_or(-1);
    usize::try_from(key - i64::from(base))
        .ok()
        .filter(|&i| devices.get(i).is_some_and(Option::is_some))
        .ok_or_else(|| {
            faults::invalid_device_spec(
                schema,
                "InvalidDeviceSpec",
                change.index,
                format!("The VM has no such device (key {key})."),
            )
        })
}

fn disk_change(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    spec: &VmSpec,
    working: &mut Working,
    change: &Change<'_>,
) -> Result<(), Fault> {
    let schema = host.schema;
    let fault = |ty: &str, why: String| faults::invalid_device_spec(schema, ty, change.index, why);
    match change.operation {
        Operation::Add => {
            let count = working.disks.iter().flatten().count() + working.added_disks.len();
            if count >= MAX_DISKS {
                return Err(fault(
                    "InvalidDeviceSpec",
                    format!("A VM has at most {MAX_DISKS} disks."),
                ));
            }
            let mut all: Vec<DiskSpec> = working.disks.iter().flatten().cloned().collect();
            all.extend(working.added_disks.iter().cloned());
            let slot = working
                .sata
                .slot_for(schema, change.device, &working.taken_slots())
                .map_err(|e| fault("InvalidDeviceSpec", e.to_string()))?;
            let new = NewDisk {
                change: change.change,
                device: change.device,
                slot,
            };
            let disk = add_disk(
                host,
                &vm.vmx_path,
                &spec.name,
                &all,
                new,
                &mut working.created,
            )?;
            working.added_disks.push(disk);
            Ok(())
        }
        Operation::Remove => {
            let index = existing(schema, &working.disks, DISK_KEY, change)?;
            if has_snapshot_layers(state, index) {
                return Err(fault(
                    "InvalidDeviceOperation",
                    "The disk has snapshots: remove them before the disk.".into(),
                ));
            }
            if change.file_operation == Some("destroy") {
                let disk = working.disks[index].as_ref().expect("checked");
                working.destroys.extend(disk_files(host, vm, disk, change)?);
            }
            working.disks[index] = None;
            Ok(())
        }
        Operation::Edit => {
            let index = existing(schema, &working.disks, DISK_KEY, change)?;
            edit_disk(host, vm, state, working, index, change)
        }
    }
}

/// Whether disk `index` runs on more than its base file (snapshots, or a linked clone's
/// parents are not counted: only this VM's layers).
fn has_snapshot_layers(state: &VmState, index: usize) -> bool {
    state
        .disk_views
        .get(index)
        .is_some_and(|view| view.active.chain.len() > 1 || !state.snapshots.snapshots.is_empty())
}

/// The files a destroyed disk leaves behind (its base file and its tree's sidecar), when no
/// other VM uses the file.
fn disk_files(
    host: &Host,
    vm: &Vm,
    disk: &DiskSpec,
    change: &Change<'_>,
) -> Result<Vec<PathBuf>, Fault> {
    let schema = host.schema;
    let file = vm.datastore_path_of(&disk.file_name);
    let path = vm
        .disk_path(&disk.file_name, &host.datastores())
        .map_err(|e| faults::file_fault(schema, &file, e))?;
    let shared = host.vms.all().into_iter().any(|other| {
        other.id != vm.id
            && other.state().spec.disks.iter().any(|d| {
                other
                    .disk_path(&d.file_name, &host.datastores())
                    .is_ok_and(|p| p == path)
            })
    });
    if shared {
        return Err(faults::invalid_device_spec(
            schema,
            "InvalidDeviceOperation",
            change.index,
            format!("{file} is a disk of another VM: it is not destroyed."),
        ));
    }
    Ok(vec![trees::sidecar_of(&path), path])
}

fn edit_disk(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    working: &mut Working,
    index: usize,
    change: &Change<'_>,
) -> Result<(), Fault> {
    let schema = host.schema;
    let fault = |ty: &str, why: String| faults::invalid_device_spec(schema, ty, change.index, why);
    let disk = working.disks[index].as_mut().expect("checked");
    let backing = change
        .device
        .get(schema, "backing")
        .and_then(Value::as_data);
    let file_name = backing
        .and_then(|b| b.get(schema, "fileName"))
        .and_then(Value::as_str)
        .filter(|f| !f.is_empty());
    if file_name.is_some_and(|f| f != vm.datastore_path_of(&disk.file_name)) {
        return Err(fault(
            "InvalidDeviceBacking",
            "A disk's file cannot be replaced: remove the disk and add the other file.".into(),
        ));
    }
    if let Some(name) = backing
        .and_then(|b| b.get(schema, "diskMode"))
        .and_then(Value::as_str)
    {
        let mode = DiskMode::from_api(name).ok_or_else(|| {
            fault(
                "InvalidDeviceBacking",
                format!("Disk mode {name} is not supported on this host."),
            )
        })?;
        if mode != disk.mode && state.power == Power::On {
            return Err(faults::invalid_power_state(
                schema,
                Some(Power::Off),
                Power::On,
            ));
        }
        if mode != disk.mode && has_snapshot_layers(state, index) {
            return Err(fault(
                "InvalidDeviceOperation",
                "A disk's mode cannot change while the VM has snapshots.".into(),
            ));
        }
        disk.mode = mode;
    }
    let current = state.disk_capacities.get(index).copied().unwrap_or(0);
    match edited_capacity(schema, change.device, current) {
        Some(size) if size < current => Err(fault(
            "InvalidDeviceSpec",
            format!("A disk cannot shrink ({current} bytes to {size})."),
        )),
        Some(size) if size > current => {
            if has_snapshot_layers(state, index) {
                return Err(fault(
                    "InvalidDeviceOperation",
                    "A disk with snapshots cannot be extended.".into(),
                ));
            }
            if disk.mode == DiskMode::IndependentNonpersistent && state.power != Power::Off {
                return Err(faults::invalid_power_state(
                    schema,
                    Some(Power::Off),
                    state.power,
                ));
            }
            working.grows.push((index, size));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The size an edited disk asks for: of capacityInBytes and capacityInKB, the one that
/// differs from `current` (clients edit the device they read and change one of the two).
fn edited_capacity(schema: &Schema, device: &DataObject, current: u64) -> Option<u64> {
    let field = |name: &str, unit: i64| {
        device
            .get(schema, name)
            .and_then(Value::as_i64)
            .filter(|v| *v > 0)
            .map(|v| v.saturating_mul(unit) as u64)
    };
    let sizes = [field("capacityInBytes", 1), field("capacityInKB", 1024)];
    let given = sizes.iter().flatten();
    given
        .clone()
        .find(|&&size| size != current)
        .or_else(|| given.clone().next())
        .copied()
}

fn nic_change(
    host: &Host,
    state: &VmState,
    working: &mut Working,
    change: &Change<'_>,
) -> Result<(), Fault> {
    let schema = host.schema;
    match change.operation {
        Operation::Add => {
            let count = working.nics.iter().flatten().count() + working.added_nics.len();
            if count >= MAX_NICS {
                return Err(faults::invalid_device_spec(
                    schema,
                    "InvalidDeviceSpec",
                    change.index,
                    format!("A VM has at most {MAX_NICS} NICs."),
                ));
            }
            let mut nic = NicSpec {
                network: nic_network(host, change.device)?,
                mac: String::new(),
                virtual_dev: nic_model(schema, change.device),
                generated_mac: true,
                start_connected: true,
            };
            let taken = working.macs_taken(&state.spec.name, None);
            set_mac(schema, &mut nic, change.index, change.device, &taken)?;
            set_connection(schema, &mut nic, change.device);
            working.added_nics.push(nic);
            Ok(())
        }
        Operation::Remove => {
            let index = existing(schema, &working.nics, NIC_KEY, change)?;
            working.nics[index] = None;
            Ok(())
        }
        Operation::Edit => {
            let index = existing(schema, &working.nics, NIC_KEY, change)?;
            let taken = working.macs_taken(&state.spec.name, Some(index));
            let nic = working.nics[index].as_mut().expect("checked");
            let before = nic.clone();
            nic.network = nic_network(host, change.device)?;
            set_mac(schema, nic, change.index, change.device, &taken)?;
            set_connection(schema, nic, change.device);
            let identity_changed = nic.mac != before.mac || nic.network != before.network;
            if state.power == Power::On {
                if identity_changed {
                    return Err(faults::invalid_power_state(
                        schema,
                        Some(Power::Off),
                        Power::On,
                    ));
                }
                if let Some(connected) = connectable(schema, change.device, "connected") {
                    working.links.push((index, connected));
                }
            }
            Ok(())
        }
    }
}

/// The MAC of an added or edited NIC (`device`, of device change `index`): a manual one must be
/// in the range ESXi allows (`00:50:56:00:00:00`-`00:50:56:3f:ff:ff`) and, if new, none of
/// `taken`; a generated one is made here, none of `taken`, unless it stays.
pub(super) fn set_mac(
    schema: &Schema,
    nic: &mut NicSpec,
    index: usize,
    device: &DataObject,
    taken: &MacsInUse,
) -> Result<(), Fault> {
    let get = |name: &str| device.get(schema, name).and_then(Value::as_str);
    let given = get("macAddress")
        .filter(|m| !m.is_empty())
        .map(str::to_ascii_lowercase);
    let address_type = get("addressType").map(str::to_ascii_lowercase);
    match (address_type.as_deref(), given) {
        (Some("manual"), None) => Err(faults::invalid_device_spec(
            schema,
            "InvalidDeviceSpec",
            index,
            "A manual MAC address needs macAddress.",
        )),
        (Some("manual"), Some(mac)) | (None, Some(mac)) if mac != nic.mac || !nic.generated_mac => {
            if !is_manual_mac(&mac) {
                return Err(faults::invalid_device_spec(
                    schema,
                    "InvalidDeviceSpec",
                    index,
                    format!(
                        "The MAC address {mac} is not in the range allowed for manual addresses \
                         (00:50:56:00:00:00 - 00:50:56:3F:FF:FF)."
                    ),
                ));
            }
            if let Some(owner) = taken.get(&mac).filter(|_| mac != nic.mac) {
                return Err(faults::invalid_device_spec(
                    schema,
                    "InvalidDeviceSpec",
                    index,
                    format!("The MAC address {mac} is in use by the virtual machine {owner}."),
                ));
            }
            nic.mac = mac;
            nic.generated_mac = false;
            Ok(())
        }
        (Some("generated" | "assigned"), _) if !nic.generated_mac || nic.mac.is_empty() => {
            nic.mac = macs::unique(taken);
            nic.generated_mac = true;
            Ok(())
        }
        _ if nic.mac.is_empty() => {
            nic.mac = macs::unique(taken);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `startConnected` from a device's connectable, when given.
fn set_connection(schema: &Schema, nic: &mut NicSpec, device: &DataObject) {
    if let Some(start) = connectable(schema, device, "startConnected") {
        nic.start_connected = start;
    }
}

/// A field of a device's connectable (`connected`, `startConnected`), when given.
pub(super) fn connectable(schema: &Schema, device: &DataObject, field: &str) -> Option<bool> {
    device
        .get(schema, "connectable")
        .and_then(Value::as_data)
        .and_then(|c| c.get(schema, field))
        .and_then(Value::as_bool)
}

impl DevicePlan {
    /// Whether carrying the plan out does anything besides taking its `spec`.
    pub fn has_effects(&self) -> bool {
        !(self.created.is_empty()
            && self.grows.is_empty()
            && self.destroys.is_empty()
            && self.links.is_empty()
            && self.media.is_empty())
    }

    /// Before the `.vmx` is written: changes the media of the running VM's CD-ROM drives.
    pub fn change_media(&self, host: &Host, vm: &Vm, state: &mut VmState) -> Result<(), Fault> {
        cdroms::change_media(host, vm, state, &self.media)
    }

    /// Gives up the plan: the files made for new disks go again.
    pub fn abandon(self) {
        remove_files(&self.created);
    }

    /// Before the `.vmx` is written: grows the plan's disks, their images directly while
    /// the VM is off, under a stunned VMM (which tells the guest each new size) while it runs.
    pub fn grow_disks(&self, host: &Host, vm: &Vm, state: &VmState) -> Result<(), Fault> {
        if self.grows.is_empty() {
            return Ok(());
        }
        let schema = host.schema;
        let grow_files = || {
            for &(index, size) in &self.grows {
                let disk = &self.spec.disks[index];
                let file = vm.datastore_path_of(&disk.file_name);
                let path = vm
                    .disk_path(&disk.file_name, &host.datastores())
                    .map_err(|e| faults::file_fault(schema, &file, e))?;
                let format = disk.format.unwrap_or(ImageFormat::Qcow2);
                grow_image(&path, format, size).map_err(|e| {
                    faults::file_fault(schema, &file, format!("cannot extend: {e}"))
                })?;
            }
            Ok(())
        };
        if state.power != Power::On {
            return grow_files();
        }
        let mut journal =
            Journal::begin(&vm.dir, Intent::Reconfigure).map_err(|e| e.fault(schema))?;
        let grown = live::with_disks_growing(host, vm, state, &mut journal, grow_files);
        if grown.is_ok() {
            journal.finish();
        }
        grown
    }

    /// Once the VM has taken its new `.vmx`: destroys removed disks' files, plugs NIC cables
    /// in or out on the running VM, and re-reads the disks.
    pub fn finish(self, host: &Host, vm: &Vm, state: &mut VmState) -> Result<(), Fault> {
        remove_files(&self.destroys);
        disks::refresh(host, vm, state);
        state.disk_capacities = disks::capacities(host, vm, &state.spec);
        let socket = vm.run_dir.join("control.sock");
        for &(nic, connected) in &self.links {
            let request = Request::SetLink { nic, connected };
            control::command(&socket, request, CONTROL_TIMEOUT).map_err(|e| {
                Fault::system_error(host.schema, format!("cannot set the link: {e}"))
            })?;
            if let Some(link) = state.nic_links.get_mut(nic) {
                *link = connected;
            }
        }
        Ok(())
    }
}

/// The device changes of a ConfigSpec (deviceChange), in order.
pub fn changes_of<'a>(schema: &Schema, config: &'a DataObject) -> Vec<&'a Value> {
    config
        .get(schema, "deviceChange")
        .map(|v| v.items().iter().collect())
        .unwrap_or_default()
}

fn remove_files(files: &[PathBuf]) {
    for file in files {
        if let Err(error) = std::fs::remove_file(file) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {error}", file.display());
            }
        }
    }
}

/// An `add` VirtualDeviceConfigSpec for `device`, with fileOperation `create` when `create`
/// (how a client asks for a new device; an import builds its VM's config spec this way).
pub fn add_spec(schema: &Schema, device: DataObject, create: bool) -> Value {
    let mut change = DataObject::of(schema, "VirtualDeviceConfigSpec")
        .with(
            schema,
            "operation",
            Value::enumeration(schema, "VirtualDeviceConfigSpecOperation", "add"),
        )
        .with(schema, "device", device);
    if create {
        change.set(
            schema,
            "fileOperation",
            Value::enumeration(schema, "VirtualDeviceConfigSpecFileOperation", "create"),
        );
    }
    change.into()
}
