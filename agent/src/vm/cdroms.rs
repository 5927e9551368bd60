//! CD-ROM drives. A VM has ESXi's two IDE controllers (keys 200 and 201, two units each) and
//! its CD-ROMs sit in their slots, or in units of its SATA controller (key 15000, shared with
//! disks) once it has one; underneath each drive is a read-only virtio-blk disk after
//! the VM's hard disks, holding the ISO image (a raw file from a datastore, reached only through
//! the datastore resolver) or no medium at all (zero bytes). This module owns ReconfigVM's
//! deviceChange on `VirtualCdrom` (add, remove, edit; media swapped, inserted and ejected on
//! the running VM), the drives the VMM is started with, and what a running VM's drives hold.

use std::path::PathBuf;
use std::time::Duration;

use vireo_api::schema::Schema;
use vireo_api::{Fault, Value};
use vireo_vmm_protocol::control::{Ack, Request};
use vireo_vmm_protocol::{DiskConfig, DiskFormat};

use super::device_change::{connectable, Change, Operation};
use super::handoff::Handoff;
use super::slots::{Bus, DiskSlot, SataController, SlotError, SATA_KEY, SATA_UNITS};
use super::spec::{CdromBus, CdromSpec, IDE_CONTROLLERS, IDE_UNITS};
use super::{control, Power, Vm, VmState};
use crate::faults;
use crate::host::Host;

/// Key of the first IDE controller (the second one's is the next).
pub const IDE_KEY: i32 = 200;
/// Key of the first CD-ROM drive (the others follow in slot order).
pub const CDROM_KEY: i32 = 3000;

/// How long a media change on the running VMM may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// The CD-ROM drives of a running VMM.
#[derive(Debug, Clone, Default)]
pub struct Drives {
    /// Per CD-ROM (in `spec.cdroms` order): its index among the VMM's disks and whether its
    /// medium is in.
    pub drives: Vec<(usize, bool)>,
    /// The tools installer, while it is mounted in a drive.
    pub tools_installer: Option<ToolsMount>,
}

/// The tools installer ISO in a running VM's drive (MountToolsInstaller).
#[derive(Debug, Clone)]
pub struct ToolsMount {
    /// The CD-ROM holding it.
    pub index: usize,
    /// The drive's backing while it does (`[] /host/path.iso`, as ESXi names host images).
    pub file_name: String,
    /// Whether the drive's own medium was in before.
    pub was_loaded: bool,
}

impl Drives {
    /// Whether CD-ROM `index`'s medium is in (false while the VM does not run).
    pub fn loaded(&self, index: usize) -> bool {
        self.drives.get(index).is_some_and(|&(_, loaded)| loaded)
    }
}

/// The host file of `iso` (a datastore path, or a name in the VM folder).
fn iso_path(host: &Host, vm: &Vm, iso: &str) -> Result<PathBuf, Fault> {
    let schema = host.schema;
    let file = vm.datastore_path_of(iso);
    let path = vm.disk_path(iso, &host.datastores()).map_err(|e| {
        if e.is_not_found() {
            faults::file_not_found(schema, &file, format!("{file} does not exist"))
        } else {
            faults::invalid_datastore_path(schema, &file, e)
        }
    })?;
    if !path.is_file() {
        return Err(faults::file_not_found(
            schema,
            &file,
            format!("{file} is not an ISO image file"),
        ));
    }
    Ok(path)
}

/// The VMM's drives for `spec`'s CD-ROMs, disk `first` onwards: each connected one with its
/// ISO, the others empty (the folders of their images are shown to the VMM all the same, so
/// that connecting them later works).
pub fn vmm_drives(
    host: &Host,
    vm: &Vm,
    cdroms: &[CdromSpec],
    first: usize,
) -> Result<(Vec<DiskConfig>, Drives), Fault> {
    let mut configs = Vec::new();
    let mut drives = Drives::default();
    for (n, cdrom) in cdroms.iter().enumerate() {
        let image = match &cdrom.iso {
            Some(iso) if cdrom.start_connected => Some(iso_path(host, vm, iso)?),
            Some(iso) => iso_path(host, vm, iso).ok(),
            None => None,
        };
        let medium = image.filter(|_| cdrom.start_connected);
        drives.drives.push((first + n, medium.is_some()));
        configs.push(DiskConfig {
            format: medium.as_ref().map(|_| DiskFormat::Raw),
            no_medium: medium.is_none(),
            path: medium.unwrap_or_default(),
            read_only: true,
            serial: Some(format!("vireo-cd-{}", cdrom.slot_name())),
            cache: Default::default(),
        });
    }
    Ok((configs, drives))
}

