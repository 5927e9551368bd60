//! The shared state of one running vireod: the inventory (behind a lock never held across
//! I/O), sessions, accounts, tasks, events, history collectors, and the change counter that
//! wakes WaitForUpdates callers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use vireo_api::schema::Schema;
use vireo_api::MoRef;

use crate::authz::Authz;
use crate::config::Config;
use crate::console::tickets::TicketStore;
use crate::events::EventLog;
use crate::inventory::esxi::DatastoreDir;
use crate::inventory::Inventory;
use crate::logins::Logins;
use crate::methods::history::HistoryCollector;
use crate::sessions::Sessions;
use crate::tasks::TaskLog;
use crate::users::Accounts;

/// Everything a request handler may touch.
pub struct Host {
    /// The vim25 schema.
    pub schema: &'static Schema,
    /// Effective configuration.
    pub config: Config,
    /// Configured datastores.
    pub datastores: Vec<DatastoreDir>,
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
    /// Console tickets issued and not yet used.
    pub console_tickets: TicketStore,
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
        datastores: Vec<DatastoreDir>,
        inventory: Inventory,
        accounts: Accounts,
        authz: Authz,
        certificate_sha1: String,
    ) -> Host {
        Host {
            schema,
            vms: crate::vm::Vms::new(&config.data_dir),
            logins: Logins::new(&config),
            config,
            datastores,
            inventory: RwLock::new(inventory),
            sessions: Sessions::default(),
            accounts: Mutex::new(accounts),
            authz: RwLock::new(authz),
            tasks: Mutex::new(TaskLog::default()),
            events: Mutex::new(EventLog::default()),
            history_collectors: Mutex::new(HashMap::new()),
            console_tickets: TicketStore::default(),
            certificate_sha1,
            changes: tokio::sync::watch::channel(0).0,
            next_id: AtomicU64::new(1),
        }
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

    /// Changes the roles and permissions (never while holding the inventory lock), then
    /// republishes the role list and wakes update waiters: what sessions may see has changed.
    pub fn change_authz<R>(&self, change: impl FnOnce(&mut Authz) -> R) -> R {
        let result = change(
            &mut self
                .authz
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        crate::methods::authorization::publish(self);
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

/// Locks a mutex, ignoring poisoning (state stays usable after a panicked handler).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A host with the ESXi tree and one VM (registered from an in-memory `.vmx`), for unit
/// tests; it touches no files.
#[cfg(test)]
pub fn test_host() -> std::sync::Arc<Host> {
    use crate::inventory::vmx::{self, VmFolder, VmxConfig};
    use crate::inventory::{esxi, host_facts::HostFacts};
    let schema = vireo_api::vim25();
    let dir = std::path::PathBuf::from("/nonexistent/vireo-test");
    let datastore = DatastoreDir {
        name: "datastore1".into(),
        dir: dir.join("datastore1"),
    };
    let mut inventory = Inventory::default();
    esxi::build(
        schema,
        &mut inventory,
        &HostFacts::read(),
        std::slice::from_ref(&datastore),
    );
    let vm = VmFolder {
        vmx_path: datastore.dir.join("vm1/vm1.vmx"),
        datastore: datastore.clone(),
        config: VmxConfig::parse("displayName = \"vm1\"\n"),
    };
    vmx::register(schema, &mut inventory, 1, &vm);
    let config = Config::load(None).expect("default config");
    let host = std::sync::Arc::new(Host::new(
        schema,
        config,
        vec![datastore],
        inventory,
        Accounts::empty(&dir),
        Authz::ephemeral(schema),
        String::new(),
    ));
    crate::methods::authorization::publish(&host);
    host
}
