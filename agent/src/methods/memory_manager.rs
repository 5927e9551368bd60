//! HostMemorySystem: vireod reserves no memory for itself or for VMs ahead of use (a guest's
//! memory is taken as it touches it), so the service console reservation is zero and all of
//! the machine's memory is unreserved. Changing the reservations answers NotSupported.

use vireo_api::DataObject;

use super::{Call, Handler, MethodResult, MethodTable};
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::host_facts::HostFacts;

/// HostMemorySystem's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostMemorySystem",
    methods: &[
        (
            "ReconfigureServiceConsoleReservation",
            Handler::Sync(no_reservations),
        ),
        (
            "ReconfigureVirtualMachineReservation",
            Handler::Sync(no_reservations),
        ),
    ],
};

fn no_reservations(call: &Call<'_>) -> MethodResult {
    Err(vireo_api::Fault::not_supported(
        call.schema,
        "vireod reserves no memory ahead of use; there is no reservation to change.",
    ))
}

/// Publishes `consoleReservationInfo`.
pub fn publish(host: &Host) {
    let schema = host.schema;
    let info = DataObject::of(schema, "ServiceConsoleReservationInfo")
        .with(schema, "serviceConsoleReservedCfg", 0i64)
        .with(schema, "serviceConsoleReserved", 0i64)
        .with(schema, "unreserved", HostFacts::read().memory_bytes);
    host.mutate(|inv| {
        inv.set(
            schema,
            &refs::memory_manager(),
            "consoleReservationInfo",
            info,
        )
    });
}