/// The CD-ROMs of a reconfigure as its changes leave them (existing ones by index).
pub struct Working {
    cdroms: Vec<Option<CdromSpec>>,
    added: Vec<CdromSpec>,
    /// Media to change on the running VM: CD-ROM index, new medium (None: eject).
    media: Vec<(usize, Option<PathBuf>)>,
}

impl Working {
    /// The VM's CD-ROMs before the changes.
    pub fn new(cdroms: &[CdromSpec]) -> Working {
        Working {
            cdroms: cdroms.iter().cloned().map(Some).collect(),
            added: Vec::new(),
            media: Vec::new(),
        }
    }

    /// How many drives the changes leave.
    pub fn count(&self) -> usize {
        self.cdroms.iter().flatten().count() + self.added.len()
    }

    fn all(&self) -> impl Iterator<Item = &CdromSpec> {
        self.cdroms.iter().flatten().chain(&self.added)
    }

    fn taken(&self, bus: CdromBus, controller: u8, unit: u8) -> bool {
        self.all().any(|c| c.order() == (bus, controller, unit))
    }

    /// The SATA units the drives the changes leave hold.
    pub fn sata_slots(&self) -> Vec<DiskSlot> {
        self.all().filter_map(CdromSpec::sata_slot).collect()
    }

    /// The CD-ROMs in slot order, and the media changes for the running VM.
    pub fn finish(self) -> (Vec<CdromSpec>, Vec<(usize, Option<PathBuf>)>) {
        let mut cdroms: Vec<CdromSpec> = self.cdroms.into_iter().flatten().collect();
        cdroms.extend(self.added);
        cdroms.sort_by_key(CdromSpec::order);
        (cdroms, self.media)
    }
}

/// The SATA controller as the changes leave it, and the units its disks hold.
pub(super) struct Sata<'a> {
    /// The controller.
    pub controller: &'a SataController,
    /// The units the VM's disks hold.
    pub disks: Vec<DiskSlot>,
}

/// Applies one VirtualCdrom change.
pub(super) fn change(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    working: &mut Working,
    sata: &Sata<'_>,
    change: &Change<'_>,
) -> Result<(), Fault> {
    let schema = host.schema;
    match change.operation {
        Operation::Add => {
            let names_sata = change
                .device
                .get(schema, "controllerKey")
                .and_then(Value::as_i64)
                .is_some_and(|key| sata.controller.is_named_by(key));
            let (bus, controller, unit) = if names_sata {
                sata_slot(schema, working, sata, change)?
            } else {
                slot(schema, working, change)?
            };
            let (iso, _) = backing(host, vm, change)?;
            working.added.push(CdromSpec {
                bus,
                controller,
                unit,
                iso,
                start_connected: connectable(schema, change.device, "startConnected")
                    .unwrap_or(true),
            });
            Ok(())
        }
        Operation::Remove => {
            let index = existing(schema, working, change)?;
            working.cdroms[index] = None;
            Ok(())
        }
        Operation::Edit => {
            let index = existing(schema, working, change)?;
            edit(host, vm, state, working, index, change)
        }
    }
}

/// The SATA unit an added drive asks for (the first one no disk or drive holds when unset).
fn sata_slot(
    schema: &Schema,
    working: &Working,
    sata: &Sata<'_>,
    change: &Change<'_>,
) -> Result<(CdromBus, u8, u8), Fault> {
    let mut taken = sata.disks.clone();
    taken.extend(working.sata_slots());
    let unit = change
        .device
        .get(schema, "unitNumber")
        .and_then(Value::as_i64);
    let free = |unit: u8| !taken.iter().any(|s| s.unit == unit);
    let found = match unit {
        _ if !sata.controller.present => Err(SlotError::NoSataController),
        None => (0..SATA_UNITS)
            .find(|&u| free(u))
            .ok_or(SlotError::Full(Bus::Sata)),
        Some(unit) => match u8::try_from(unit).ok().filter(|&u| u < SATA_UNITS) {
            None => Err(SlotError::NoSuchUnit {
                unit,
                bus: Bus::Sata,
            }),
            Some(u) if !free(u) => Err(SlotError::Taken(DiskSlot {
                bus: Bus::Sata,
                unit: u,
            })),
            Some(u) => Ok(u),
        },
    };
    found.map(|unit| (CdromBus::Sata, 0, unit)).map_err(|e| {
        faults::invalid_device_spec(schema, "InvalidDeviceSpec", change.index, e.to_string())
    })
}

