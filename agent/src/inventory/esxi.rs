//! The fixed object tree of an ESXi host: ServiceInstance and its managers, `ha-folder-root` →
//! `ha-datacenter` → its four folders, `ha-compute-res` → `ha-host` and `ha-root-pool`, one
//! Datastore per configured directory and `HaNetwork-VM Network`, filled with this machine's facts.

use std::path::{Path, PathBuf};

use vireo_api::schema::Schema;
use vireo_api::{DataObject, MoRef, Value};

use super::host_facts::{filesystem_space, HostFacts};
use super::Inventory;
use crate::datastore::search::FileType;
use crate::vm::uuid;

/// Well-known object references of the host.
pub mod refs {
    use vireo_api::MoRef;

    /// `ServiceInstance`.
    pub fn service_instance() -> MoRef {
        MoRef::new("ServiceInstance", "ServiceInstance")
    }
    /// The root folder.
    pub fn root_folder() -> MoRef {
        MoRef::new("Folder", "ha-folder-root")
    }
    /// The one datacenter.
    pub fn datacenter() -> MoRef {
        MoRef::new("Datacenter", "ha-datacenter")
    }
    /// The VM folder.
    pub fn vm_folder() -> MoRef {
        MoRef::new("Folder", "ha-folder-vm")
    }
    /// The host folder.
    pub fn host_folder() -> MoRef {
        MoRef::new("Folder", "ha-folder-host")
    }
    /// The datastore folder.
    pub fn datastore_folder() -> MoRef {
        MoRef::new("Folder", "ha-folder-datastore")
    }
    /// The network folder.
    pub fn network_folder() -> MoRef {
        MoRef::new("Folder", "ha-folder-network")
    }
    /// The compute resource.
    pub fn compute_resource() -> MoRef {
        MoRef::new("ComputeResource", "ha-compute-res")
    }
    /// The host.
    pub fn host() -> MoRef {
        MoRef::new("HostSystem", "ha-host")
    }
    /// The root resource pool.
    pub fn root_pool() -> MoRef {
        MoRef::new("ResourcePool", "ha-root-pool")
    }
    /// The VM network.
    pub fn vm_network() -> MoRef {
        MoRef::new("Network", "HaNetwork-VM Network")
    }
    /// The shared PropertyCollector.
    pub fn property_collector() -> MoRef {
        MoRef::new("PropertyCollector", "ha-property-collector")
    }
    /// The ViewManager.
    pub fn view_manager() -> MoRef {
        MoRef::new("ViewManager", "ViewManager")
    }
    /// The SessionManager.
    pub fn session_manager() -> MoRef {
        MoRef::new("SessionManager", "ha-sessionmgr")
    }
    /// The SearchIndex.
    pub fn search_index() -> MoRef {
        MoRef::new("SearchIndex", "ha-searchindex")
    }
    /// The EnvironmentBrowser of the compute resource and its VMs.
    pub fn environment_browser() -> MoRef {
        MoRef::new("EnvironmentBrowser", "ha-env-browser")
    }
    /// The TaskManager.
    pub fn task_manager() -> MoRef {
        MoRef::new("TaskManager", "ha-taskmgr")
    }
    /// The EventManager.
    pub fn event_manager() -> MoRef {
        MoRef::new("EventManager", "ha-eventmgr")
    }
    /// The AuthorizationManager.
    pub fn authorization_manager() -> MoRef {
        MoRef::new("AuthorizationManager", "ha-authmgr")
    }
    /// The FileManager.
    pub fn file_manager() -> MoRef {
        MoRef::new("FileManager", "ha-nfc-file-manager")
    }
    /// The VirtualDiskManager.
    pub fn virtual_disk_manager() -> MoRef {
        MoRef::new("VirtualDiskManager", "ha-vdiskmanager")
    }
    /// The GuestOperationsManager.
    pub fn guest_operations_manager() -> MoRef {
        MoRef::new("GuestOperationsManager", "ha-guest-operations-manager")
    }
    /// The GuestAuthManager.
    pub fn guest_auth_manager() -> MoRef {
        MoRef::new("GuestAuthManager", "ha-guest-operations-auth-manager")
    }
    /// The GuestProcessManager.
    pub fn guest_process_manager() -> MoRef {
        MoRef::new("GuestProcessManager", "ha-guest-operations-process-manager")
    }
    /// The GuestFileManager.
    pub fn guest_file_manager() -> MoRef {
        MoRef::new("GuestFileManager", "ha-guest-operations-file-manager")
    }
    /// The HostDatastoreBrowser of the host and its datastores.
    pub fn datastore_browser() -> MoRef {
        MoRef::new("HostDatastoreBrowser", "ha-host-datastorebrowser")
    }
    /// The HostAutoStartManager.
    pub fn autostart_manager() -> MoRef {
        MoRef::new("HostAutoStartManager", "ha-autostart-mgr")
    }
    /// The PerformanceManager.
    pub fn perf_manager() -> MoRef {
        MoRef::new("PerformanceManager", "ha-perfmgr")
    }
    /// The OptionManager of vireod's settings (ServiceContent.setting and the host's
    /// advancedOption).
    pub fn option_manager() -> MoRef {
        MoRef::new("OptionManager", "HostAgentSettings")
    }
    /// The HostDateTimeSystem.
    pub fn date_time_system() -> MoRef {
        MoRef::new("HostDateTimeSystem", "dateTimeSystem")
    }
    /// The OvfManager.
    pub fn ovf_manager() -> MoRef {
        MoRef::new("OvfManager", "ha-ovf-manager")
    }
    /// The HostLocalAccountManager.
    pub fn account_manager() -> MoRef {
        MoRef::new("HostLocalAccountManager", "ha-localacctmgr")
    }
    /// The UserDirectory.
    pub fn user_directory() -> MoRef {
        MoRef::new("UserDirectory", "ha-user-directory")
    }
}

