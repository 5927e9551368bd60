//! Virtual machines as folders on a datastore: finds `<datastore>/<folder>/<name>.vmx` files,
//! reads their `key = "value"` settings and registers each as a VirtualMachine (integer MoIDs,
//! as ESXi uses) under `ha-folder-vm`, `ha-root-pool`, `ha-host` and its datastore.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vireo_api::schema::Schema;
use vireo_api::{DataObject, MoRef, Value};

use super::esxi::{refs, DatastoreDir};
use super::Inventory;

/// A parsed `.vmx` file: settings by lower-cased key.
#[derive(Debug, Default, Clone)]
pub struct VmxConfig {
    settings: BTreeMap<String, String>,
}

impl VmxConfig {
    /// Parses `key = "value"` lines; `#` comments and malformed lines are ignored.
    pub fn parse(text: &str) -> VmxConfig {
        let settings = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_string(),
                )
            })
            .collect();
        VmxConfig { settings }
    }

    /// A setting's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings
            .get(&key.to_ascii_lowercase())
            .map(String::as_str)
    }

    fn number(&self, key: &str, default: i32) -> i32 {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}

/// A VM found on a datastore.
#[derive(Debug, Clone)]
pub struct VmFolder {
    /// The datastore it lives on.
    pub datastore: DatastoreDir,
    /// Path of the `.vmx` file.
    pub vmx_path: PathBuf,
    /// Its settings.
    pub config: VmxConfig,
}

impl VmFolder {
    /// `[datastore1] folder/name.vmx`.
    pub fn datastore_path(&self) -> String {
        let relative = self
            .vmx_path
            .strip_prefix(&self.datastore.dir)
            .unwrap_or(&self.vmx_path);
        format!("[{}] {}", self.datastore.name, relative.display())
    }
}

/// Every `.vmx` one folder deep in the datastores, in path order.
pub fn scan(datastores: &[DatastoreDir]) -> Vec<VmFolder> {
    let mut found = Vec::new();
    for ds in datastores {
        let Ok(entries) = std::fs::read_dir(&ds.dir) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            let Ok(files) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut vmx: Vec<PathBuf> = files
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "vmx"))
                .collect();
            vmx.sort();
            for vmx_path in vmx {
                let Ok(text) = std::fs::read_to_string(&vmx_path) else {
                    continue;
                };
                found.push(VmFolder {
                    datastore: ds.clone(),
                    vmx_path,
                    config: VmxConfig::parse(&text),
                });
            }
        }
    }
    found
}

/// Registers a VM under the given integer id and links it into the tree.
pub fn register(schema: &Schema, inv: &mut Inventory, id: u32, vm: &VmFolder) -> MoRef {
    let obj = MoRef::new("VirtualMachine", id.to_string());
    let file_name = vm
        .vmx_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = vm
        .config
        .get("displayName")
        .unwrap_or(&file_name)
        .to_string();
    let ds = vm.datastore.moref();
    inv.insert(schema, obj.clone(), None);
    inv.set(schema, &obj, "name", name.as_str());
    inv.set(schema, &obj, "parent", refs::vm_folder());
    inv.set(schema, &obj, "resourcePool", refs::root_pool());
    inv.set(
        schema,
        &obj,
        "overallStatus",
        Value::enumeration(schema, "ManagedEntityStatus", "green"),
    );
    inv.set(
        schema,
        &obj,
        "configStatus",
        Value::enumeration(schema, "ManagedEntityStatus", "gray"),
    );
    inv.set(schema, &obj, "datastore", Value::refs(schema, [&ds]));
    let networks: Vec<MoRef> = vm
        .config
        .get("ethernet0.present")
        .filter(|v| v.eq_ignore_ascii_case("true"))
        .map(|_| refs::vm_network())
        .into_iter()
        .collect();
    inv.set(schema, &obj, "network", Value::refs(schema, &networks));
    let config = config_info(schema, vm, &name);
    let runtime = DataObject::of(schema, "VirtualMachineRuntimeInfo")
        .with(schema, "host", refs::host())
        .with(
            schema,
            "connectionState",
            Value::enumeration(schema, "VirtualMachineConnectionState", "connected"),
        )
        .with(
            schema,
            "powerState",
            Value::enumeration(schema, "VirtualMachinePowerState", "poweredOff"),
        )
        .with(
            schema,
            "faultToleranceState",
            Value::enumeration(schema, "VirtualMachineFaultToleranceState", "notConfigured"),
        )
        .with(schema, "toolsInstallerMounted", false)
        .with(schema, "suspendInterval", 0i64)
        .with(schema, "consolidationNeeded", false)
        .with(schema, "numMksConnections", 0);
    let guest = DataObject::of(schema, "GuestInfo")
        .with(
            schema,
            "toolsStatus",
            Value::enumeration(schema, "VirtualMachineToolsStatus", "toolsNotInstalled"),
        )
        .with(schema, "toolsRunningStatus", "guestToolsNotRunning")
        .with(schema, "guestState", "notRunning")
        .with(schema, "appHeartbeatStatus", "appStatusGray")
        .with(schema, "guestOperationsReady", false)
        .with(schema, "interactiveGuestOperationsReady", false);
    let summary = DataObject::of(schema, "VirtualMachineSummary")
        .with(schema, "vm", obj.clone())
        .with(schema, "runtime", runtime.clone())
        .with(schema, "config", config_summary(schema, &config, vm))
        .with(
            schema,
            "overallStatus",
            Value::enumeration(schema, "ManagedEntityStatus", "green"),
        );
    inv.set(schema, &obj, "config", config);
    inv.set(schema, &obj, "runtime", runtime);
    inv.set(schema, &obj, "guest", guest);
    inv.set(schema, &obj, "summary", summary);
    inv.push_ref(schema, &refs::vm_folder(), "childEntity", &obj);
    inv.push_ref(schema, &refs::root_pool(), "vm", &obj);
    inv.push_ref(schema, &refs::host(), "vm", &obj);
    inv.push_ref(schema, &ds, "vm", &obj);
    for network in networks {
        inv.push_ref(schema, &network, "vm", &obj);
    }
    obj
}