/// The IDE slot an added drive asks for: controller 200 or 201 (any other controller the
/// spec adds stands for the first free slot), unit 0 or 1 (the first free one when unset).
fn slot(
    schema: &Schema,
    working: &Working,
    change: &Change<'_>,
) -> Result<(CdromBus, u8, u8), Fault> {
    let fault = |ty: &str, why: String| faults::invalid_device_spec(schema, ty, change.index, why);
    let get = |name: &str| change.device.get(schema, name).and_then(Value::as_i64);
    let controllers: Vec<u8> = match get("controllerKey") {
        Some(key) if key >= 0 => {
            let controller = key - i64::from(IDE_KEY);
            if !(0..i64::from(IDE_CONTROLLERS)).contains(&controller) {
                return Err(fault(
                    "InvalidController",
                    format!(
                        "CD-ROM drives sit on the IDE controllers ({IDE_KEY}, {}) or the SATA \
                         controller ({SATA_KEY}); there is no controller {key} for them.",
                        IDE_KEY + 1
                    ),
                ));
            }
            vec![controller as u8]
        }
        _ => (0..IDE_CONTROLLERS).collect(),
    };
    let units: Vec<u8> = match get("unitNumber") {
        Some(unit) if (0..i64::from(IDE_UNITS)).contains(&unit) => vec![unit as u8],
        Some(unit) => {
            return Err(fault(
                "InvalidDeviceSpec",
                format!("An IDE controller has units 0 and 1, not {unit}."),
            ))
        }
        None => (0..IDE_UNITS).collect(),
    };
    controllers
        .iter()
        .flat_map(|&c| units.iter().map(move |&u| (c, u)))
        .find(|&(c, u)| !working.taken(CdromBus::Ide, c, u))
        .map(|(c, u)| (CdromBus::Ide, c, u))
        .ok_or_else(|| {
            fault(
                "InvalidDeviceSpec",
                "The IDE slot asked for already holds a device.".into(),
            )
        })
}

