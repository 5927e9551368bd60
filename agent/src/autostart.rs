//! The host's auto-start (HostAutoStartManager): the defaults and each VM's start and stop
//! settings, kept in `autostart.json` in the data dir; the start sequence vireod runs when it
//! starts (the VMs marked to power on, in order, each followed by its start delay or, when
//! asked, by its first tools heartbeat) and the stop sequence of a clean service stop (the
//! ordered VMs in reverse, each stopped by its stop action, waiting up to its stop delay).
//! Both run only while auto-start is enabled; AutoStartPowerOn/Off run them on demand.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vireo_tools::protocol::Operation;

use crate::host::Host;
use crate::locks::lock;
use crate::tasks::{create_task, TaskSpec};
use crate::vm::{lifecycle, tools_host, Power, Vm};

/// The file holding the settings, in the data dir.
const FILE: &str = "autostart.json";

/// Why the settings could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum AutoStartError {
    /// The file could not be read, parsed or written.
    #[error("auto-start settings {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What auto-start does with a VM (AutoStartAction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Nothing.
    None,
    /// What the defaults say (stop actions only).
    SystemDefault,
    /// Power on.
    PowerOn,
    /// Hard power off.
    PowerOff,
    /// Ask the guest tools to shut the guest down.
    GuestShutdown,
    /// Suspend.
    Suspend,
}

impl Action {
    /// Every action with its API name.
    const NAMES: [(Action, &'static str); 6] = [
        (Action::None, "none"),
        (Action::SystemDefault, "systemDefault"),
        (Action::PowerOn, "powerOn"),
        (Action::PowerOff, "powerOff"),
        (Action::GuestShutdown, "guestShutdown"),
        (Action::Suspend, "suspend"),
    ];

    /// The action an API string names (ESXi accepts any case: "PowerOn").
    pub fn parse(text: &str) -> Option<Action> {
        Self::NAMES
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(text.trim()))
            .map(|(action, _)| *action)
    }

    /// Its API name.
    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(action, _)| *action == self)
            .map(|(_, name)| *name)
            .expect("every action is named")
    }
}

/// Whether to wait for the guest's heartbeat before starting the next VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Heartbeat {
    /// Wait for it (at most the start delay).
    Yes,
    /// Wait the start delay.
    No,
    /// As the defaults say.
    SystemDefault,
}

/// The host-wide settings (AutoStartDefaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Defaults {
    /// Whether VMs start with the host and stop with it.
    pub enabled: bool,
    /// Seconds between starting one VM and the next.
    pub start_delay: i32,
    /// Seconds a VM's stop may take before the next is stopped.
    pub stop_delay: i32,
    /// Whether the next VM starts once the guest's tools send a heartbeat.
    pub wait_for_heartbeat: bool,
    /// The stop action of VMs that use the system default.
    pub stop_action: Action,
}

impl Default for Defaults {
    /// ESXi's: disabled, 120 s delays, no heartbeat wait, power off.
    fn default() -> Defaults {
        Defaults {
            enabled: false,
            start_delay: 120,
            stop_delay: 120,
            wait_for_heartbeat: false,
            stop_action: Action::PowerOff,
        }
    }
}

/// One VM's settings (AutoStartPowerInfo); -1 delays use the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PowerInfo {
    /// The VM, by its `.vmx` datastore path (its identity across restarts).
    pub vmx: String,
    /// 1-based position in the start order; -1 for "any order" (after the ordered ones).
    pub start_order: i32,
    /// Seconds after starting it before the next starts (-1: default).
    pub start_delay: i32,
    /// Whether to wait for its heartbeat.
    pub wait_for_heartbeat: Heartbeat,
    /// PowerOn or None.
    pub start_action: Action,
    /// Seconds its stop may take (-1: default).
    pub stop_delay: i32,
    /// How it stops.
    pub stop_action: Action,
}

/// The whole auto-start configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoStart {
    /// Host-wide settings.
    pub defaults: Defaults,
    /// Per-VM settings: the ordered ones first (by start order), then the unordered.
    pub vms: Vec<PowerInfo>,
}

impl AutoStart {
    /// Reads the settings kept in `data_dir` (ESXi's defaults when there are none).
    pub fn load(data_dir: &Path) -> Result<AutoStart, AutoStartError> {
        let path = data_dir.join(FILE);
        match crate::json_file::load(&path) {
            Ok(kept) => Ok(kept.unwrap_or_default()),
            Err(source) => Err(AutoStartError::File { path, source }),
        }
    }