fn config_info(schema: &Schema, vm: &VmFolder, name: &str) -> DataObject {
    let c = &vm.config;
    let guest_os = c.get("guestOS").unwrap_or("other-64");
    let guest_id = format!("{}Guest", guest_os.replace('-', "_"));
    let uuid = c
        .get("uuid.bios")
        .map(vmx_uuid)
        .unwrap_or_else(|| derived_uuid(&vm.vmx_path));
    let modified = std::fs::metadata(&vm.vmx_path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    let path = vm.datastore_path();
    let dir = path
        .rsplit_once('/')
        .map(|(d, _)| format!("{d}/"))
        .unwrap_or_else(|| format!("[{}]", vm.datastore.name));
    let files = DataObject::of(schema, "VirtualMachineFileInfo")
        .with(schema, "vmPathName", path.as_str())
        .with(schema, "logDirectory", dir.as_str())
        .with(schema, "snapshotDirectory", dir.as_str())
        .with(schema, "suspendDirectory", dir.as_str());
    let hardware = DataObject::of(schema, "VirtualHardware")
        .with(schema, "numCPU", c.number("numvcpus", 1))
        .with(
            schema,
            "numCoresPerSocket",
            c.number("cpuid.coresPerSocket", 1),
        )
        .with(schema, "memoryMB", c.number("memsize", 256))
        .with(
            schema,
            "device",
            Value::Array(schema.known_type("VirtualDevice"), Vec::new()),
        );
    DataObject::of(schema, "VirtualMachineConfigInfo")
        .with(schema, "changeVersion", modified.to_string())
        .with(schema, "modified", Value::DateTime(modified))
        .with(schema, "name", name)
        .with(schema, "guestFullName", guest_os)
        .with(
            schema,
            "version",
            format!("vmx-{}", c.number("virtualHW.version", 21)),
        )
        .with(schema, "uuid", uuid.as_str())
        .with(
            schema,
            "instanceUuid",
            c.get("vc.uuid").map(vmx_uuid).unwrap_or(uuid),
        )
        .with(schema, "template", false)
        .with(schema, "guestId", guest_id)
        .with(schema, "alternateGuestName", "")
        .with(schema, "annotation", c.get("annotation").unwrap_or(""))
        .with(schema, "files", files)
        .with(schema, "hardware", hardware)
}

fn config_summary(schema: &Schema, config: &DataObject, vm: &VmFolder) -> DataObject {
    let get = |name: &str| {
        config
            .get(schema, name)
            .cloned()
            .unwrap_or(Value::string(""))
    };
    let hardware = config.get(schema, "hardware").and_then(Value::as_data);
    let hw = |name: &str| {
        hardware
            .and_then(|h| h.get(schema, name))
            .cloned()
            .unwrap_or(Value::Int(0))
    };
    DataObject::of(schema, "VirtualMachineConfigSummary")
        .with(schema, "name", get("name"))
        .with(schema, "template", false)
        .with(schema, "vmPathName", vm.datastore_path())
        .with(schema, "memorySizeMB", hw("memoryMB"))
        .with(schema, "numCpu", hw("numCPU"))
        .with(schema, "uuid", get("uuid"))
        .with(schema, "instanceUuid", get("instanceUuid"))
        .with(schema, "guestId", get("guestId"))
        .with(schema, "guestFullName", get("guestFullName"))
        .with(schema, "annotation", get("annotation"))
}

/// `56 4d 12 ... 9a-...` (the .vmx form) to `564d12..-....` (the API form).
fn vmx_uuid(text: &str) -> String {
    let hex: String = text.chars().filter(char::is_ascii_hexdigit).collect();
    if hex.len() != 32 {
        return text.to_string();
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A stable UUID for a VM without `uuid.bios`, from its path.
fn derived_uuid(path: &Path) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, path.to_string_lossy().as_bytes());
    vmx_uuid(
        &digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vmx_settings_and_uuids() {
        let c = VmxConfig::parse("# comment\ndisplayName = \"web 1\"\nmemsize = \"512\"\nuuid.bios = \"56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc\"\nbroken line\n");
        assert_eq!(c.get("displayname"), Some("web 1"));
        assert_eq!(c.number("memsize", 0), 512);
        assert_eq!(
            vmx_uuid(c.get("uuid.bios").unwrap()),
            "564d1234-5678-9abc-def0-123456789abc"
        );
    }
}
