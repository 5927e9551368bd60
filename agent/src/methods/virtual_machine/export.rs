//! ExportVm: a powered-off or suspended VM's disks handed out through an HttpNfcLease, each
//! served as a streamOptimized VMDK generated from its current qcow2 chain.

use vireo_api::{Fault, Value};

use super::super::{Call, MethodResult};
use crate::faults;
use crate::nfc::{start, Direction, LeaseDisk};
use crate::vm::properties::DISK_KEY;
use crate::vm::Power;

/// ExportVm: the lease for the VM's disks (InvalidPowerState while it runs).
pub fn export_vm(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    let disks = {
        let state = vm.state();
        if state.power == Power::On {
            return Err(faults::invalid_power_state(call.schema, None, state.power));
        }
        (0..state.spec.disks.len())
            .map(|n| {
                let top = state
                    .disk_views
                    .get(n)
                    .and_then(|view| view.active.chain.first())
                    .ok_or_else(|| {
                        faults::file_fault(
                            call.schema,
                            &state.spec.disks[n].file_name,
                            "the disk cannot be read",
                        )
                    })?;
                let key = device_url_key(&vm.moref.id, n);
                Ok(LeaseDisk {
                    import_key: key.clone(),
                    key,
                    target_id: format!("disk-{n}.vmdk"),
                    path: top.clone(),
                    capacity: state.disk_capacities.get(n).copied().unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>, Fault>>()?
    };
    Ok(Some(Value::MoRef(start(
        call.host,
        &vm.moref,
        Direction::Export,
        disks,
    ))))
}

/// The deviceUrl key of the VM's disk `n`: its device, which OvfManager.CreateDescriptor's
/// `ovfFiles[].deviceId` names back.
pub fn device_url_key(vm_id: &str, n: usize) -> String {
    format!("/{vm_id}/VirtualDisk:{}", DISK_KEY + n as i32)
}
