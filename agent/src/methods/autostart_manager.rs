//! HostAutoStartManager: `config` (the defaults and each registered VM's power info) read from
//! `crate::autostart`, ReconfigureAutostart (checked, kept, then published), and
//! AutoStartPowerOn/AutoStartPowerOff (the start or stop sequence, run now on its own thread).

use std::sync::Arc;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::autostart::{self, Action, AutoStart, Heartbeat, PowerInfo};
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::locks::lock;

/// HostAutoStartManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostAutoStartManager",
    methods: &[
        ("ReconfigureAutostart", Handler::Sync(reconfigure)),
        ("AutoStartPowerOn", Handler::Sync(power_on)),
        ("AutoStartPowerOff", Handler::Sync(power_off)),
    ],
};

fn reconfigure(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let spec = call
        .arg("spec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument(schema, "spec", "spec is required"))?;
    let host = call.host;
    let mut settings = lock(&host.autostart);
    let mut next = settings.clone();
    if let Some(defaults) = spec.get(schema, "defaults").and_then(Value::as_data) {
        read_defaults(schema, defaults, &mut next)?;
    }
    let infos = spec
        .get(schema, "powerInfo")
        .map(Value::items)
        .unwrap_or_default();
    for info in infos.iter().filter_map(Value::as_data) {
        let info = read_power_info(call, info)?;
        next.set(info);
    }
    next.save(&host.config.data_dir)
        .map_err(|e| Fault::system_error(schema, e.to_string()))?;
    *settings = next;
    drop(settings);
    publish(host);
    Ok(None)
}

fn power_on(call: &Call<'_>) -> MethodResult {
    in_background(call.host, autostart::power_on_all)
}

fn power_off(call: &Call<'_>) -> MethodResult {
    in_background(call.host, autostart::power_off_all)
}

fn in_background(host: &Arc<Host>, sequence: fn(&Arc<Host>)) -> MethodResult {
    let schema = host.schema;
    let host = host.clone();
    std::thread::Builder::new()
        .name("autostart".into())
        .spawn(move || sequence(&host))
        .map_err(|e| Fault::system_error(schema, e.to_string()))?;
    Ok(None)
}

fn read_defaults(
    schema: &Schema,
    defaults: &DataObject,
    into: &mut AutoStart,
) -> Result<(), Fault> {
    let field = |name| defaults.get(schema, name);
    let target = &mut into.defaults;
    if let Some(enabled) = field("enabled").and_then(Value::as_bool) {
        target.enabled = enabled;
    }
    if let Some(delay) = field("startDelay").and_then(Value::as_i64) {
        target.start_delay = delay_arg(schema, "defaults.startDelay", delay)?;
    }
    if let Some(delay) = field("stopDelay").and_then(Value::as_i64) {
        target.stop_delay = delay_arg(schema, "defaults.stopDelay", delay)?;
    }
    if let Some(wait) = field("waitForHeartbeat").and_then(Value::as_bool) {
        target.wait_for_heartbeat = wait;
    }
    if let Some(text) = field("stopAction").and_then(Value::as_str) {
        target.stop_action = match Action::parse(text) {
            Some(
                a @ (Action::None | Action::PowerOff | Action::GuestShutdown | Action::Suspend),
            ) => a,
            _ => return Err(bad(schema, "defaults.stopAction", text)),
        };
    }
    Ok(())
}

fn read_power_info(call: &Call<'_>, info: &DataObject) -> Result<PowerInfo, Fault> {
    let schema = call.schema;
    let field = |name| info.get(schema, name);
    let key = field("key")
        .and_then(Value::as_moref)
        .ok_or_else(|| Fault::invalid_argument(schema, "powerInfo.key", "key is required"))?;
    let vm = call
        .host
        .vms
        .get(key)
        .ok_or_else(|| Fault::managed_object_not_found(schema, key))?;
    let int = |name| field(name).and_then(Value::as_i64).unwrap_or(-1);
    let start_order = int("startOrder");
    if start_order == 0 || start_order < -1 {
        return Err(bad(
            schema,
            "powerInfo.startOrder",
            &start_order.to_string(),
        ));
    }
    let action = |name, allowed: &[Action]| -> Result<Action, Fault> {
        let text = field(name)
            .and_then(Value::as_str)
            .unwrap_or("systemDefault");
        Action::parse(text)
            .filter(|a| allowed.contains(a))
            .ok_or_else(|| bad(schema, &format!("powerInfo.{name}"), text))
    };
    let heartbeat = match field("waitForHeartbeat").and_then(Value::as_str) {
        Some("yes") => Heartbeat::Yes,
        Some("no") => Heartbeat::No,
        _ => Heartbeat::SystemDefault,
    };
    Ok(PowerInfo {
        vmx: vm.vmx_path.to_string(),
        start_order: start_order as i32,
        start_delay: delay_arg(schema, "powerInfo.startDelay", int("startDelay"))?,
        wait_for_heartbeat: heartbeat,
        start_action: action(
            "startAction",
            &[Action::None, Action::PowerOn, Action::SystemDefault],
        )
        .map(|a| {
            if a == Action::SystemDefault {
                Action::None
            } else {
                a
            }
        })?,
        stop_delay: delay_arg(schema, "powerInfo.stopDelay", int("stopDelay"))?,
        stop_action: action(
            "stopAction",
            &[
                Action::None,
                Action::SystemDefault,
                Action::PowerOff,
                Action::GuestShutdown,
                Action::Suspend,
            ],
        )?,
    })
}

/// A delay in seconds: -1 (the default) or 0..=24 h.
fn delay_arg(schema: &Schema, name: &str, value: i64) -> Result<i32, Fault> {
    if value == -1 || (0..=86_400).contains(&value) {
        Ok(value as i32)
    } else {
        Err(bad(schema, name, &value.to_string()))
    }
}

fn bad(schema: &Schema, name: &str, value: &str) -> Fault {
    Fault::invalid_argument(schema, name, format!("'{value}' is not a valid {name}"))
}

/// Publishes `config` of the HostAutoStartManager: the defaults and the power info of each
/// registered VM that has settings, in order.
pub fn publish(host: &Host) {
    let schema = host.schema;
    let settings = lock(&host.autostart).clone();
    let defaults = &settings.defaults;
    let defaults = DataObject::of(schema, "AutoStartDefaults")
        .with(schema, "enabled", defaults.enabled)
        .with(schema, "startDelay", defaults.start_delay)
        .with(schema, "stopDelay", defaults.stop_delay)
        .with(schema, "waitForHeartbeat", defaults.wait_for_heartbeat)
        .with(schema, "stopAction", defaults.stop_action.as_str());
    let vms = host.vms.all();
    let infos: Vec<Value> = settings
        .vms
        .iter()
        .filter_map(|info| {
            let vm = vms.iter().find(|vm| vm.vmx_path.to_string() == info.vmx)?;
            Some(power_info(schema, info, vm.moref.clone()).into())
        })
        .collect();
    let config = DataObject::of(schema, "HostAutoStartManagerConfig")
        .with(schema, "defaults", defaults)
        .with(
            schema,
            "powerInfo",
            Value::Array(schema.known_type("AutoStartPowerInfo"), infos),
        );
    host.mutate(|inv| {
        inv.set(schema, &refs::autostart_manager(), "config", config.clone());
        crate::inventory::host_config::set_section(schema, inv, "autoStart", config);
    });
}

fn power_info(schema: &Schema, info: &PowerInfo, vm: vireo_api::MoRef) -> DataObject {
    let heartbeat = match info.wait_for_heartbeat {
        Heartbeat::Yes => "yes",
        Heartbeat::No => "no",
        Heartbeat::SystemDefault => "systemDefault",
    };
    DataObject::of(schema, "AutoStartPowerInfo")
        .with(schema, "key", vm)
        .with(schema, "startOrder", info.start_order)
        .with(schema, "startDelay", info.start_delay)
        .with(
            schema,
            "waitForHeartbeat",
            Value::enumeration(schema, "AutoStartWaitHeartbeatSetting", heartbeat),
        )
        .with(schema, "startAction", info.start_action.as_str())
        .with(schema, "stopDelay", info.stop_delay)
        .with(schema, "stopAction", info.stop_action.as_str())
}
