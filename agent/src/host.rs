//! The shared state of one running vireod: the inventory (behind a lock never held across
//! I/O), sessions, accounts, tasks, events, history collectors, and the change counter that
//! wakes WaitForUpdates callers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use vireo_api::schema::Schema;
use vireo_api::MoRef;

use crate::authz::Authz;
use crate::collectors::HistoryCollector;
use crate::config::Config;
use crate::console::tickets::TicketStore;
use crate::datastore::registry::Datastores;
use crate::events::EventLog;
use crate::inventory::esxi::DatastoreDir;
use crate::inventory::Inventory;
use crate::logins::Logins;
use crate::sessions::Sessions;
use crate::tasks::TaskLog;
use crate::users::Accounts;

/// Everything a request handler may touch.
pub struct Host {
    /// The vim25 schema.
    pub schema: &'static Schema,
    /// Effective configuration.
    pub config: Config,
    datastores: Arc<Datastores>,
    inventory: RwLock<Inventory>,
    /// Logged-in sessions.
    pub sessions: Sessions,
    /// Local accounts.
    pub accounts: Mutex<Accounts>,
    /// Roles and permissions. Readers may hold the inventory lock; a writer must not take it.
    pub authz: RwLock<Authz>,
    /// Password checks and the failed-login lockout.
    pub logins: Logins,
    /// Tasks: which entity is busy, and the finished-task history.
    pub tasks: Mutex<TaskLog>,
    /// Recorded events.
    pub events: Mutex<EventLog>,
    /// Event and task history collectors by reference.
    pub history_collectors: Mutex<HashMap<MoRef, HistoryCollector>>,
    /// Registered virtual machines.
    pub vms: crate::vm::Vms,
    /// The standard vSwitches and port groups (HostNetworkSystem).
    pub switches: Mutex<crate::vm::network::switches::Switches>,
    /// The auto-start settings (HostAutoStartManager).
    pub autostart: Mutex<crate::autostart::AutoStart>,
    /// The advanced settings changed through the OptionManager.
    pub settings: Mutex<crate::settings::Settings>,
    /// Performance samples (PerformanceManager).
    pub perf: Mutex<crate::perf::Store>,
    /// Console tickets issued and not yet used.
    pub console_tickets: TicketStore,
    /// Live HttpNfcLeases (exports).
    pub leases: crate::nfc::Leases,
    /// Guest file transfer URLs issued and not yet used.
    pub guest_transfers: crate::guest_files::Transfers,
    /// The tools installer ISO (`tools_iso`), if there is a usable one.
    pub tools_image: Option<crate::vm::tools_installer::ToolsImage>,
    /// SHA-1 thumbprint of the HTTPS certificate (`AA:BB:...`), as tickets report it.
    pub certificate_sha1: String,
    changes: tokio::sync::watch::Sender<u64>,
    next_id: AtomicU64,
}

impl Host {
    /// A host around a built inventory.
    pub fn new(
        schema: &'static Schema,
        config: Config,
        datastores: Arc<Datastores>,
        inventory: Inventory,
        accounts: Accounts,
        authz: Authz,
        certificate_sha1: String,
    ) -> Host {
        Host {
            schema,
            vms: crate::vm::Vms::new(&config.data_dir),
            switches: Mutex::new(crate::vm::network::switches::Switches::default_network()),
            logins: Logins::new(&config),
            tools_image: crate::vm::tools_installer::ToolsImage::configured(&config.tools_iso),
            config,
            datastores,
            inventory: RwLock::new(inventory),
            sessions: Sessions::default(),
            accounts: Mutex::new(accounts),
            authz: RwLock::new(authz),
            tasks: Mutex::new(TaskLog::default()),
            events: Mutex::new(EventLog::default()),
            history_collectors: Mutex::new(HashMap::new()),
            autostart: Mutex::default(),
            perf: Mutex::default(),
            settings: Mutex::default(),
            console_tickets: TicketStore::default(),
            leases: crate::nfc::Leases::default(),
            guest_transfers: Default::default(),
            certificate_sha1,
            changes: tokio::sync::watch::channel(0).0,
            next_id: AtomicU64::new(1),
        }
    }