/// A configured datastore as the inventory sees it.
#[derive(Debug, Clone)]
pub struct DatastoreDir {
    /// Datastore name.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
}

impl DatastoreDir {
    /// The datastore's managed object reference.
    pub fn moref(&self) -> MoRef {
        MoRef::new("Datastore", self.name.as_str())
    }
}

/// Builds the host's fixed tree into `inv`.
pub fn build(schema: &Schema, inv: &mut Inventory, facts: &HostFacts, datastores: &[DatastoreDir]) {
    let about = about(schema);
    service_instance(schema, inv, &about);
    let green = Value::enumeration(schema, "ManagedEntityStatus", "green");
    let gray = Value::enumeration(schema, "ManagedEntityStatus", "gray");
    let entity = |inv: &mut Inventory, obj: &MoRef, name: &str, parent: Option<MoRef>| {
        inv.insert(schema, obj.clone(), None);
        inv.set(schema, obj, "name", name);
        if let Some(parent) = parent {
            inv.set(schema, obj, "parent", parent);
        }
        inv.set(schema, obj, "overallStatus", green.clone());
        inv.set(schema, obj, "configStatus", gray.clone());
        inv.set(schema, obj, "alarmActionsEnabled", false);
    };
    let ds_refs: Vec<MoRef> = datastores.iter().map(DatastoreDir::moref).collect();
    let network = refs::vm_network();

    let root = refs::root_folder();
    entity(inv, &root, "ha-folder-root", None);
    folder(schema, inv, &root, &["Datacenter"], &[refs::datacenter()]);
    let dc = refs::datacenter();
    entity(inv, &dc, "ha-datacenter", Some(root));
    inv.set(schema, &dc, "vmFolder", refs::vm_folder());
    inv.set(schema, &dc, "hostFolder", refs::host_folder());
    inv.set(schema, &dc, "datastoreFolder", refs::datastore_folder());
    inv.set(schema, &dc, "networkFolder", refs::network_folder());
    inv.set(schema, &dc, "datastore", Value::refs(schema, &ds_refs));
    inv.set(schema, &dc, "network", Value::refs(schema, [&network]));
    let folders = [
        (
            refs::vm_folder(),
            "vm",
            &["Folder", "VirtualMachine", "VirtualApp"][..],
            Vec::new(),
        ),
        (
            refs::host_folder(),
            "host",
            &["Folder", "ComputeResource"][..],
            vec![refs::compute_resource()],
        ),
        (
            refs::datastore_folder(),
            "datastore",
            &["Folder", "Datastore"][..],
            ds_refs.clone(),
        ),
        (
            refs::network_folder(),
            "network",
            &["Folder", "Network"][..],
            vec![network.clone()],
        ),
    ];
    for (obj, name, child_types, children) in folders {
        entity(inv, &obj, name, Some(dc.clone()));
        folder(schema, inv, &obj, child_types, &children);
    }

    let cr = refs::compute_resource();
    entity(inv, &cr, &facts.hostname, Some(refs::host_folder()));
    inv.set(schema, &cr, "host", Value::refs(schema, [&refs::host()]));
    inv.set(schema, &cr, "resourcePool", refs::root_pool());
    inv.set(
        schema,
        &cr,
        "environmentBrowser",
        refs::environment_browser(),
    );
    inv.set(schema, &cr, "datastore", Value::refs(schema, &ds_refs));
    inv.set(schema, &cr, "network", Value::refs(schema, [&network]));
    inv.set(schema, &cr, "summary", compute_summary(schema, facts));

    let host = refs::host();
    entity(inv, &host, &facts.hostname, Some(cr.clone()));
    inv.set(schema, &host, "datastore", Value::refs(schema, &ds_refs));
    inv.set(schema, &host, "network", Value::refs(schema, [&network]));
    inv.set(schema, &host, "vm", Value::refs(schema, []));
    inv.set(schema, &host, "datastoreBrowser", refs::datastore_browser());
    inv.set(schema, &host, "configManager", config_manager(schema));
    inv.set(schema, &host, "runtime", host_runtime(schema, facts));
    inv.set(schema, &host, "hardware", host_hardware(schema, facts));
    inv.set(
        schema,
        &host,
        "summary",
        host_summary(schema, facts, &about),
    );
    inv.set(
        schema,
        &host,
        "config",
        DataObject::of(schema, "HostConfigInfo")
            .with(schema, "host", host.clone())
            .with(schema, "product", about),
    );

    let pool = refs::root_pool();
    entity(inv, &pool, "Resources", Some(cr.clone()));
    inv.set(schema, &pool, "owner", cr);
    inv.set(schema, &pool, "vm", Value::refs(schema, []));
    inv.set(schema, &pool, "resourcePool", Value::refs(schema, []));

    entity(inv, &network, "VM Network", Some(refs::network_folder()));
    inv.set(schema, &network, "host", Value::refs(schema, [&host]));
    inv.set(schema, &network, "vm", Value::refs(schema, []));
    inv.set(
        schema,
        &network,
        "summary",
        DataObject::of(schema, "NetworkSummary")
            .with(schema, "network", network.clone())
            .with(schema, "name", "VM Network")
            .with(schema, "accessible", true),
    );

    for ds in datastores {
        let obj = ds.moref();
        entity(inv, &obj, &ds.name, Some(refs::datastore_folder()));
        inv.set(schema, &obj, "vm", Value::refs(schema, []));
        inv.set(schema, &obj, "browser", refs::datastore_browser());
        inv.set(schema, &obj, "capability", datastore_capability(schema));
        inv.set(
            schema,
            &obj,
            "host",
            Value::Array(
                schema.known_type("DatastoreHostMount"),
                vec![datastore_mount(schema, &ds.dir).into()],
            ),
        );
        refresh_datastore(schema, inv, ds);
    }
    managers(schema, inv);
    datastore_browser(schema, inv, &ds_refs);
}

