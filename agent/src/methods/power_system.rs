//! HostPowerSystem: the machine's CPU frequency policy in ESXi's terms. With cpufreq, the
//! governor of CPU 0 maps to a policy (performance → High performance, powersave → Low power,
//! userspace → Custom, any other → Balanced); without it the processors run at a fixed
//! frequency, which is High performance. ConfigurePowerPolicy answers NotSupported: the
//! governor is the machine's.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::faults::machine_owned;
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::host_config::set_section;
use crate::inventory::machine;

/// HostPowerSystem's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostPowerSystem",
    methods: &[("ConfigurePowerPolicy", Handler::Sync(machine_governor))],
};

fn machine_governor(call: &Call<'_>) -> MethodResult {
    Err(machine_owned(call.schema, "The CPU frequency governor"))
}

/// ESXi's policies: key, name, short name, description.
const POLICIES: [(i32, &str, &str, &str); 4] = [
    (
        1,
        "High performance",
        "static",
        "The processors run at their highest frequency.",
    ),
    (
        2,
        "Balanced",
        "dynamic",
        "The kernel scales the processors' frequency with load.",
    ),
    (
        3,
        "Low power",
        "low",
        "The processors run at their lowest frequency.",
    ),
    (
        4,
        "Custom",
        "custom",
        "A user-space program sets the processors' frequency.",
    ),
];

/// The short name of the policy a cpufreq governor (or its absence) amounts to.
pub fn policy_of(governor: Option<&str>) -> &'static str {
    match governor {
        None | Some("performance") => "static",
        Some("powersave") => "low",
        Some("userspace") => "custom",
        Some(_) => "dynamic",
    }
}

fn policy(schema: &Schema, short_name: &str) -> Option<DataObject> {
    let (key, name, short, description) = POLICIES.iter().find(|p| p.2 == short_name)?;
    Some(
        DataObject::of(schema, "HostPowerPolicy")
            .with(schema, "key", *key)
            .with(schema, "name", *name)
            .with(schema, "shortName", *short)
            .with(schema, "description", *description),
    )
}

/// Publishes `capability` and `info` (and their `config` sections).
pub fn publish(host: &Host) {
    let schema = host.schema;
    let governor = machine::cpufreq_governor();
    // Without cpufreq only the fixed frequency exists; with it, every policy a governor gives.
    let available: Vec<Value> = match governor {
        None => policy(schema, "static")
            .into_iter()
            .map(Value::from)
            .collect(),
        Some(_) => POLICIES
            .iter()
            .filter_map(|p| policy(schema, p.2))
            .map(Value::from)
            .collect(),
    };
    let capability = DataObject::of(schema, "PowerSystemCapability").with(
        schema,
        "availablePolicy",
        Value::Array(schema.known_type("HostPowerPolicy"), available),
    );
    let mut info = DataObject::of(schema, "PowerSystemInfo");
    if let Some(current) = policy(schema, policy_of(governor.as_deref())) {
        info.set(schema, "currentPolicy", current);
    }
    host.mutate(|inv| {
        let system = refs::power_system();
        inv.set(schema, &system, "capability", capability.clone());
        inv.set(schema, &system, "info", info.clone());
        set_section(schema, inv, "powerSystemCapability", capability);
        set_section(schema, inv, "powerSystemInfo", info);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn governors_map_to_esxi_policies() {
        assert_eq!(policy_of(None), "static");
        assert_eq!(policy_of(Some("performance")), "static");
        assert_eq!(policy_of(Some("schedutil")), "dynamic");
        assert_eq!(policy_of(Some("powersave")), "low");
        assert_eq!(policy_of(Some("userspace")), "custom");
    }
}
