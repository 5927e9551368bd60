//! The ConfigSpec settings a `.vmx` keeps as one key each, under the names ESXi's vmx uses:
//! hot-add switches, cores per socket, the tools' script and time-sync flags, boot options and
//! default power operations. One table says where each sits in ConfigSpec, in ConfigInfo and
//! in the file, so that reading a spec, writing the `.vmx` and showing the config agree.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, Value};

use crate::vm::spec::VmSpec;

/// The value a setting holds.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A boolean (`TRUE`/`FALSE` in the file) and its default.
    Bool(bool),
    /// An integer within `min..=max`, and its default.
    Int {
        /// The lowest value allowed.
        min: i64,
        /// The highest value allowed.
        max: i64,
        /// The value when unset.
        default: i64,
    },
    /// One of an enumeration's values (the first is the default).
    Enum(&'static [&'static str]),
}

/// Where a setting sits in an object: a field of the object itself, or of one it holds.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    /// The holding field and its type (`("tools", "ToolsConfigInfo")`), or None at the top.
    pub group: Option<(&'static str, &'static str)>,
    /// The field.
    pub field: &'static str,
}

/// One ConfigSpec setting kept as a `.vmx` key.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Where a VirtualMachineConfigSpec carries it.
    pub spec: Place,
    /// Where VirtualMachineConfigInfo shows it.
    pub info: Place,
    /// Its `.vmx` key.
    pub key: &'static str,
    /// Its values.
    pub kind: Kind,
}

const fn top(field: &'static str) -> Place {
    Place { group: None, field }
}

const fn tools(field: &'static str) -> Place {
    Place {
        group: Some(("tools", "ToolsConfigInfo")),
        field,
    }
}

const fn boot(field: &'static str) -> Place {
    Place {
        group: Some(("bootOptions", "VirtualMachineBootOptions")),
        field,
    }
}

const fn same(place: Place, key: &'static str, kind: Kind) -> Setting {
    Setting {
        spec: place,
        info: place,
        key,
        kind,
    }
}

const fn power_op(field: &'static str, key: &'static str) -> Setting {
    Setting {
        spec: Place {
            group: Some(("powerOpInfo", "VirtualMachineDefaultPowerOpInfo")),
            field,
        },
        info: Place {
            group: Some(("defaultPowerOps", "VirtualMachineDefaultPowerOpInfo")),
            field,
        },
        key,
        kind: Kind::Enum(&["preset", "soft", "hard"]),
    }
}

/// `.vmx` key of numCoresPerSocket.
pub const CORES_PER_SOCKET: &str = "cpuid.coresPerSocket";
/// `.vmx` key of cpuHotAddEnabled.
pub const CPU_HOT_ADD: &str = "vcpu.hotadd";
/// `.vmx` key of memoryHotAddEnabled.
pub const MEMORY_HOT_ADD: &str = "mem.hotadd";

/// Every setting kept as a `.vmx` key.
pub const SETTINGS: &[Setting] = &[
    Setting {
        spec: top("numCoresPerSocket"),
        info: Place {
            group: Some(("hardware", "VirtualHardware")),
            field: "numCoresPerSocket",
        },
        key: CORES_PER_SOCKET,
        kind: Kind::Int {
            min: 1,
            max: 64,
            default: 1,
        },
    },
    same(top("cpuHotAddEnabled"), CPU_HOT_ADD, Kind::Bool(false)),
    same(
        top("cpuHotRemoveEnabled"),
        "vcpu.hotremove",
        Kind::Bool(false),
    ),
    same(
        top("memoryHotAddEnabled"),
        MEMORY_HOT_ADD,
        Kind::Bool(false),
    ),
    same(
        tools("afterPowerOn"),
        "toolScripts.afterPowerOn",
        Kind::Bool(true),
    ),
    same(
        tools("afterResume"),
        "toolScripts.afterResume",
        Kind::Bool(true),
    ),
    same(
        tools("beforeGuestStandby"),
        "toolScripts.beforeSuspend",
        Kind::Bool(true),
    ),
    same(
        tools("beforeGuestShutdown"),
        "toolScripts.beforePowerOff",
        Kind::Bool(true),
    ),
    same(
        tools("beforeGuestReboot"),
        "toolScripts.beforeReboot",
        Kind::Bool(true),
    ),
    same(
        tools("toolsUpgradePolicy"),
        "tools.upgrade.policy",
        Kind::Enum(&["manual", "upgradeAtPowerCycle"]),
    ),
    same(
        tools("syncTimeWithHost"),
        "tools.syncTime",
        Kind::Bool(false),
    ),
    same(
        boot("bootDelay"),
        "bios.bootDelay",
        Kind::Int {
            min: 0,
            max: 10 * 60 * 1000,
            default: 0,
        },
    ),
    same(
        boot("enterBIOSSetup"),
        "bios.forceSetupOnce",
        Kind::Bool(false),
    ),
    same(
        boot("efiSecureBootEnabled"),
        "uefi.secureBoot.enabled",
        Kind::Bool(false),
    ),
    same(
        boot("bootRetryEnabled"),
        "bios.bootRetry.enabled",
        Kind::Bool(false),
    ),
    same(
        boot("bootRetryDelay"),
        "bios.bootRetry.delay",
        Kind::Int {
            min: 0,
            max: 10 * 60 * 1000,
            default: 10_000,
        },
    ),
    same(
        boot("networkBootProtocol"),
        "networkBootProtocol",
        Kind::Enum(&["ipv4", "ipv6"]),
    ),
    power_op("powerOffType", "powerType.powerOff"),
    power_op("suspendType", "powerType.suspend"),
    power_op("resetType", "powerType.reset"),
];

