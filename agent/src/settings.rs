//! The host's advanced settings as the OptionManager (`ServiceContent.setting`,
//! `configManager.advancedOption`) shows and changes them: each one an ESXi setting that
//! vireod honours at once (the session idle timeout, the failed-login lockout, the default
//! rotation of VM logs), its range
//! and default (from vireod's configuration), and the values changed through the API, kept
//! in `settings.json` in the data dir and applied again at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vireo_vmm_protocol::LogRotation;

use crate::config::Config;
use crate::host::Host;
use crate::locks::lock;

/// The file holding changed values, in the data dir.
const FILE: &str = "settings.json";

/// UserVars.HostClientSessionTimeout: seconds a session may stay unused.
pub const SESSION_TIMEOUT: &str = "UserVars.HostClientSessionTimeout";
/// Security.AccountLockFailures: failed logins that lock an account (0: never).
pub const LOCK_FAILURES: &str = "Security.AccountLockFailures";
/// Security.AccountUnlockTime: seconds a locked account stays locked.
pub const UNLOCK_TIME: &str = "Security.AccountUnlockTime";
/// vmx.log.rotateSize: the host-wide default of a VM's `log.rotateSize` (ESXi reads `vmx.*`
/// defaults from /etc/vmware/config).
pub const VM_LOG_ROTATE_SIZE: &str = "vmx.log.rotateSize";
/// vmx.log.keepOld: the host-wide default of a VM's `log.keepOld`.
pub const VM_LOG_KEEP_OLD: &str = "vmx.log.keepOld";

/// One setting: its key, what it is, its range, and its default from the configuration.
pub struct Definition {
    /// The key.
    pub key: &'static str,
    /// A short label.
    pub label: &'static str,
    /// What it does here.
    pub summary: &'static str,
    /// Smallest value.
    pub min: i64,
    /// Largest value.
    pub max: i64,
    /// The configured value.
    pub default: fn(&Config) -> i64,
}

/// Every setting.
pub const DEFINITIONS: &[Definition] = &[
    Definition {
        key: SESSION_TIMEOUT,
        label: "Session idle timeout",
        summary: "Seconds an API session may stay unused before it is logged out",
        min: 1,
        max: 7 * 86_400,
        default: |c| c.session_idle_timeout_secs as i64,
    },
    Definition {
        key: LOCK_FAILURES,
        label: "Account lock failures",
        summary: "Failed logins within the unlock time that lock an account (0: never)",
        min: 0,
        max: 100,
        default: |c| i64::from(c.account_lock_failures),
    },
    Definition {
        key: UNLOCK_TIME,
        label: "Account unlock time",
        summary: "Seconds after its last failed login that a locked account unlocks",
        min: 0,
        max: 30 * 86_400,
        default: |c| c.account_unlock_time_secs as i64,
    },
    Definition {
        key: VM_LOG_ROTATE_SIZE,
        label: "VM log rotation size",
        summary: "Bytes at which a VM's serial.log and vireo-vmm.log rotate, unless its .vmx sets log.rotateSize (taken at its next power-on)",
        min: LogRotation::MIN_SIZE as i64,
        max: LogRotation::MAX_SIZE as i64,
        default: |c| c.vm_log_rotate_size as i64,
    },
    Definition {
        key: VM_LOG_KEEP_OLD,
        label: "VM logs kept",
        summary: "Older files a VM keeps of each log, unless its .vmx sets log.keepOld (taken at its next power-on)",
        min: 0,
        max: LogRotation::MAX_KEEP as i64,
        default: |c| c.vm_log_keep_old as i64,
    },
];

/// Why a setting could not be changed or kept.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// No such setting.
    #[error("'{0}' is not a setting of this host")]
    Unknown(String),
    /// Out of its range.
    #[error("{key} must be between {min} and {max}, not {value}")]
    OutOfRange {
        /// The setting.
        key: String,
        /// The value given.
        value: i64,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// The file could not be read or written.
    #[error("settings {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The values changed from the configured defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    changed: BTreeMap<String, i64>,
}