    /// The datastores now (configured and added).
    pub fn datastores(&self) -> Arc<[DatastoreDir]> {
        self.datastores.list()
    }

    /// The datastore registry (to add or remove datastores).
    pub fn datastore_registry(&self) -> &Datastores {
        &self.datastores
    }

    /// Reads the inventory. Never hold the guard across an await.
    pub fn inventory(&self) -> RwLockReadGuard<'_, Inventory> {
        self.inventory
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the inventory and wakes every update waiter.
    pub fn mutate<R>(&self, change: impl FnOnce(&mut Inventory) -> R) -> R {
        let result = {
            let mut inventory = self
                .inventory
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            change(&mut inventory)
        };
        self.changes.send_modify(|generation| *generation += 1);
        result
    }

    /// Changes the inventory; wakes update waiters only if `change` reports it changed something.
    pub fn mutate_if(&self, change: impl FnOnce(&mut Inventory) -> bool) {
        let changed = {
            let mut inventory = self
                .inventory
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            change(&mut inventory)
        };
        if changed {
            self.changes.send_modify(|generation| *generation += 1);
        }
    }

    /// Reads the roles and permissions.
    pub fn authz(&self) -> RwLockReadGuard<'_, Authz> {
        self.authz
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `user` holds any of `privileges` on `obj`, locking the inventory, then the
    /// roles and permissions (for callers outside a method call: the HTTP file, screen and NFC
    /// paths).
    pub fn user_holds_any(&self, user: &str, privileges: &[&str], obj: &MoRef) -> bool {
        let inv = self.inventory();
        let authz = self.authz();
        privileges
            .iter()
            .any(|p| authz.holds_on(self.schema, &inv, user, p, obj))
    }

    /// Changes the roles and permissions (never while holding the inventory lock), then
    /// republishes the role list and wakes update waiters: what sessions may see has changed.
    pub fn change_authz<R>(&self, change: impl FnOnce(&mut Authz) -> R) -> R {
        let result = change(
            &mut self
                .authz
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        crate::authz::publish::publish(self);
        result
    }

    /// A receiver that sees every inventory change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A fresh number for object ids.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// A host for unit tests; its scratch data directory goes when it is dropped.
#[cfg(test)]
pub struct TestHost(Arc<Host>);

#[cfg(test)]
impl std::ops::Deref for TestHost {
    type Target = Arc<Host>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

#[cfg(test)]
impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0.config.data_dir);
    }
}

/// A host for unit tests over a fresh scratch data directory (one datastore, no accounts), with
/// one VM, "vm1", made by CreateVM's own code; the `.vmx` is written to the datastore.
#[cfg(test)]
pub fn test_host() -> TestHost {
    static HOSTS: AtomicU64 = AtomicU64::new(0);
    let schema = vireo_api::vim25();
    let dir = std::env::temp_dir().join(format!(
        "vireo-test-host-{}-{}",
        std::process::id(),
        HOSTS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::load(None).expect("default config");
    config.data_dir = dir.clone();
    let datastores = Arc::new(Datastores::open(&config).expect("the datastore list"));
    for datastore in datastores.list().iter() {
        std::fs::create_dir_all(&datastore.dir).expect("a scratch datastore");
    }
    let inventory = crate::startup::host_inventory(schema, &datastores);
    let host = Arc::new(Host::new(
        schema,
        config,
        datastores,
        inventory,
        Accounts::empty(&dir),
        Authz::ephemeral(schema),
        String::new(),
    ));
    crate::authz::publish::publish(&host);
    let spec =
        vireo_api::DataObject::of(schema, "VirtualMachineConfigSpec").with(schema, "name", "vm1");
    crate::vm::create::create_vm(&host, &spec).expect("CreateVM of a VM without devices");
    TestHost(host)
}