/// The host's configManager: the managers this host has.
fn config_manager(schema: &Schema) -> DataObject {
    DataObject::of(schema, "HostConfigManager")
        .with(schema, "autoStartManager", refs::autostart_manager())
        .with(schema, "advancedOption", refs::option_manager())
        .with(schema, "dateTimeSystem", refs::date_time_system())
}

/// The HostDatastoreBrowser: the datastores it searches and the query types it knows.
fn datastore_browser(schema: &Schema, inv: &mut Inventory, datastores: &[MoRef]) {
    let browser = refs::datastore_browser();
    inv.insert(schema, browser.clone(), None);
    inv.set(
        schema,
        &browser,
        "datastore",
        Value::refs(schema, datastores),
    );
    inv.set(
        schema,
        &refs::environment_browser(),
        "datastoreBrowser",
        browser.clone(),
    );
    let types = ["FileQuery"]
        .into_iter()
        .chain(FileType::QUERIES.iter().map(|(_, query)| *query))
        .map(|query| DataObject::of(schema, query).into())
        .collect();
    inv.set(
        schema,
        &browser,
        "supportedType",
        Value::Array(schema.known_type("FileQuery"), types),
    );
}

/// The host's AboutInfo: ESXi-shaped (HostAgent, API 8.0.3.0) but naming Vireo.
pub fn about(schema: &Schema) -> DataObject {
    let version = env!("CARGO_PKG_VERSION");
    DataObject::of(schema, "AboutInfo")
        .with(schema, "name", "Vireo")
        .with(
            schema,
            "fullName",
            format!("Vireo {version} (vSphere API 8.0.3.0 host agent on Linux/KVM)"),
        )
        .with(schema, "vendor", "Vireo")
        .with(schema, "version", version)
        .with(schema, "patchLevel", "0")
        .with(schema, "build", "0")
        .with(schema, "localeVersion", "INTL")
        .with(schema, "localeBuild", "000")
        .with(schema, "osType", "linux-x64")
        .with(schema, "productLineId", "embeddedEsx")
        .with(schema, "apiType", "HostAgent")
        .with(schema, "apiVersion", "8.0.3.0")
        .with(schema, "licenseProductName", "Vireo")
        .with(schema, "licenseProductVersion", version)
}

