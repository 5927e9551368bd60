//! ResourcePool.ImportVApp: makes the VM a VirtualMachineImportSpec describes (its disks new,
//! empty and thin, each at most `MAX_DISK_BYTES`) in the VM folder, powered off, and hands
//! out an import HttpNfcLease whose deviceUrls take each disk's VMDK (`nfc::upload`). The VM
//! stays while the lease is ready; a lease that is aborted or times out removes it.

use std::sync::Arc;

use vireo_api::{DataObject, Fault, Value};

use super::ovf_import::unit_of;
use super::virtual_machine::device_url_key;
use super::{Call, Handler, MethodResult, MethodTable};
use crate::host::Host;
use crate::nfc::{import_key, start, Direction, LeaseDisk};
use crate::ovf::package::MAX_DISK_BYTES;
use crate::vm::{create, Vm};

/// ResourcePool's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "ResourcePool",
    methods: &[("ImportVApp", Handler::Sync(import_vapp))],
};

fn import_vapp(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let spec = call
        .arg("spec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument(schema, "spec", "spec is required"))?;
    if !schema.is_a(spec.ty, schema.known_type("VirtualMachineImportSpec")) {
        return Err(Fault::not_supported(
            schema,
            "This host imports virtual machines, not vApps (VirtualAppImportSpec).",
        ));
    }
    if let Some(folder) = call.arg("folder").and_then(Value::as_moref) {
        if folder.id.as_ref() != "ha-folder-vm" {
            return Err(Fault::not_supported(
                schema,
                "VMs live in the datacenter's VM folder (ha-folder-vm).",
            ));
        }
    }
    let config = spec
        .get(schema, "configSpec")
        .and_then(Value::as_data)
        .ok_or_else(|| {
            Fault::invalid_argument(schema, "spec.configSpec", "configSpec is required")
        })?;
    check_new_disks(call.host, config)?;
    let vm = create::create_vm(call.host, config)?;
    let disks = lease_disks(call.host, &vm)?;
    Ok(Some(Value::MoRef(start(
        call.host,
        &vm.moref,
        Direction::Import,
        disks,
    ))))
}

/// An import only makes new disks (uploads never write into existing files), none beyond
/// `MAX_DISK_BYTES` and none a child of another.
fn check_new_disks(host: &Host, config: &DataObject) -> Result<(), Fault> {
    let schema = host.schema;
    let bad = |why: &str| Fault::invalid_argument(schema, "spec.configSpec.deviceChange", why);
    for change in config
        .get(schema, "deviceChange")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_data)
    {
        let Some(device) = change.get(schema, "device").and_then(Value::as_data) else {
            continue;
        };
        if !schema.is_a(device.ty, schema.known_type("VirtualDisk")) {
            continue;
        }
        if change.get(schema, "fileOperation").and_then(Value::as_str) != Some("create") {
            return Err(bad("an import makes new disks (fileOperation create) only"));
        }
        let backing = device.get(schema, "backing").and_then(Value::as_data);
        if backing.and_then(|b| b.get(schema, "parent")).is_some() {
            return Err(bad("an imported disk cannot be a child of another disk"));
        }
        let bytes = create::requested_capacity(schema, device).unwrap_or(0);
        if bytes > MAX_DISK_BYTES {
            return Err(bad(&format!(
                "a disk may have at most {MAX_DISK_BYTES} bytes, not {bytes}"
            )));
        }
    }
    Ok(())
}

/// The new VM's disks as the lease receives them.
fn lease_disks(host: &Arc<Host>, vm: &Vm) -> Result<Vec<LeaseDisk>, Fault> {
    let state = vm.state();
    state
        .spec
        .disks
        .iter()
        .enumerate()
        .map(|(n, disk)| {
            let path = vm
                .disk_path(&disk.file_name, &host.datastores())
                .map_err(|e| Fault::system_error(host.schema, e.to_string()))?;
            Ok(LeaseDisk {
                key: device_url_key(&vm.moref.id, n),
                import_key: import_key(&state.spec.name, unit_of(n)),
                target_id: format!("disk-{n}.vmdk"),
                path,
                capacity: state.disk_capacities.get(n).copied().unwrap_or(0),
            })
        })
        .collect()
}
