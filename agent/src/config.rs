//! vireod's configuration: the embedded default TOML, an optional file over it, and command
//! line overrides on top.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// The effective configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// Data directory (certificate, users, datastores).
    pub data_dir: PathBuf,
    /// Largest accepted request body.
    pub max_request_bytes: usize,
    /// Idle time after which a session ends.
    pub session_idle_timeout_secs: u64,
    /// Most HTTPS connections open at once.
    pub max_connections: usize,
    /// Longest TLS handshake.
    pub handshake_timeout_secs: u64,
    /// Longest wait for a request head once it starts (or once the handshake ends), and for
    /// a SOAP request body.
    pub read_timeout_secs: u64,
    /// Longest wait between requests on a keep-alive connection.
    pub idle_timeout_secs: u64,
    /// How long an HttpNfcLease lives without progress reports or transfers (ESXi's
    /// `leaseTimeout`); an idle upload stalls out after the same time.
    pub lease_timeout_secs: u64,
    /// Failed logins (within `account_unlock_time_secs`) that lock an account; 0 disables.
    pub account_lock_failures: u32,
    /// How long a locked account stays locked after its last failed login.
    pub account_unlock_time_secs: u64,
    /// Most password checks running at once; more wait their turn.
    pub max_concurrent_password_checks: usize,
    /// Size in bytes at which a VM's logs rotate, unless its `.vmx` sets `log.rotateSize`.
    pub vm_log_rotate_size: u64,
    /// Older logs a VM keeps of each, unless its `.vmx` sets `log.keepOld`.
    pub vm_log_keep_old: usize,
    /// Most objects (property filters, collectors, views, history collectors) one session
    /// may hold.
    pub max_session_objects: usize,
    /// The first uid of the range jailed `vireo-vmm`s run as (one uid per VM).
    pub vmm_uid: u32,
    /// How many uids the range holds.
    pub vmm_uid_count: u32,
    /// The group every jailed `vireo-vmm` runs as.
    pub vmm_gid: u32,
    /// What backs "VM Network": `nat` (a private subnet with DHCP, masqueraded) or
    /// `internal` (a host-only bridge).
    pub vm_network: VmNetworkMode,
    /// The folder CreateLocalDatastore makes datastores in (relative to the data dir unless
    /// absolute).
    pub local_datastore_root: PathBuf,
    /// The tools installer ISO offered to guests (relative to the working directory unless
    /// absolute); a missing one means no tools installer.
    pub tools_iso: PathBuf,
    /// Datastores, one per directory.
    #[serde(rename = "datastore")]
    pub datastores: Vec<DatastoreConfig>,
}

/// What backs the default "VM Network".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmNetworkMode {
    /// A private subnet on the bridge, DHCP and DNS by dnsmasq, masqueraded to the host's routes.
    Nat,
    /// A host-only bridge: guests reach only each other.
    Internal,
}

/// One datastore: its name and directory (relative to the data dir unless absolute).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreConfig {
    /// Datastore name, as in `[datastore1] vm/vm.vmx`.
    pub name: String,
    /// Its directory.
    pub path: PathBuf,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys.
    #[error("invalid config {origin}: {source}")]
    Parse {
        /// Where the text came from.
        origin: String,
        /// Why.
        source: toml::de::Error,
    },
}

impl Config {
    /// Defaults, overlaid with `file` if given.
    pub fn load(file: Option<&Path>) -> Result<Config, LoadConfigError> {
        let mut table: toml::Table =
            toml::from_str(DEFAULT_CONFIG).map_err(|source| LoadConfigError::Parse {
                origin: "(built-in defaults)".into(),
                source,
            })?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| LoadConfigError::Read {
                path: path.into(),
                source,
            })?;
            let overlay: toml::Table =
                toml::from_str(&text).map_err(|source| LoadConfigError::Parse {
                    origin: path.display().to_string(),
                    source,
                })?;
            table.extend(overlay);
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|source| LoadConfigError::Parse {
                origin: "(merged)".into(),
                source,
            })
    }

    /// The folder local datastores are made in, resolved against the data dir.
    pub fn local_datastore_root(&self) -> PathBuf {
        self.data_dir.join(&self.local_datastore_root)
    }

    /// A datastore's directory, resolved against the data dir.
    pub fn datastore_dir(&self, datastore: &DatastoreConfig) -> PathBuf {
        self.data_dir.join(&datastore.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_files_override() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.listen.port(), 8443);
        assert_eq!(config.datastores[0].name, "datastore1");
        let dir = std::env::temp_dir().join(format!("vireo-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vireod.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:443\"\n").unwrap();
        assert_eq!(Config::load(Some(&file)).unwrap().listen.port(), 443);
        std::fs::write(&file, "lissten = 1\n").unwrap();
        assert!(matches!(
            Config::load(Some(&file)),
            Err(LoadConfigError::Parse { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
