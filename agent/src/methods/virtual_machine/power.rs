//! VirtualMachine power: PowerOn/PowerOff/Reset/Suspend (as tasks) and TerminateVM.

use super::task;
use crate::methods::{Call, MethodResult};
use crate::vm::lifecycle;

pub(super) fn power_on(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    if call.host.leases.transferring(&vm.moref) {
        return Err(crate::faults::invalid_state(
            call.schema,
            "the VM is being exported: complete or abort its HttpNfcLease first",
        ));
    }
    let user = call.user().to_string();
    task(call, &vm, "VirtualMachine.powerOn", move |h, vm| {
        lifecycle::power_on(h, vm, &user).map(|_| None)
    })
}

pub(super) fn power_off(call: &Call<'_>) -> MethodResult {
    task(
        call,
        &call.this_vm()?,
        "VirtualMachine.powerOff",
        |h, vm| lifecycle::power_off(h, vm).map(|_| None),
    )
}

pub(super) fn reset(call: &Call<'_>) -> MethodResult {
    task(call, &call.this_vm()?, "VirtualMachine.reset", |h, vm| {
        lifecycle::reset(h, vm).map(|_| None)
    })
}

pub(super) fn suspend(call: &Call<'_>) -> MethodResult {
    task(call, &call.this_vm()?, "VirtualMachine.suspend", |h, vm| {
        lifecycle::suspend(h, vm).map(|_| None)
    })
}

pub(super) fn terminate(call: &Call<'_>) -> MethodResult {
    lifecycle::terminate(call.host, &*call.this_vm()?).map(|_| None)
}