/// The setting kept under `.vmx` key `key` (one of this module's constants).
pub fn setting(key: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .expect("a key of the settings table")
}

/// The ConfigSpec fields (top level, or holding objects) the table covers.
pub fn spec_fields() -> impl Iterator<Item = &'static str> {
    SETTINGS
        .iter()
        .map(|s| s.spec.group.map_or(s.spec.field, |(group, _)| group))
}

impl Setting {
    /// Its value in `spec` (its default when the `.vmx` lacks it or holds something else).
    pub fn value(&self, spec: &VmSpec) -> Value {
        let text = spec.extra(self.key).map(str::trim);
        match self.kind {
            Kind::Bool(default) => {
                Value::Bool(text.map_or(default, |t| t.eq_ignore_ascii_case("true")))
            }
            Kind::Int { min, max, default } => Value::Long(
                text.and_then(|t| t.parse().ok())
                    .filter(|n| (min..=max).contains(n))
                    .unwrap_or(default),
            ),
            Kind::Enum(values) => Value::String(
                text.and_then(|t| values.iter().find(|v| v.eq_ignore_ascii_case(t)))
                    .unwrap_or(&values[0])
                    .to_string()
                    .into(),
            ),
        }
    }

    /// The `.vmx` text of a client's value, checked; InvalidArgument naming the field otherwise.
    fn text(&self, schema: &Schema, value: &Value) -> Result<String, Fault> {
        let invalid = |why: String| Fault::invalid_argument(schema, &self.spec_path(), why);
        match self.kind {
            Kind::Bool(_) => value
                .as_bool()
                .map(|b| if b { "TRUE" } else { "FALSE" }.to_string())
                .ok_or_else(|| invalid("not a boolean".into())),
            Kind::Int { min, max, .. } => match value.as_i64() {
                Some(n) if (min..=max).contains(&n) => Ok(n.to_string()),
                other => Err(invalid(format!("{other:?} is outside {min}..={max}"))),
            },
            Kind::Enum(values) => match value.as_str() {
                Some(v) if values.contains(&v) => Ok(v.to_string()),
                other => Err(invalid(format!("{other:?} is not one of {values:?}"))),
            },
        }
    }

    /// The setting's name as a client writes it (`tools.syncTimeWithHost`).
    pub fn spec_path(&self) -> String {
        match self.spec.group {
            Some((group, _)) => format!("{group}.{}", self.spec.field),
            None => self.spec.field.to_string(),
        }
    }
}

/// Reads every table setting `config` (a VirtualMachineConfigSpec) carries into `next`.
pub fn apply(schema: &Schema, config: &DataObject, next: &mut VmSpec) -> Result<(), Fault> {
    for setting in SETTINGS {
        let Some(value) = read(schema, config, setting.spec) else {
            continue;
        };
        let text = setting.text(schema, value)?;
        next.set_extra(setting.key, &text);
    }
    Ok(())
}

fn read<'a>(schema: &Schema, object: &'a DataObject, place: Place) -> Option<&'a Value> {
    let holder = match place.group {
        Some((group, _)) => object.get(schema, group)?.as_data()?,
        None => object,
    };
    holder.lookup(schema, place.field)
}

/// Shows every table setting of `spec` in `info` (a VirtualMachineConfigInfo), making the
/// holding objects it lacks.
pub fn show(schema: &Schema, spec: &VmSpec, info: &mut DataObject) {
    for setting in SETTINGS {
        let value = setting.value(spec);
        match setting.info.group {
            None => {
                info.set(schema, setting.info.field, value);
            }
            Some((group, ty)) => {
                let mut holder = info
                    .get(schema, group)
                    .and_then(Value::as_data)
                    .cloned()
                    .unwrap_or_else(|| DataObject::of(schema, ty));
                holder.set(schema, setting.info.field, value);
                info.set(schema, group, holder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::vmx_file::VmxFile;

    #[test]
    fn unset_and_garbled_keys_read_as_their_defaults() {
        let vmx = VmxFile::parse(
            "tools.syncTime = \"TRUE\"\nbios.bootDelay = \"lots\"\ntools.upgrade.policy = \"UPGRADEATPOWERCYCLE\"\n",
        );
        let spec = VmSpec::from_vmx(&vmx, "x");
        let of = |key: &str| setting(key).value(&spec);
        assert_eq!(of("tools.syncTime"), Value::Bool(true));
        assert_eq!(of("bios.bootDelay"), Value::Long(0));
        assert_eq!(of("toolScripts.afterPowerOn"), Value::Bool(true));
        assert_eq!(
            of("tools.upgrade.policy"),
            Value::String("upgradeAtPowerCycle".into())
        );
        assert_eq!(of(CORES_PER_SOCKET), Value::Long(1));
    }

    #[test]
    fn every_key_is_one_a_client_may_also_set_through_extra_config() {
        for setting in SETTINGS {
            assert!(
                !crate::vm::spec::is_owned_key(setting.key),
                "{}",
                setting.key
            );
        }
    }
}