fn service_instance(schema: &Schema, inv: &mut Inventory, about: &DataObject) {
    let content = DataObject::of(schema, "ServiceContent")
        .with(schema, "rootFolder", refs::root_folder())
        .with(schema, "propertyCollector", refs::property_collector())
        .with(schema, "viewManager", refs::view_manager())
        .with(schema, "about", about.clone())
        .with(schema, "sessionManager", refs::session_manager())
        .with(
            schema,
            "authorizationManager",
            refs::authorization_manager(),
        )
        .with(schema, "accountManager", refs::account_manager())
        .with(schema, "userDirectory", refs::user_directory())
        .with(schema, "eventManager", refs::event_manager())
        .with(schema, "taskManager", refs::task_manager())
        .with(schema, "searchIndex", refs::search_index())
        .with(schema, "fileManager", refs::file_manager())
        .with(schema, "virtualDiskManager", refs::virtual_disk_manager())
        .with(schema, "perfManager", refs::perf_manager())
        .with(schema, "setting", refs::option_manager())
        .with(schema, "ovfManager", refs::ovf_manager())
        .with(
            schema,
            "guestOperationsManager",
            refs::guest_operations_manager(),
        );
    let capability = DataObject::of(schema, "Capability")
        .with(schema, "provisioningSupported", false)
        .with(schema, "multiHostSupported", false)
        .with(schema, "userShellAccessSupported", false)
        .with(schema, "networkBackupAndRestoreSupported", false)
        .with(schema, "ftDrsWithoutEvcSupported", false)
        .with(schema, "hciWorkflowSupported", false);
    let si = refs::service_instance();
    inv.insert(schema, si.clone(), None);
    inv.set(schema, &si, "content", content);
    inv.set(schema, &si, "capability", capability);
}

fn folder(
    schema: &Schema,
    inv: &mut Inventory,
    obj: &MoRef,
    child_types: &[&str],
    children: &[MoRef],
) {
    inv.set(
        schema,
        obj,
        "childType",
        Value::strings(schema, child_types),
    );
    inv.set(schema, obj, "childEntity", Value::refs(schema, children));
}

fn managers(schema: &Schema, inv: &mut Inventory) {
    for obj in [
        refs::property_collector(),
        refs::view_manager(),
        refs::search_index(),
        refs::environment_browser(),
        refs::account_manager(),
        refs::user_directory(),
        refs::authorization_manager(),
        refs::file_manager(),
        refs::virtual_disk_manager(),
        refs::guest_auth_manager(),
        refs::guest_process_manager(),
        refs::guest_file_manager(),
        refs::autostart_manager(),
        refs::option_manager(),
        refs::date_time_system(),
        refs::ovf_manager(),
    ] {
        inv.insert(schema, obj, None);
    }
    let gom = refs::guest_operations_manager();
    inv.insert(schema, gom.clone(), None);
    inv.set(schema, &gom, "authManager", refs::guest_auth_manager());
    inv.set(
        schema,
        &gom,
        "processManager",
        refs::guest_process_manager(),
    );
    inv.set(schema, &gom, "fileManager", refs::guest_file_manager());
    let sm = refs::session_manager();
    inv.insert(schema, sm.clone(), None);
    inv.set(schema, &sm, "defaultLocale", "en");
    inv.set(
        schema,
        &sm,
        "supportedLocaleList",
        Value::strings(schema, ["en"]),
    );
    inv.set(
        schema,
        &sm,
        "messageLocaleList",
        Value::strings(schema, ["en"]),
    );
    let tm = refs::task_manager();
    inv.insert(schema, tm.clone(), None);
    inv.set(schema, &tm, "maxCollector", 32);
    inv.set(schema, &tm, "recentTask", Value::refs(schema, []));
    let em = refs::event_manager();
    inv.insert(schema, em.clone(), None);
    inv.set(schema, &em, "maxCollector", 32);
}

