//! HostCpuSchedulerSystem: `hyperthreadInfo` is the machine's simultaneous multithreading as the
//! kernel reports it (/sys/devices/system/cpu/smt); turning it on or off is the machine's
//! business and answers NotSupported.

use vireo_api::DataObject;

use super::{Call, Handler, MethodResult, MethodTable};
use crate::faults::machine_owned;
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::host_config::set_section;
use crate::inventory::machine;

/// HostCpuSchedulerSystem's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostCpuSchedulerSystem",
    methods: &[
        ("EnableHyperThreading", Handler::Sync(machine_smt)),
        ("DisableHyperThreading", Handler::Sync(machine_smt)),
    ],
};

fn machine_smt(call: &Call<'_>) -> MethodResult {
    Err(machine_owned(call.schema, "Simultaneous multithreading"))
}

/// Publishes `hyperthreadInfo` (and `config.hyperThread`).
pub fn publish(host: &Host) {
    let schema = host.schema;
    let smt = machine::smt();
    let info = DataObject::of(schema, "HostHyperThreadScheduleInfo")
        .with(schema, "available", smt.available)
        .with(schema, "active", smt.active)
        .with(schema, "config", smt.active);
    host.mutate(|inv| {
        inv.set(
            schema,
            &refs::cpu_scheduler(),
            "hyperthreadInfo",
            info.clone(),
        );
        set_section(schema, inv, "hyperThread", info);
    });
}
