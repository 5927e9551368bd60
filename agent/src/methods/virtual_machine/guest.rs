//! VirtualMachine guest operations through the tools: ShutdownGuest, RebootGuest, StandbyGuest,
//! ResetGuestInformation (forgets what the tools reported), and the tools installer
//! (MountToolsInstaller, UnmountToolsInstaller, UpgradeTools_Task).

use vireo_api::Fault;
use vireo_tools::protocol::Operation;

use crate::faults;
use crate::host::Host;
use crate::methods::{Call, MethodResult};
use crate::vm::lifecycle;
use crate::vm::tools_host::{self, ToolsRequestError};
use crate::vm::{tools_installer, Power, Vm};

pub(super) fn shutdown(call: &Call<'_>) -> MethodResult {
    guest_request(call.host, &*call.this_vm()?, Operation::Shutdown)
}

pub(super) fn reboot(call: &Call<'_>) -> MethodResult {
    guest_request(call.host, &*call.this_vm()?, Operation::Reboot)
}

/// StandbyGuest: the guest tools get the guest ready, then the VM is suspended (in the
/// background: the call returns once the guest has accepted, as on ESXi).
pub(super) fn standby(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    guest_request(call.host, &vm, Operation::Standby)?;
    let host = call.host.clone();
    std::thread::spawn(move || {
        if let Err(fault) = lifecycle::suspend(&host, &vm) {
            tracing::warn!(
                vm = vm.id,
                "cannot suspend after the guest's standby: {}",
                fault.message
            );
        }
    });
    Ok(None)
}

pub(super) fn mount_tools_installer(call: &Call<'_>) -> MethodResult {
    tools_installer::mount(call.host, &*call.this_vm()?).map(|()| None)
}

pub(super) fn unmount_tools_installer(call: &Call<'_>) -> MethodResult {
    tools_installer::unmount(call.host, &*call.this_vm()?).map(|()| None)
}

/// UpgradeTools_Task: a task on the VM (the installer's options are not used: vireo-tools'
/// installer takes none).
pub(super) fn upgrade_tools(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    super::task(call, &vm, "VirtualMachine.upgradeTools", |host, vm| {
        tools_installer::upgrade(host, vm).map(|()| None)
    })
}

/// ResetGuestInformation: only while the VM is powered off (as ESXi), since a running guest's
/// tools would report again at once.
pub(super) fn reset_information(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    let mut state = vm.edit(call.host);
    if state.power != Power::Off {
        return Err(faults::invalid_power_state(
            call.schema,
            Some(Power::Off),
            state.power,
        ));
    }
    state.tools.info = None;
    Ok(None)
}

/// Shutdown/Reboot/StandbyGuest: asks the guest tools; ToolsUnavailable without them.
fn guest_request(host: &Host, vm: &Vm, op: Operation) -> MethodResult {
    let schema = host.schema;
    let power = vm.state().power;
    if power != Power::On {
        return Err(faults::invalid_power_state(schema, None, power));
    }
    match tools_host::request(vm, op) {
        Ok(()) => Ok(None),
        Err(ToolsRequestError::Unavailable) => {
            Err(faults::tools_unavailable(schema, "complete the operation"))
        }
        Err(error) => Err(Fault::system_error(schema, error.to_string())),
    }
}
