//! Folder.CreateVM: turns a VirtualMachineConfigSpec into a VM folder on a datastore — new
//! qcow2 disks (fileOperation create; a child disk of another when backing.parent is set, as
//! linked clones are made) or existing disk files, NICs on "VM Network", the `.vmx` — and
//! registers it. Anything half-made is removed again on failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, Value};
use vireo_disk::open::{open_disk_as, probe_format, ImageFormat};
use vireo_disk::qcow2::{create as create_qcow2, BackingSpec, CreateOptions};
use vireo_disk::{open_disk, OpenError};

use super::datastore_path::DatastorePath;
use super::device_change::set_mac;
use super::reconfig::config::{checked_memory_mb, checked_num_cpus};
use super::slots::{DiskSlot, SataController};
use super::spec::{is_owned_key, DiskMode, DiskSpec, NicSpec, VmSpec, MAX_DISKS, MAX_NICS};
use super::{lifecycle, macs, uuid, Vm};
use crate::faults;
use crate::host::Host;

/// Creates and registers the VM `config` describes.
pub fn create_vm(host: &Arc<Host>, config: &DataObject) -> Result<Arc<Vm>, Fault> {
    let schema = host.schema;
    let get = |name: &str| config.get(schema, name);
    let name = get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| Fault::invalid_argument(schema, "name", "The VM needs a name."))?
        .to_string();
    check_new_name(host, &name, None)?;
    if get("vAppConfig").is_some() {
        return Err(Fault::not_supported(
            schema,
            "This host does not keep vApp options (vAppConfig) for VMs.",
        ));
    }
    let vmx_path = vmx_path(host, config, &name)?;
    let num_cpus = checked_num_cpus(host, get("numCPUs").and_then(Value::as_i64).unwrap_or(1))?;
    let memory_mb =
        checked_memory_mb(host, get("memoryMB").and_then(Value::as_i64).unwrap_or(256))?;
    let (dir, made_dir) = vmx_path
        .parent()
        .create_folder(&host.datastores())
        .map_err(|e| faults::invalid_datastore(schema, &vmx_path.datastore, e))?;
    let vmx_file = dir.join(vmx_file_name(&vmx_path));
    if std::fs::symlink_metadata(&vmx_file).is_ok() {
        if made_dir {
            let _ = std::fs::remove_dir(&dir);
        }
        return Err(faults::file_already_exists(schema, &vmx_path.to_string()));
    }
    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| {
        let mut spec = VmSpec {
            name: name.clone(),
            guest_id: get("guestId")
                .and_then(Value::as_str)
                .unwrap_or("otherLinux64Guest")
                .to_string(),
            num_cpus,
            memory_mb,
            uuid: get("uuid")
                .and_then(Value::as_str)
                .map_or_else(uuid::random, str::to_string),
            instance_uuid: get("instanceUuid")
                .and_then(Value::as_str)
                .map_or_else(uuid::random, str::to_string),
            annotation: get("annotation")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            template: false,
            hw_version: get("version")
                .and_then(Value::as_str)
                .and_then(|v| v.strip_prefix("vmx-")?.parse().ok())
                .unwrap_or(21),
            disks: Vec::new(),
            nics: Vec::new(),
            cdroms: Vec::new(),
            sata: false,
            extra_config: Vec::new(),
        };
        let mut sata = SataController::new(false);
        apply_extra_config(host, &mut spec, config)?;
        let changes = get("deviceChange").map(Value::items).unwrap_or_default();
        for (index, change) in changes.iter().enumerate() {
            let change = change.as_data().ok_or_else(|| {
                Fault::invalid_argument(schema, "deviceChange", "not a VirtualDeviceConfigSpec")
            })?;
            add_device(
                host,
                &vmx_path,
                &mut spec,
                &mut sata,
                index,
                change,
                &mut created,
            )?;
        }
        // Its MACs stay claimed until the VM is registered with them.
        let macs = spec.nics.iter().map(|n| n.mac.clone()).collect();
        let _claim = macs::claim(host, None, &spec.name, macs).map_err(|taken| {
            macs::taken_fault(schema, &changes.iter().collect::<Vec<_>>(), &taken)
        })?;
        spec.to_vmx()
            .write(&vmx_file)
            .map_err(|e| io_fault(schema, &vmx_path.to_string(), e))?;
        created.push(vmx_file.clone());
        host.vms
            .register(host, &vmx_path, None)
            .map_err(|e| Fault::system_error(schema, e.to_string()))
    })();
    match result {
        Ok(vm) => {
            host.vms
                .record()
                .map_err(|e| Fault::system_error(schema, e.to_string()))?;
            let state = vm.state();
            lifecycle::post_vm_event(
                host,
                &vm,
                &state,
                "VmCreatedEvent",
                format!("Created virtual machine {name} on ha-host"),
                "",
            );
            drop(state);
            Ok(vm)
        }
        Err(fault) => {
            for file in created.iter().rev() {
                let _ = std::fs::remove_file(file);
            }
            if made_dir {
                let _ = std::fs::remove_dir(&dir);
            }
            Err(fault)
        }
    }
}

