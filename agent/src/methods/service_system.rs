//! HostServiceSystem, a read-only view: `hostd` is vireod itself (always running, started with
//! the host), `ntpd` the machine's time service (ntpd, chronyd or systemd-timesyncd) and
//! `TSM-SSH` its SSH daemon, each running when such a process runs now (their policy says
//! whether they run: the machine's init starts them, not vireod). Refresh reads them again;
//! starting, stopping or changing a policy answers NotSupported.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::faults::machine_owned;
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::host_config::set_section;
use crate::inventory::machine;

/// HostServiceSystem's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostServiceSystem",
    methods: &[
        ("RefreshServices", Handler::Sync(refresh)),
        ("StartService", Handler::Sync(machine_service)),
        ("StopService", Handler::Sync(machine_service)),
        ("RestartService", Handler::Sync(machine_service)),
        ("UpdateServicePolicy", Handler::Sync(machine_service)),
        ("UninstallService", Handler::Sync(machine_service)),
    ],
};

/// The firewall ruleset of vireod's own port (see `firewall_system`).
pub const HOSTD_RULESET: &str = "vSphereClient";

/// Services of the machine: key, label, the process names that mean it runs.
const MACHINE_SERVICES: [(&str, &str, &[&str]); 2] = [
    (
        "ntpd",
        "NTP Daemon",
        &["ntpd", "chronyd", "systemd-timesyn"],
    ),
    ("TSM-SSH", "SSH", &["sshd"]),
];

fn refresh(call: &Call<'_>) -> MethodResult {
    publish(call.host);
    Ok(None)
}

fn machine_service(call: &Call<'_>) -> MethodResult {
    Err(machine_owned(
        call.schema,
        "Starting and stopping services (other than vireod, which is this service)",
    ))
}

fn service(schema: &Schema, key: &str, label: &str, running: bool, required: bool) -> DataObject {
    DataObject::of(schema, "HostService")
        .with(schema, "key", key)
        .with(schema, "label", label)
        .with(schema, "required", required)
        .with(schema, "uninstallable", false)
        .with(schema, "running", running)
        .with(schema, "policy", if running { "on" } else { "off" })
}

/// Publishes `serviceInfo` (and `config.service`).
pub fn publish(host: &Host) {
    let schema = host.schema;
    let processes = machine::process_names();
    let hostd = service(
        schema,
        "hostd",
        "vSphere API host agent (vireod)",
        true,
        true,
    )
    .with(schema, "ruleset", Value::strings(schema, [HOSTD_RULESET]));
    let services = std::iter::once(hostd)
        .chain(MACHINE_SERVICES.iter().map(|(key, label, names)| {
            let running = processes.iter().any(|p| names.contains(&p.as_str()));
            service(schema, key, label, running, false)
        }))
        .map(Value::from)
        .collect();
    let info = DataObject::of(schema, "HostServiceInfo").with(
        schema,
        "service",
        Value::Array(schema.known_type("HostService"), services),
    );
    host.mutate(|inv| {
        inv.set(schema, &refs::service_system(), "serviceInfo", info.clone());
        set_section(schema, inv, "service", info);
    });
}