fn host_runtime(schema: &Schema, facts: &HostFacts) -> DataObject {
    DataObject::of(schema, "HostRuntimeInfo")
        .with(
            schema,
            "connectionState",
            Value::enumeration(schema, "HostSystemConnectionState", "connected"),
        )
        .with(
            schema,
            "powerState",
            Value::enumeration(schema, "HostSystemPowerState", "poweredOn"),
        )
        .with(schema, "inMaintenanceMode", false)
        .with(schema, "inQuarantineMode", false)
        .with(schema, "bootTime", Value::DateTime(facts.boot_time_micros))
}

fn host_hardware(schema: &Schema, facts: &HostFacts) -> DataObject {
    let system = DataObject::of(schema, "HostSystemInfo")
        .with(schema, "vendor", "Vireo")
        .with(schema, "model", "Linux/KVM host")
        .with(schema, "uuid", host_uuid());
    let hz = facts.cpu_mhz as i64 * 1_000_000;
    let cpu = DataObject::of(schema, "HostCpuInfo")
        .with(schema, "numCpuPackages", Value::Short(facts.cpu_packages))
        .with(schema, "numCpuCores", Value::Short(facts.cpu_cores))
        .with(schema, "numCpuThreads", Value::Short(facts.cpu_threads))
        .with(schema, "hz", hz);
    let package = DataObject::of(schema, "HostCpuPackage")
        .with(schema, "index", Value::Short(0))
        .with(schema, "vendor", facts.cpu_vendor.to_lowercase())
        .with(schema, "hz", hz)
        .with(schema, "busHz", 0i64)
        .with(schema, "description", facts.cpu_model.as_str())
        .with(
            schema,
            "threadId",
            Value::Array(
                schema.known_type("short"),
                (0..facts.cpu_threads).map(Value::Short).collect(),
            ),
        );
    DataObject::of(schema, "HostHardwareInfo")
        .with(schema, "systemInfo", system)
        .with(schema, "cpuInfo", cpu)
        .with(
            schema,
            "cpuPkg",
            Value::Array(schema.known_type("HostCpuPackage"), vec![package.into()]),
        )
        .with(schema, "memorySize", facts.memory_bytes)
}

fn host_summary(schema: &Schema, facts: &HostFacts, about: &DataObject) -> DataObject {
    let hardware = DataObject::of(schema, "HostHardwareSummary")
        .with(schema, "vendor", "Vireo")
        .with(schema, "model", "Linux/KVM host")
        .with(schema, "uuid", host_uuid())
        .with(schema, "memorySize", facts.memory_bytes)
        .with(schema, "cpuModel", facts.cpu_model.as_str())
        .with(schema, "cpuMhz", facts.cpu_mhz)
        .with(schema, "numCpuPkgs", Value::Short(facts.cpu_packages))
        .with(schema, "numCpuCores", Value::Short(facts.cpu_cores))
        .with(schema, "numCpuThreads", Value::Short(facts.cpu_threads))
        .with(schema, "numNics", 0)
        .with(schema, "numHBAs", 0);
    let config = DataObject::of(schema, "HostConfigSummary")
        .with(schema, "name", facts.hostname.as_str())
        .with(schema, "port", 443)
        .with(schema, "product", about.clone())
        .with(schema, "vmotionEnabled", false)
        .with(schema, "faultToleranceEnabled", false);
    let quick_stats = DataObject::of(schema, "HostListSummaryQuickStats").with(
        schema,
        "uptime",
        ((super::now_micros() - facts.boot_time_micros) / 1_000_000) as i32,
    );
    DataObject::of(schema, "HostListSummary")
        .with(schema, "host", refs::host())
        .with(schema, "hardware", hardware)
        .with(schema, "runtime", host_runtime(schema, facts))
        .with(schema, "config", config)
        .with(schema, "quickStats", quick_stats)
        .with(
            schema,
            "overallStatus",
            Value::enumeration(schema, "ManagedEntityStatus", "green"),
        )
        .with(schema, "rebootRequired", false)
}