impl Settings {
    /// The changed values kept in `data_dir` (none when there is no file).
    pub fn load(data_dir: &Path) -> Result<Settings, SettingsError> {
        let path = data_dir.join(FILE);
        match crate::json_file::load(&path) {
            Ok(kept) => Ok(kept.unwrap_or_default()),
            Err(source) => Err(SettingsError::File { path, source }),
        }
    }

    fn save(&self, data_dir: &Path) -> Result<(), SettingsError> {
        let path = data_dir.join(FILE);
        crate::json_file::save(&path, self).map_err(|source| SettingsError::File { path, source })
    }

    /// The value of `key` now (changed, else configured).
    pub fn value(&self, config: &Config, key: &str) -> Option<i64> {
        let definition = definition(key)?;
        Some(
            self.changed
                .get(key)
                .copied()
                .unwrap_or_else(|| (definition.default)(config)),
        )
    }

    /// Every setting with its value now.
    pub fn values<'a>(
        &'a self,
        config: &'a Config,
    ) -> impl Iterator<Item = (&'static str, i64)> + 'a {
        DEFINITIONS
            .iter()
            .filter_map(|d| Some((d.key, self.value(config, d.key)?)))
    }

    /// Checks and records new values (all or none).
    fn change(&mut self, values: &[(String, i64)]) -> Result<(), SettingsError> {
        for (key, value) in values {
            let definition = definition(key).ok_or_else(|| SettingsError::Unknown(key.clone()))?;
            if !(definition.min..=definition.max).contains(value) {
                return Err(SettingsError::OutOfRange {
                    key: key.clone(),
                    value: *value,
                    min: definition.min,
                    max: definition.max,
                });
            }
        }
        for (key, value) in values {
            self.changed.insert(key.clone(), *value);
        }
        Ok(())
    }
}

/// The definition of `key`.
pub fn definition(key: &str) -> Option<&'static Definition> {
    DEFINITIONS.iter().find(|d| d.key == key)
}

/// Changes settings: checked, kept, then applied.
pub fn update(host: &Host, values: &[(String, i64)]) -> Result<(), SettingsError> {
    let mut settings = lock(&host.settings);
    let mut next = settings.clone();
    next.change(values)?;
    next.save(&host.config.data_dir)?;
    *settings = next;
    drop(settings);
    apply(host);
    Ok(())
}

/// Makes vireod follow the settings now in force.
pub fn apply(host: &Host) {
    let settings = lock(&host.settings).clone();
    let value = |key| settings.value(&host.config, key).unwrap_or_default();
    host.logins
        .set_policy(value(LOCK_FAILURES) as u32, value(UNLOCK_TIME) as u64);
}

/// How a VM's logs rotate when its `.vmx` does not say.
pub fn vm_log_rotation(host: &Host) -> LogRotation {
    let settings = lock(&host.settings);
    let value = |key| settings.value(&host.config, key).unwrap_or_default();
    // Clamped: the configured defaults are not range-checked as API changes are.
    LogRotation {
        size: (value(VM_LOG_ROTATE_SIZE) as u64)
            .clamp(LogRotation::MIN_SIZE, LogRotation::MAX_SIZE),
        keep: (value(VM_LOG_KEEP_OLD) as usize).min(LogRotation::MAX_KEEP),
    }
}

/// The session idle timeout now in force, in seconds.
pub fn session_timeout_secs(host: &Host) -> u64 {
    lock(&host.settings)
        .value(&host.config, SESSION_TIMEOUT)
        .unwrap_or_default() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_checked_all_or_none() {
        let config = Config::load(None).unwrap();
        let mut settings = Settings::default();
        assert_eq!(settings.value(&config, LOCK_FAILURES), Some(5));
        let bad = [
            (LOCK_FAILURES.to_string(), 3),
            (UNLOCK_TIME.to_string(), -1),
        ];
        assert!(matches!(
            settings.change(&bad),
            Err(SettingsError::OutOfRange { .. })
        ));
        assert_eq!(settings.value(&config, LOCK_FAILURES), Some(5));
        assert!(settings.change(&[("Nope".into(), 1)]).is_err());
        settings.change(&[(LOCK_FAILURES.into(), 3)]).unwrap();
        assert_eq!(settings.value(&config, LOCK_FAILURES), Some(3));
    }
}