    /// Keeps the settings in `data_dir` (written whole, then renamed into place).
    pub fn save(&self, data_dir: &Path) -> Result<(), AutoStartError> {
        let path = data_dir.join(FILE);
        crate::json_file::save(&path, self).map_err(|source| AutoStartError::File { path, source })
    }

    /// Sets one VM's settings: an ordered VM goes to its position (those from there on move
    /// down one), an unordered one after the ordered; positions are then renumbered 1..n.
    pub fn set(&mut self, info: PowerInfo) {
        self.vms.retain(|v| v.vmx != info.vmx);
        let ordered = self.vms.iter().filter(|v| v.start_order > 0).count();
        let at = if info.start_order > 0 {
            (info.start_order as usize - 1).min(ordered)
        } else {
            self.vms.len()
        };
        self.vms.insert(at, info);
        let mut next = 1;
        for vm in &mut self.vms {
            if vm.start_order > 0 {
                vm.start_order = next;
                next += 1;
            }
        }
    }

    /// The VMs to power on, in order.
    pub fn start_sequence(&self) -> impl Iterator<Item = &PowerInfo> {
        self.vms
            .iter()
            .filter(|v| v.start_action == Action::PowerOn)
    }

    /// The VMs to stop, in order (the start order reversed), with their stop actions.
    pub fn stop_sequence(&self) -> Vec<(&PowerInfo, Action)> {
        self.vms
            .iter()
            .rev()
            .map(|v| (v, self.stop_action(v)))
            .filter(|(_, action)| *action != Action::None)
            .collect()
    }

    fn stop_action(&self, vm: &PowerInfo) -> Action {
        match vm.stop_action {
            Action::SystemDefault => self.defaults.stop_action,
            action => action,
        }
    }

    fn start_delay(&self, vm: &PowerInfo) -> Duration {
        seconds(vm.start_delay, self.defaults.start_delay)
    }

    fn stop_delay(&self, vm: &PowerInfo) -> Duration {
        seconds(vm.stop_delay, self.defaults.stop_delay)
    }

    fn waits_for_heartbeat(&self, vm: &PowerInfo) -> bool {
        match vm.wait_for_heartbeat {
            Heartbeat::Yes => true,
            Heartbeat::No => false,
            Heartbeat::SystemDefault => self.defaults.wait_for_heartbeat,
        }
    }
}

/// `value` seconds, or `default` when it is -1.
fn seconds(value: i32, default: i32) -> Duration {
    let value = if value < 0 { default } else { value };
    Duration::from_secs(value.max(0) as u64)
}

/// The registered VM with this `.vmx`.
fn vm_of(host: &Host, vmx: &str) -> Option<Arc<Vm>> {
    host.vms
        .all()
        .into_iter()
        .find(|vm| vm.vmx_path.to_string() == vmx)
}

/// At start: runs the start sequence on its own thread when auto-start is enabled.
pub fn start_with_host(host: &Arc<Host>) {
    if !lock(&host.autostart).defaults.enabled {
        return;
    }
    let host = host.clone();
    let _ = std::thread::Builder::new()
        .name("autostart".into())
        .spawn(move || power_on_all(&host));
}

/// Powers on the VMs of the start sequence that are not running, in order, each followed by
/// its start delay (cut short by its first heartbeat when it waits for one).
pub fn power_on_all(host: &Arc<Host>) {
    let settings = lock(&host.autostart).clone();
    for info in settings.start_sequence() {
        let Some(vm) = vm_of(host, &info.vmx) else {
            continue;
        };
        if vm.state().power == Power::On {
            continue;
        }
        tracing::info!(vm = vm.id, "auto-start: powering on");
        let powered = as_task(
            host,
            &vm,
            "VirtualMachine.powerOn",
            "PowerOnVM_Task",
            |h, v| lifecycle::power_on(h, v, ""),
        );
        if !powered {
            continue;
        }
        let delay = settings.start_delay(info);
        if settings.waits_for_heartbeat(info) {
            let _ = vm.wait_until(vm.state(), delay, |s| {
                s.tools.heartbeat_color() == "green" || s.power != Power::On
            });
        } else {
            std::thread::sleep(delay);
        }
    }
}

/// At a clean service stop: runs the stop sequence when auto-start is enabled.
pub fn stop_with_host(host: &Arc<Host>) {
    if lock(&host.autostart).defaults.enabled {
        power_off_all(host);
    }
}

