//! Bringing vireod up: data directory, TLS identity, accounts, the inventory (host tree plus
//! VMs found on the datastores), and the background upkeep (datastore space, idle sessions).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::{umask, Mode};

use crate::authz::{Authz, StoreError};
use crate::autostart::AutoStart;
use crate::config::Config;
use crate::datastore::registry::{Datastores, RegistryError};
use crate::events;
use crate::host::Host;
use crate::inventory::esxi::{self, refs, DatastoreDir};
use crate::inventory::host_facts::HostFacts;
use crate::inventory::Inventory;
use crate::locks::lock;
use crate::sessions::end_session;
use crate::tls::{TlsIdentity, TlsSetupError};
use crate::users::{Accounts, AccountsError, RootPassword};
use crate::vm::datastore_path::ConfinedBacking;
use crate::vm::network::switches::{SwitchError, Switches};
use crate::vm::{lifecycle, Vms};
use vireo_api::schema::Schema;

/// How often datastore capacity/free space is re-read and idle sessions are reaped.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(20);
/// How often the NAT network's DHCP leases are read back.
const LEASE_INTERVAL: Duration = Duration::from_secs(2);

/// Why vireod could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS identity failed.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The account file failed.
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    /// Another vireod holds the data directory (or its lock file cannot be made).
    #[error("cannot lock the data directory {path} (is another vireod using it?): {source}")]
    Locked {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The roles and permissions file failed.
    #[error(transparent)]
    Authz(#[from] StoreError),
    /// The vSwitch and port group file failed.
    #[error(transparent)]
    Network(#[from] SwitchError),
    /// The advanced settings file failed.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// The list of added datastores failed.
    #[error(transparent)]
    Datastores(#[from] RegistryError),
    /// The auto-start settings file failed.
    #[error(transparent)]
    AutoStart(#[from] crate::autostart::AutoStartError),
}

/// The data directory's lock, held for the life of the process.
static DATA_DIR_LOCK: OnceLock<Flock<File>> = OnceLock::new();

/// Takes an exclusive `flock` on `<data_dir>/vireod.lock`, so that a second vireod on the same
/// data directory stops before it touches any VM.
fn lock_data_dir(data_dir: &Path) -> Result<(), StartupError> {
    let path = data_dir.join("vireod.lock");
    let locked = |source| StartupError::Locked {
        path: data_dir.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(locked)?;
    let held = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| locked(errno.into()))?;
    let _ = DATA_DIR_LOCK.set(held);
    Ok(())
}

/// A ready host and its TLS configuration.
pub struct Started {
    /// The shared host state.
    pub host: Arc<Host>,
    /// The TLS identity (for logging thumbprints).
    pub identity: TlsIdentity,
    /// The root password, if it was generated on this start.
    pub generated_root_password: Option<String>,
}

/// Gives the data dir mode 0700 (an older one may have been made 0755).
fn make_private(dir: &Path) -> Result<(), StartupError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        StartupError::CreateDir {
            path: dir.to_path_buf(),
            source,
        }
    })
}

/// Prepares everything short of listening.
pub fn start(config: Config, root: RootPassword) -> Result<Started, StartupError> {
    let create = |path: &PathBuf| {
        std::fs::create_dir_all(path).map_err(|source| StartupError::CreateDir {
            path: path.clone(),
            source,
        })
    };
    // Every file vireod and its VMMs create is private to root (VM folders, disks, logs,
    // memory files), whatever umask vireod was started with.
    umask(Mode::from_bits_truncate(0o077));
    create(&config.data_dir)?;
    lock_data_dir(&config.data_dir)?;
    make_private(&config.data_dir)?;
    let datastores = Arc::new(Datastores::open(&config)?);
    for ds in datastores.list().iter() {
        create(&ds.dir)?;
    }
    // Every backing file any disk operation follows stays inside its datastore.
    vireo_disk::backing::confine(Box::new(ConfinedBacking::new(datastores.clone())));
    let identity = TlsIdentity::load_or_create(&config.data_dir)?;
    let (accounts, generated_root_password) = Accounts::open(&config.data_dir, root)?;
    let schema = vireo_api::vim25();
    let authz = Authz::open(&config.data_dir, schema)?;
    let inventory = host_inventory(schema, &datastores);
    let host = Arc::new(Host::new(
        schema,
        config,
        datastores,
        inventory,
        accounts,
        authz,
        identity.sha1.clone(),
    ));
    restore_events(&host);
    let switches = Switches::load(&host.config.data_dir)?;
    crate::vm::network::reconcile(&host.config, &switches);
    crate::vm::network::objects::publish(&host, &switches);
    *lock(&host.switches) = switches;
    crate::authz::publish::publish(&host);
    *lock(&host.settings) = crate::settings::Settings::load(&host.config.data_dir)?;
    crate::settings::apply(&host);
    crate::methods::option_manager::publish(&host);
    crate::methods::date_time_system::publish(&host);
    publish_host_systems(&host);
    Vms::load(&host);
    *lock(&host.autostart) = AutoStart::load(&host.config.data_dir)?;
    crate::methods::autostart_manager::publish(&host);
    crate::autostart::start_with_host(&host);
    lifecycle::watch_heartbeats(host.clone());
    crate::vm::cpu_usage::watch(host.clone());
    crate::perf::watch(host.clone());
    Ok(Started {
        host,
        identity,
        generated_root_password,
    })
}

/// Loads the events earlier runs kept; `latestEvent` shows the newest.
fn restore_events(host: &Host) {
    let log = events::load(host.schema, &host.config.data_dir);
    if let Some(latest) = events::latest(&log).cloned() {
        host.mutate(|inv| inv.set(host.schema, &refs::event_manager(), "latestEvent", latest));
    }
    *lock(&host.events) = log;
}

/// The configured datastores with their directories.
pub fn datastore_dirs(config: &Config) -> Vec<DatastoreDir> {
    config
        .datastores
        .iter()
        .map(|d| DatastoreDir {
            name: d.name.clone(),
            dir: config.datastore_dir(d),
        })
        .collect()
}

/// A clean stop: what vireod added to the host's network goes when none of its VMs runs.
pub fn stop(host: &Host) {
    let running = host
        .vms
        .all()
        .iter()
        .filter(|vm| vm.state().process.as_ref().is_some_and(|p| !p.has_exited()))
        .count();
    crate::vm::network::teardown(&host.config.data_dir, running);
}

/// Re-reads datastore space and logs out idle sessions, forever.
pub async fn upkeep(host: Arc<Host>) {
    tokio::spawn(follow_leases(host.clone()));
    let mut ticker = tokio::time::interval(UPKEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for ds in host.datastores().iter() {
            host.mutate_if(|inv| esxi::refresh_datastore(host.schema, inv, ds));
        }
        let idle_micros = crate::settings::session_timeout_secs(&host) as i64 * 1_000_000;
        for session in host.sessions.idle(idle_micros) {
            tracing::info!(user = session.user, "session idle; logging out");
            end_session(&host, &session.key);
        }
    }
}

/// Reads the NAT network's DHCP leases back into the VMs every [`LEASE_INTERVAL`] (off the
/// runtime's thread: it reads a file and takes VM locks).
async fn follow_leases(host: Arc<Host>) {
    let mut ticker = tokio::time::interval(LEASE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let host = host.clone();
        let refreshed = tokio::task::spawn_blocking(move || {
            crate::vm::network::leases::refresh(&host);
        });
        if let Err(error) = refreshed.await {
            tracing::error!("reading the DHCP leases failed: {error}");
        }
    }
}

/// The host's inventory as vireod starts it: the ESXi object tree over this machine's facts and
/// datastores, with the PerformanceManager's counters published.
pub(crate) fn host_inventory(schema: &Schema, datastores: &Datastores) -> Inventory {
    let mut inventory = Inventory::default();
    esxi::build(
        schema,
        &mut inventory,
        &HostFacts::read(),
        &datastores.list(),
    );
    crate::perf::publish::publish(schema, &mut inventory);
    inventory
}

/// Has every configManager manager that mirrors the machine publish its view of it (and its
/// `config` section).
fn publish_host_systems(host: &Host) {
    use crate::methods::{
        cpu_scheduler, datastore_system, firewall_system, memory_manager, power_system,
        service_system, storage_system, vsan_system,
    };
    storage_system::publish(host);
    datastore_system::publish(host);
    vsan_system::publish(host);
    service_system::publish(host);
    firewall_system::publish(host);
    power_system::publish(host);
    cpu_scheduler::publish(host);
    memory_manager::publish(host);
}