/// The ISO a change's backing names (stored as the `.vmx` keeps it) and its host file; none
/// for a client or remote drive (an empty drive here). A host drive is refused.
fn backing(
    host: &Host,
    vm: &Vm,
    change: &Change<'_>,
) -> Result<(Option<String>, Option<PathBuf>), Fault> {
    let schema = host.schema;
    let Some(backing) = change
        .device
        .get(schema, "backing")
        .and_then(Value::as_data)
    else {
        return Ok((None, None));
    };
    let is = |ty: &str| schema.is_a(backing.ty, schema.known_type(ty));
    if !is("VirtualCdromIsoBackingInfo") {
        if is("VirtualCdromAtapiBackingInfo") || is("VirtualCdromPassthroughBackingInfo") {
            return Err(faults::invalid_device_spec(
                schema,
                "InvalidDeviceBacking",
                change.index,
                "This host has no CD-ROM drive to pass through; use an ISO image.",
            ));
        }
        return Ok((None, None));
    }
    let file = backing
        .get(schema, "fileName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let located = vm
        .locate(file)
        .map_err(|e| faults::invalid_datastore_path(schema, file, e))?;
    let path = iso_path(host, vm, &located.to_string())?;
    let name = if located.parent() == vm.vmx_path.parent() {
        located
            .path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string()
    } else {
        located.to_string()
    };
    Ok((Some(name), Some(path)))
}

/// The key of the controller `cdrom` sits on.
pub fn controller_key(cdrom: &CdromSpec) -> i32 {
    match cdrom.bus {
        CdromBus::Ide => IDE_KEY + i32::from(cdrom.controller),
        CdromBus::Sata => SATA_KEY,
    }
}

/// The index of the existing drive a change names by key.
fn existing(schema: &Schema, working: &Working, change: &Change<'_>) -> Result<usize, Fault> {
    let key = change
        .device
        .get(schema, "key")
        .and_then(Value::as_i64)
        .unwrap_or(-1);
    usize::try_from(key - i64::from(CDROM_KEY))
        .ok()
        .filter(|&i| working.cdroms.get(i).is_some_and(Option::is_some))
        .ok_or_else(|| {
            faults::invalid_device_spec(
                schema,
                "InvalidDeviceSpec",
                change.index,
                format!("The VM has no such device (key {key})."),
            )
        })
}

/// An edited drive: its medium (ISO or none) and startConnected; while the VM runs, the
/// medium in the drive follows `connected` and the backing.
fn edit(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    working: &mut Working,
    index: usize,
    change: &Change<'_>,
) -> Result<(), Fault> {
    let schema = host.schema;
    let drive = working.cdroms[index].as_mut().expect("checked");
    let get = |name: &str| change.device.get(schema, name).and_then(Value::as_i64);
    let moved = get("controllerKey").is_some_and(|k| k != i64::from(controller_key(drive)))
        || get("unitNumber").is_some_and(|u| u != i64::from(drive.unit));
    if moved {
        return Err(faults::invalid_device_spec(
            schema,
            "InvalidDeviceSpec",
            change.index,
            "A CD-ROM drive keeps its slot: remove it and add it in the other one.",
        ));
    }
    let (iso, path) = backing(host, vm, change)?;
    if let Some(start) = connectable(schema, change.device, "startConnected") {
        drive.start_connected = start;
    }
    let changed_medium = iso != drive.iso;
    drive.iso = iso;
    if state.power != Power::On {
        return Ok(());
    }
    let loaded = state.cdroms.loaded(index);
    let load = connectable(schema, change.device, "connected").unwrap_or(loaded) && path.is_some();
    if load == loaded && !(load && changed_medium) {
        return Ok(());
    }
    working.media.push((index, path.filter(|_| load)));
    Ok(())
}

/// Changes the media of the running VM's drives (`media`: CD-ROM index, new medium) and
/// records them in `state`.
pub fn change_media(
    host: &Host,
    vm: &Vm,
    state: &mut VmState,
    media: &[(usize, Option<PathBuf>)],
) -> Result<(), Fault> {
    for (index, medium) in media {
        let mut handoff = Handoff::default();
        let path = medium
            .as_deref()
            .map(|path| handoff.add_file(&host.datastores(), path))
            .transpose()
            .map_err(|e| {
                faults::file_fault(
                    host.schema,
                    &e.to_string(),
                    format!("cannot open the medium: {e}"),
                )
            })?;
        if state
            .cdroms
            .tools_installer
            .as_ref()
            .is_some_and(|m| m.index == *index)
        {
            state.cdroms.tools_installer = None;
        }
        load(host, vm, state, *index, &handoff, path)?;
    }
    Ok(())
}

/// Puts the medium `path` (handed over in `handoff`; None: none) into CD-ROM `index` of the
/// running VM.
pub fn load(
    host: &Host,
    vm: &Vm,
    state: &mut VmState,
    index: usize,
    handoff: &Handoff,
    path: Option<PathBuf>,
) -> Result<(), Fault> {
    let Some(drive) = state.cdroms.drives.get_mut(index) else {
        return Ok(());
    };
    let loaded = path.is_some();
    let request = Request::ChangeMedium {
        disk: drive.0,
        path,
    };
    let socket = vm.run_dir.join("control.sock");
    control::call_with_files::<Ack>(&socket, &request, &handoff.fds(), CONTROL_TIMEOUT)
        .map_err(|e| Fault::system_error(host.schema, format!("cannot change the medium: {e}")))?;
    drive.1 = loaded;
    Ok(())
}

/// The host file of `cdrom`'s own medium, if it has one.
pub fn own_medium(host: &Host, vm: &Vm, cdrom: &CdromSpec) -> Option<PathBuf> {
    cdrom
        .iso
        .as_ref()
        .and_then(|iso| iso_path(host, vm, iso).ok())
}