/// Stops the running VMs of the stop sequence in order, each by its stop action, waiting up
/// to its stop delay for it to stop (a guest that does not shut down in time is powered off).
pub fn power_off_all(host: &Arc<Host>) {
    let settings = lock(&host.autostart).clone();
    for (info, action) in settings.stop_sequence() {
        let Some(vm) = vm_of(host, &info.vmx) else {
            continue;
        };
        if vm.state().power != Power::On {
            continue;
        }
        tracing::info!(vm = vm.id, action = action.as_str(), "auto-start: stopping");
        match action {
            Action::Suspend => {
                as_task(
                    host,
                    &vm,
                    "VirtualMachine.suspend",
                    "SuspendVM_Task",
                    |h, v| lifecycle::suspend(h, v),
                );
            }
            Action::GuestShutdown if tools_host::request(&vm, Operation::Shutdown).is_ok() => {
                let delay = settings.stop_delay(info);
                let (state, stopped) = vm.wait_until(vm.state(), delay, |s| s.power != Power::On);
                drop(state);
                if !stopped {
                    power_off(host, &vm);
                }
            }
            _ => power_off(host, &vm),
        }
    }
}

fn power_off(host: &Arc<Host>, vm: &Arc<Vm>) {
    as_task(
        host,
        vm,
        "VirtualMachine.powerOff",
        "PowerOffVM_Task",
        |h, v| lifecycle::power_off(h, v),
    );
}

/// Runs a power operation as a task of the system on the VM (refused while another task
/// holds it); whether it succeeded.
fn as_task(
    host: &Arc<Host>,
    vm: &Arc<Vm>,
    description_id: &str,
    method: &str,
    work: impl FnOnce(&Arc<Host>, &Arc<Vm>) -> Result<(), vireo_api::Fault>,
) -> bool {
    let spec = TaskSpec {
        entity: &vm.moref,
        description_id,
        method,
        user: "",
        cancelable: false,
        mutating: true,
    };
    let handle = match create_task(host, spec) {
        Ok(handle) => handle,
        Err(fault) => {
            tracing::warn!(vm = vm.id, "auto-start: {method} refused: {fault:?}");
            return false;
        }
    };
    handle.start();
    match work(host, vm) {
        Ok(()) => {
            handle.succeed(None);
            true
        }
        Err(fault) => {
            tracing::warn!(vm = vm.id, "auto-start: {method} failed: {fault:?}");
            handle.fail(fault);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(vmx: &str, order: i32) -> PowerInfo {
        PowerInfo {
            vmx: vmx.into(),
            start_order: order,
            start_delay: -1,
            wait_for_heartbeat: Heartbeat::SystemDefault,
            start_action: Action::PowerOn,
            stop_delay: -1,
            stop_action: Action::SystemDefault,
        }
    }

    fn order(settings: &AutoStart) -> Vec<(&str, i32)> {
        settings
            .vms
            .iter()
            .map(|v| (v.vmx.as_str(), v.start_order))
            .collect()
    }

    #[test]
    fn ordered_vms_are_inserted_at_their_place_and_renumbered() {
        let mut settings = AutoStart::default();
        settings.set(info("a", 1));
        settings.set(info("b", 1));
        settings.set(info("free", -1));
        settings.set(info("c", 9));
        assert_eq!(
            order(&settings),
            [("b", 1), ("a", 2), ("c", 3), ("free", -1)]
        );
        settings.set(info("b", 3));
        assert_eq!(
            order(&settings),
            [("a", 1), ("c", 2), ("b", 3), ("free", -1)]
        );
        let mut none = info("c", 2);
        none.stop_action = Action::None;
        settings.set(none);
        let stops: Vec<_> = settings
            .stop_sequence()
            .iter()
            .map(|(v, a)| (v.vmx.as_str(), *a))
            .collect();
        assert_eq!(
            stops,
            [
                ("free", Action::PowerOff),
                ("b", Action::PowerOff),
                ("a", Action::PowerOff)
            ]
        );
    }

    #[test]
    fn actions_parse_in_any_case() {
        assert_eq!(Action::parse("PowerOn"), Some(Action::PowerOn));
        assert_eq!(Action::parse("guestshutdown"), Some(Action::GuestShutdown));
        assert_eq!(Action::parse("reboot"), None);
        assert_eq!(Action::SystemDefault.as_str(), "systemDefault");
    }
}
