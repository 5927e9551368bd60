//! VirtualMachine methods, one file per family: power, question (AnswerVM), guest (through the
//! tools), inventory (Destroy, Unregister, templates), config (reload, storage refresh), clone,
//! snapshot, cbt (changed block tracking), reconfig, screenshot and console.

mod cbt;
mod clone;
mod config;
mod console;
mod export;
mod guest;
mod inventory;
mod power;
mod question;
mod reconfig;
mod screenshot;
mod snapshot;

use std::sync::Arc;

use vireo_api::{Fault, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::host::Host;
use crate::tasks::{create_task, TaskSpec};
use crate::vm::Vm;
pub use export::device_url_key;

/// VirtualMachine's methods (and ManagedEntity's Destroy_Task and Reload, for VMs).
pub const METHODS: MethodTable = MethodTable {
    ty: "VirtualMachine",
    methods: &[
        ("PowerOnVM_Task", Handler::Sync(power::power_on)),
        ("PowerOffVM_Task", Handler::Sync(power::power_off)),
        ("ResetVM_Task", Handler::Sync(power::reset)),
        ("SuspendVM_Task", Handler::Sync(power::suspend)),
        ("TerminateVM", Handler::Sync(power::terminate)),
        ("AnswerVM", Handler::Sync(question::answer)),
        ("ShutdownGuest", Handler::Sync(guest::shutdown)),
        ("RebootGuest", Handler::Sync(guest::reboot)),
        ("StandbyGuest", Handler::Sync(guest::standby)),
        (
            "MountToolsInstaller",
            Handler::Sync(guest::mount_tools_installer),
        ),
        (
            "UnmountToolsInstaller",
            Handler::Sync(guest::unmount_tools_installer),
        ),
        ("UpgradeTools_Task", Handler::Sync(guest::upgrade_tools)),
        (
            "ResetGuestInformation",
            Handler::Sync(guest::reset_information),
        ),
        ("Destroy_Task", Handler::Sync(inventory::destroy)),
        ("UnregisterVM", Handler::Sync(inventory::unregister)),
        ("MarkAsTemplate", Handler::Sync(inventory::mark_as_template)),
        (
            "MarkAsVirtualMachine",
            Handler::Sync(inventory::mark_as_virtual_machine),
        ),
        ("Reload", Handler::Sync(config::reload)),
        (
            "reloadVirtualMachineFromPath_Task",
            Handler::Sync(config::reload_from_path),
        ),
        (
            "RefreshStorageInfo",
            Handler::Sync(config::refresh_storage_info),
        ),
        (
            "QueryUnownedFiles",
            Handler::Sync(config::query_unowned_files),
        ),
        ("CloneVM_Task", Handler::Sync(clone::clone)),
        ("CreateSnapshot_Task", Handler::Sync(snapshot::create)),
        ("CreateSnapshotEx_Task", Handler::Sync(snapshot::create_ex)),
        (
            "RevertToCurrentSnapshot_Task",
            Handler::Sync(snapshot::revert_to_current),
        ),
        (
            "RemoveAllSnapshots_Task",
            Handler::Sync(snapshot::remove_all),
        ),
        (
            "ConsolidateVMDisks_Task",
            Handler::Sync(snapshot::consolidate),
        ),
        ("PromoteDisks_Task", Handler::Sync(snapshot::promote_disks)),
        (
            "EstimateStorageForConsolidateSnapshots_Task",
            Handler::Sync(snapshot::estimate_consolidation),
        ),
        (
            "QueryChangedDiskAreas",
            Handler::Sync(cbt::query_changed_disk_areas),
        ),
        ("ReconfigVM_Task", Handler::Sync(reconfig::reconfigure)),
        ("Rename_Task", Handler::Sync(reconfig::rename)),
        ("UpgradeVM_Task", Handler::Sync(reconfig::upgrade)),
        (
            "ExtractOvfEnvironment",
            Handler::Sync(config::extract_ovf_environment),
        ),
        ("SendNMI", Handler::Sync(console::send_nmi)),
        ("ExportVm", Handler::Sync(export::export_vm)),
        (
            "PutUsbScanCodes",
            Handler::Sync(console::put_usb_scan_codes),
        ),
        ("CreateScreenshot_Task", Handler::Sync(screenshot::create)),
        ("AcquireTicket", Handler::Sync(console::acquire_ticket)),
        (
            "AcquireMksTicket",
            Handler::Sync(console::acquire_mks_ticket),
        ),
        (
            "SetScreenResolution",
            Handler::Sync(console::set_screen_resolution),
        ),
    ],
};

/// Runs `work` as a task on the VM (one mutating task per VM; TaskInProgress otherwise).
pub(crate) fn task(
    call: &Call<'_>,
    vm: &Arc<Vm>,
    description_id: &str,
    work: impl FnOnce(&Arc<Host>, &Arc<Vm>) -> Result<Option<Value>, Fault> + Send + 'static,
) -> MethodResult {
    let handle = create_task(
        call.host,
        TaskSpec {
            entity: &vm.moref,
            description_id,
            method: call.schema.method(call.request.method).name.as_ref(),
            user: call.user(),
            cancelable: false,
            mutating: true,
        },
    )?;
    let task_ref = handle.task.clone();
    let (host, vm) = (call.host.clone(), vm.clone());
    std::thread::Builder::new()
        .name(format!("task-vm{}", vm.id))
        .spawn(move || {
            handle.start();
            match work(&host, &vm) {
                Ok(result) => handle.succeed(result),
                Err(fault) => handle.fail(fault),
            }
        })
        .map_err(|e| Fault::system_error(call.schema, e.to_string()))?;
    Ok(Some(Value::MoRef(task_ref)))
}