fn compute_summary(schema: &Schema, facts: &HostFacts) -> DataObject {
    let total_mhz = facts.cpu_mhz * facts.cpu_cores as i32;
    DataObject::of(schema, "ComputeResourceSummary")
        .with(schema, "totalCpu", total_mhz)
        .with(schema, "totalMemory", facts.memory_bytes)
        .with(schema, "numCpuCores", Value::Short(facts.cpu_cores))
        .with(schema, "numCpuThreads", Value::Short(facts.cpu_threads))
        .with(schema, "effectiveCpu", total_mhz)
        .with(
            schema,
            "effectiveMemory",
            facts.memory_bytes / (1024 * 1024),
        )
        .with(schema, "numHosts", 1)
        .with(schema, "numEffectiveHosts", 1)
        .with(
            schema,
            "overallStatus",
            Value::enumeration(schema, "ManagedEntityStatus", "green"),
        )
}

fn datastore_capability(schema: &Schema) -> DataObject {
    DataObject::of(schema, "DatastoreCapability")
        .with(schema, "directoryHierarchySupported", true)
        .with(schema, "rawDiskMappingsSupported", false)
        .with(schema, "perFileThinProvisioningSupported", true)
        .with(schema, "storageIORMSupported", false)
        .with(schema, "nativeSnapshotSupported", false)
        .with(schema, "topLevelDirectoryCreateSupported", true)
        .with(schema, "seSparseSupported", false)
}

fn datastore_mount(schema: &Schema, dir: &Path) -> DataObject {
    let mount = DataObject::of(schema, "HostMountInfo")
        .with(schema, "path", dir.display().to_string())
        .with(schema, "accessMode", "readWrite")
        .with(schema, "mounted", true)
        .with(schema, "accessible", true);
    DataObject::of(schema, "DatastoreHostMount")
        .with(schema, "key", refs::host())
        .with(schema, "mountInfo", mount)
}

/// Re-reads a datastore's capacity and free space into its `summary` and `info`; returns
/// whether they changed.
pub fn refresh_datastore(schema: &Schema, inv: &mut Inventory, ds: &DatastoreDir) -> bool {
    let (capacity, free, accessible) = match filesystem_space(&ds.dir) {
        Ok((capacity, free)) => (capacity, free, true),
        Err(_) => (0, 0, false),
    };
    let url = format!("ds:///vmfs/volumes/{}/", ds.name);
    let obj = ds.moref();
    let summary = DataObject::of(schema, "DatastoreSummary")
        .with(schema, "datastore", obj.clone())
        .with(schema, "name", ds.name.as_str())
        .with(schema, "url", url.as_str())
        .with(schema, "capacity", capacity)
        .with(schema, "freeSpace", free)
        .with(schema, "accessible", accessible)
        .with(schema, "multipleHostAccess", false)
        .with(schema, "type", "OTHER")
        .with(schema, "maintenanceMode", "normal");
    let info = DataObject::of(schema, "DatastoreInfo")
        .with(schema, "name", ds.name.as_str())
        .with(schema, "url", url)
        .with(schema, "freeSpace", free)
        .with(schema, "maxFileSize", capacity)
        .with(schema, "timestamp", Value::DateTime(super::now_micros()));
    let status = if accessible { "green" } else { "red" };
    let stored_summary = inv.stored(schema, &obj, "summary").cloned();
    if stored_summary.as_ref().and_then(Value::as_data) == Some(&summary) {
        return false;
    }
    inv.set(schema, &obj, "summary", summary);
    inv.set(schema, &obj, "info", info);
    inv.set(
        schema,
        &obj,
        "overallStatus",
        Value::enumeration(schema, "ManagedEntityStatus", status),
    );
    true
}

/// A stable host UUID derived from /etc/machine-id (or the host name).
fn host_uuid() -> String {
    let id = std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if id.len() >= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return uuid::to_api(&id[..32]);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, crate::tls::hostname().as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::from_bytes(&bytes)
}