/// Whether `name` can be a VM's folder name: not `.` or `..`, no `/`, no control characters.
pub fn usable_name(name: &str) -> bool {
    !matches!(name.trim(), "" | "." | "..")
        && name.len() <= 80
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// Refuses a VM name that cannot be a folder name or that another VM than `renamed` has
/// (DuplicateName).
pub(super) fn check_new_name(host: &Host, name: &str, renamed: Option<&Vm>) -> Result<(), Fault> {
    let schema = host.schema;
    if !usable_name(name) {
        return Err(Fault::invalid_argument(
            schema,
            "name",
            format!("'{name}' is not a usable VM name."),
        ));
    }
    if let Some(existing) = host
        .vms
        .all()
        .into_iter()
        .filter(|vm| renamed.is_none_or(|r| r.id != vm.id))
        .find(|vm| vm.state().spec.name == name)
    {
        return Err(faults::duplicate_name(schema, name, &existing.moref));
    }
    Ok(())
}

/// Sets (or, with an empty value, removes) each of a config's extraConfig options.
pub(super) fn apply_extra_config(
    host: &Host,
    spec: &mut VmSpec,
    config: &DataObject,
) -> Result<(), Fault> {
    let schema = host.schema;
    for option in config
        .get(schema, "extraConfig")
        .map(Value::items)
        .unwrap_or_default()
    {
        let option = option
            .as_data()
            .ok_or_else(|| Fault::invalid_argument(schema, "extraConfig", "not an OptionValue"))?;
        let key = option
            .get(schema, "key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let value = option
            .get(schema, "value")
            .map(value_text)
            .unwrap_or_default();
        if key.is_empty() || key.contains(['=', '"', '\n']) {
            return Err(Fault::invalid_argument(
                schema,
                "extraConfig",
                format!("bad key '{key}'"),
            ));
        }
        if is_owned_key(key) {
            return Err(Fault::invalid_argument(
                schema,
                key,
                format!("extraConfig may not set '{key}': the VM's configuration owns it"),
            ));
        }
        spec.set_extra(key, &value);
    }
    Ok(())
}

/// The `.vmx` path: files.vmPathName (a datastore, a folder, or a full path) or
/// `[first datastore] <name>/<name>.vmx`.
fn vmx_path(host: &Host, config: &DataObject, name: &str) -> Result<DatastorePath, Fault> {
    let schema = host.schema;
    let given = config
        .get(schema, "files")
        .and_then(Value::as_data)
        .and_then(|f| f.get(schema, "vmPathName"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let path = if given.is_empty() {
        let datastores = host.datastores();
        let ds = datastores
            .first()
            .ok_or_else(|| faults::invalid_datastore(schema, "", "no datastore"))?;
        DatastorePath {
            datastore: ds.name.clone(),
            path: String::new(),
        }
    } else {
        DatastorePath::parse(given).map_err(|e| faults::invalid_datastore(schema, "", e))?
    };
    path.datastore(&host.datastores())
        .map_err(|e| faults::invalid_datastore(schema, &path.datastore, e))?;
    if path.path.ends_with(".vmx") && path.is_at_root() {
        return Err(Fault::invalid_argument(
            schema,
            "files.vmPathName",
            format!("{given}: a VM's .vmx must be in a folder of the datastore, not at its root"),
        ));
    }
    Ok(if path.path.ends_with(".vmx") {
        path
    } else if path.path.is_empty() {
        path.join(name).join(&format!("{name}.vmx"))
    } else {
        let folder = DatastorePath {
            datastore: path.datastore.clone(),
            path: path.path.trim_end_matches('/').to_string(),
        };
        folder.join(&format!("{name}.vmx"))
    })
}

/// The `.vmx`'s own name (the last part of its datastore path).
pub(super) fn vmx_file_name(vmx_path: &DatastorePath) -> String {
    vmx_path
        .path
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.as_i64().map(|n| n.to_string()).unwrap_or_default(),
    }
}

/// A FileFault for an I/O failure on `file` (both in the message).
pub(super) fn io_fault(schema: &Schema, file: &str, error: std::io::Error) -> Fault {
    faults::file_fault(schema, file, format!("{file}: {error}"))
}

fn missing_file(schema: &Schema, file: &str) -> Fault {
    faults::file_not_found(schema, file, format!("{file} does not exist"))
}

/// How a child disk (a linked clone's delta, backing.parent set) of the disk file `parent` is
/// made at `target`: the parent's size unless more is asked for, backed by the parent under a
/// name relative to the child's folder.
fn child_disk_options(
    host: &Host,
    target: &Path,
    parent: &str,
    asked: Option<u64>,
) -> Result<CreateOptions, Fault> {
    let schema = host.schema;
    let field = "deviceChange.device.backing.parent.fileName";
    let parent_path = DatastorePath::parse(parent)
        .map_err(|e| Fault::invalid_argument(schema, field, e.to_string()))?;
    let file = parent_path
        .resolve(&host.datastores())
        .map_err(|e| match e {
            e if e.is_not_found() => missing_file(schema, parent),
            e => faults::invalid_datastore(schema, &parent_path.datastore, e),
        })?;
    if !file.is_file() {
        return Err(missing_file(schema, parent));
    }
    let unreadable =
        |e: OpenError| faults::file_fault(schema, parent, format!("cannot read {parent}: {e}"));
    let options = child_of(target, &file).map_err(unreadable)?;
    match asked {
        Some(size) if size < options.size => Err(Fault::invalid_argument(
            schema,
            "deviceChange.device.capacityInKB",
            format!("a child disk cannot be smaller than its parent {parent}"),
        )),
        Some(size) => Ok(CreateOptions { size, ..options }),
        None => Ok(options),
    }
}

/// How a child disk of the image `parent` is made at `target`: the parent's size, backed by
/// the parent under a name relative to the child's folder.
pub(super) fn child_of(target: &Path, parent: &Path) -> Result<CreateOptions, OpenError> {
    let format = probe_format(parent)?;
    let capacity = open_disk(parent, true)?.capacity();
    let mut options = CreateOptions::new(capacity);
    options.backing = Some(BackingSpec {
        name: relative_name(target, parent),
        format,
    });
    Ok(options)
}

/// How `file` is named from the folder of `image` (relative, so that datastores can move).
fn relative_name(image: &Path, file: &Path) -> String {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let from = canonical(image.parent().unwrap_or(Path::new("/")));
    let to = canonical(file);
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut name = PathBuf::new();
    for _ in from.components().skip(common) {
        name.push("..");
    }
    for part in to.components().skip(common) {
        name.push(part);
    }
    name.to_string_lossy().into_owned()
}

/// The format of an existing disk a client attaches (probed once, then pinned in the
/// `.vmx`), after checking that it opens with its whole backing chain inside the datastore.
fn existing_disk_format(schema: &Schema, path: &Path, name: &str) -> Result<ImageFormat, Fault> {
    let unusable =
        |e: OpenError| faults::file_fault(schema, name, format!("cannot use {name}: {e}"));
    let format = probe_format(path).map_err(unusable)?;
    open_disk_as(path, format, true).map_err(unusable)?;
    Ok(format)
}

/// Applies one `add` device change to the new VM.
fn add_device(
    host: &Host,
    vmx_path: &DatastorePath,
    spec: &mut VmSpec,
    sata: &mut SataController,
    index: usize,
    change: &DataObject,
    created: &mut Vec<PathBuf>,
) -> Result<(), Fault> {
    let schema = host.schema;
    let operation = change
        .get(schema, "operation")
        .and_then(Value::as_str)
        .unwrap_or("add");
    if operation != "add" {
        return Err(Fault::invalid_argument(
            schema,
            "deviceChange",
            format!("a new VM can only add devices, not {operation}"),
        ));
    }
    let device = change
        .get(schema, "device")
        .and_then(Value::as_data)
        .ok_or_else(|| {
            Fault::invalid_argument(schema, "deviceChange", "a device change needs a device")
        })?;
    let ty = schema.ty(device.ty).name.to_string();
    if schema.is_a(device.ty, schema.known_type("VirtualDisk")) {
        if spec.disks.len() >= MAX_DISKS {
            return Err(Fault::invalid_argument(
                schema,
                "deviceChange",
                format!("at most {MAX_DISKS} disks"),
            ));
        }
        let taken: Vec<DiskSlot> = spec.disks.iter().map(|d| d.slot).collect();
        let slot = sata
            .slot_for(schema, device, &taken)
            .map_err(|e| Fault::invalid_argument(schema, "deviceChange", e.to_string()))?;
        let new = NewDisk {
            change,
            device,
            slot,
        };
        let disk = add_disk(host, vmx_path, &spec.name, &spec.disks, new, created)?;
        spec.disks.push(disk);
        return Ok(());
    }
    if schema.is_a(device.ty, schema.known_type("VirtualEthernetCard")) {
        if spec.nics.len() >= MAX_NICS {
            return Err(Fault::invalid_argument(
                schema,
                "deviceChange",
                format!("at most {MAX_NICS} NICs"),
            ));
        }
        let mut nic = NicSpec {
            network: nic_network(host, device)?,
            mac: String::new(),
            virtual_dev: nic_model(schema, device),
            generated_mac: true,
            start_connected: true,
        };
        let mut taken = macs::in_use(host, None);
        for other in &spec.nics {
            taken.insert(other.mac.clone(), spec.name.clone());
        }
        set_mac(schema, &mut nic, index, device, &taken)?;
        spec.nics.push(nic);
        return Ok(());
    }
    if SataController::is_sata(schema, device) {
        sata.add(schema, device)
            .map_err(|e| Fault::invalid_argument(schema, "deviceChange", e.to_string()))?;
        spec.sata = true;
        return Ok(());
    }
    if schema.is_a(device.ty, schema.known_type("VirtualController")) {
        // Other disks sit on the VM's one paravirtual controller; a client's SCSI controller
        // is accepted and that one presented.
        return Ok(());
    }
    Err(Fault::not_supported(
        schema,
        format!("{ty} devices are not supported on this host"),
    ))
}

/// A disk one `add` change (`change`, its `device`) brings, and the slot chosen for it.
pub(super) struct NewDisk<'a> {
    pub change: &'a DataObject,
    pub device: &'a DataObject,
    pub slot: DiskSlot,
}

/// The disk one `add` change describes, made now when fileOperation is `create` (recorded in
/// `created`) or an existing file checked: a new qcow2 at backing.fileName, or at the first
/// free `<vm>.qcow2` / `<vm>_<n>.qcow2` in the VM folder when it names no file; every path
/// through the datastore resolver.
pub(super) fn add_disk(
    host: &Host,
    vmx_path: &DatastorePath,
    vm_name: &str,
    disks: &[DiskSpec],
    new: NewDisk<'_>,
    created: &mut Vec<PathBuf>,
) -> Result<DiskSpec, Fault> {
    let schema = host.schema;
    let NewDisk {
        change,
        device,
        slot,
    } = new;
    let creating = change.get(schema, "fileOperation").and_then(Value::as_str) == Some("create");
    let backing = device.get(schema, "backing").and_then(Value::as_data);
    let file_name = backing
        .and_then(|b| b.get(schema, "fileName"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let folder = vmx_path.parent();
    let target = if file_name.is_empty()
        || DatastorePath::parse(file_name).is_ok_and(|p| p.path.is_empty())
    {
        free_disk_name(host, &folder, vm_name, disks)
    } else {
        DatastorePath::parse(file_name).map_err(|e| {
            Fault::invalid_argument(
                schema,
                "deviceChange.device.backing.fileName",
                e.to_string(),
            )
        })?
    };
    let resolved = if creating {
        target.resolve_new(&host.datastores())
    } else {
        target.resolve(&host.datastores())
    };
    let path = resolved.map_err(|e| match e {
        e if e.is_not_found() => missing_file(schema, &target.to_string()),
        e => faults::invalid_datastore(schema, &target.datastore, e),
    })?;
    let format = if creating {
        create_disk(host, &target, &path, device)?;
        created.push(path.clone());
        ImageFormat::Qcow2
    } else if !path.is_file() {
        return Err(missing_file(schema, &target.to_string()));
    } else {
        existing_disk_format(schema, &path, &target.to_string())?
    };
    let file_name = if target.parent() == folder {
        target
            .path
            .rsplit('/')
            .next()
            .unwrap_or(&target.path)
            .to_string()
    } else {
        target.to_string()
    };
    let mode = backing
        .and_then(|b| b.get(schema, "diskMode"))
        .and_then(Value::as_str)
        .and_then(DiskMode::from_api)
        .unwrap_or_default();
    Ok(DiskSpec {
        file_name,
        format: Some(format),
        mode,
        slot,
        cache: Default::default(),
    })
}

/// The first `<vm>.qcow2`, `<vm>_<n>.qcow2` in `folder` that no disk names and no file holds.
fn free_disk_name(
    host: &Host,
    folder: &DatastorePath,
    vm_name: &str,
    disks: &[DiskSpec],
) -> DatastorePath {
    (disks.len()..)
        .map(|n| {
            let suffix = if n == 0 {
                String::new()
            } else {
                format!("_{n}")
            };
            folder.join(&format!("{vm_name}{suffix}.qcow2"))
        })
        .find(|candidate| {
            let name = candidate.path.rsplit('/').next().unwrap_or_default();
            let taken = disks
                .iter()
                .any(|d| d.file_name == name || d.file_name == candidate.to_string());
            !taken
                && candidate
                    .resolve_new(&host.datastores())
                    .is_ok_and(|p| std::fs::symlink_metadata(p).is_err())
        })
        .expect("some disk name is free")
}

/// Creates the new qcow2 a disk change asks for at `path` (FileAlreadyExists if one is there).
fn create_disk(
    host: &Host,
    target: &DatastorePath,
    path: &Path,
    device: &DataObject,
) -> Result<(), Fault> {
    let schema = host.schema;
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(faults::file_already_exists(schema, &target.to_string()));
    }
    let asked = requested_capacity(schema, device);
    let parent = device
        .get(schema, "backing")
        .and_then(Value::as_data)
        .and_then(|b| b.get(schema, "parent"))
        .and_then(Value::as_data)
        .and_then(|p| p.get(schema, "fileName"))
        .and_then(Value::as_str);
    let options = match parent {
        Some(parent) => child_disk_options(host, path, parent, asked)?,
        None => CreateOptions::new(asked.ok_or_else(|| {
            Fault::invalid_argument(
                schema,
                "deviceChange.device.capacityInKB",
                "a new disk needs a size",
            )
        })?),
    };
    create_qcow2(path, &options).map_err(|e| {
        faults::file_fault(
            schema,
            &target.to_string(),
            format!("cannot create {target}: {e}"),
        )
    })
}

/// A VirtualDisk's size in bytes: capacityInBytes, else capacityInKB (unset or not positive:
/// none).
pub(crate) fn requested_capacity(schema: &Schema, device: &DataObject) -> Option<u64> {
    device
        .get(schema, "capacityInBytes")
        .and_then(Value::as_i64)
        .filter(|b| *b > 0)
        .or_else(|| {
            device
                .get(schema, "capacityInKB")
                .and_then(Value::as_i64)
                .map(|kb| kb.saturating_mul(1024))
        })
        .filter(|b| *b > 0)
        .map(|b| b as u64)
}

/// The network a NIC's backing names (deviceName, or the name of its network reference);
/// "VM Network" when it names none. InvalidArgument for a network the host does not have.
pub(super) fn nic_network(host: &Host, device: &DataObject) -> Result<String, Fault> {
    let schema = host.schema;
    let backing = device.get(schema, "backing").and_then(Value::as_data);
    let network = backing
        .and_then(|b| b.get(schema, "deviceName"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            backing
                .and_then(|b| b.get(schema, "network"))
                .and_then(Value::as_moref)
                .and_then(|n| {
                    host.inventory()
                        .stored(schema, n, "name")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
        })
        .unwrap_or_else(|| "VM Network".into());
    if crate::locks::lock(&host.switches)
        .portgroup(&network)
        .is_err()
    {
        return Err(Fault::invalid_argument(
            schema,
            "deviceChange.device.backing",
            format!("network '{network}' does not exist"),
        ));
    }
    Ok(network)
}

/// The NIC model a VirtualEthernetCard's type names (`VirtualE1000` → `e1000`).
pub(super) fn nic_model(schema: &Schema, device: &DataObject) -> String {
    let ty = schema.ty(device.ty).name.to_string();
    ty.trim_start_matches("Virtual").to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_disks_name_their_parent_relative_to_their_folder() {
        let child = Path::new("/nonexistent/ds1/clone/clone.qcow2");
        let name = |parent: &str| relative_name(child, Path::new(parent));
        assert_eq!(
            name("/nonexistent/ds1/golden/golden.qcow2"),
            "../golden/golden.qcow2"
        );
        assert_eq!(name("/nonexistent/ds1/clone/base.qcow2"), "base.qcow2");
        assert_eq!(name("/nonexistent/ds2/b.qcow2"), "../../ds2/b.qcow2");
    }
}
