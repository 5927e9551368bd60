//! Password checks for every way in (SOAP Login, `/folder` Basic credentials). Argon2 runs on
//! blocking threads, outside the accounts lock, at most `max_concurrent_password_checks` at a
//! time, so a login flood neither stalls the runtime nor holds up other logins' lookups; waiting
//! checks take turns by client address ([`FairSlots`]), so one client's flood delays another
//! client's login by about one check, not by the flood. An
//! unknown user is checked against a decoy hash, so the answer takes as long as for a real
//! account. As ESXi does (Security.AccountLockFailures / AccountUnlockTime), an account is
//! locked after `account_lock_failures` failed logins within `account_unlock_time_secs` and
//! stays locked until that time has passed since its last failure; a locked account's logins
//! fail exactly like wrong passwords, after the same work.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::fair_slots::FairSlots;
use crate::locks::lock;
use crate::users::{decoy_hash, verify_hash, Accounts, AccountsError};

/// Password checking and failed-login accounting.
pub struct Logins {
    checks: Arc<FairSlots>,
    decoy: Arc<OnceLock<String>>,
    failures: Mutex<HashMap<String, Failures>>,
    lock_after: AtomicU32,
    unlock_secs: AtomicU64,
}

/// Recent failed logins of one account.
struct Failures {
    count: u32,
    last: Instant,
}

/// Why a password could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckPasswordError {
    /// The decoy hash for unknown users could not be made.
    #[error("cannot prepare the password check: {0}")]
    Decoy(#[from] AccountsError),
    /// The blocking task running argon2 failed.
    #[error("the password check failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Logins {
    /// Limits as configured.
    pub fn new(config: &Config) -> Logins {
        Logins {
            checks: FairSlots::new(config.max_concurrent_password_checks),
            decoy: Arc::default(),
            failures: Mutex::default(),
            lock_after: AtomicU32::new(config.account_lock_failures),
            unlock_secs: AtomicU64::new(config.account_unlock_time_secs),
        }
    }

    /// Changes the lockout (Security.AccountLockFailures / AccountUnlockTime) from now on.
    pub fn set_policy(&self, lock_after: u32, unlock_secs: u64) {
        self.lock_after.store(lock_after, Ordering::Relaxed);
        self.unlock_secs.store(unlock_secs, Ordering::Relaxed);
    }

    fn lock_after(&self) -> u32 {
        self.lock_after.load(Ordering::Relaxed)
    }

    fn unlock_time(&self) -> Duration {
        Duration::from_secs(self.unlock_secs.load(Ordering::Relaxed))
    }

    /// Whether `user` may log in with `password` (asked by `client`): the account exists, is
    /// not locked and the password matches. Records the attempt for the lockout.
    pub async fn check(
        &self,
        accounts: &Mutex<Accounts>,
        (user, password): (&str, &str),
        client: IpAddr,
    ) -> Result<bool, CheckPasswordError> {
        let hash = lock(accounts).password_hash(user);
        let known = hash.is_some();
        let locked = self.is_locked(user);
        let matches = {
            let _slot = self.checks.acquire(client).await;
            let decoy = self.decoy.clone();
            let password = password.to_string();
            tokio::task::spawn_blocking(move || -> Result<bool, AccountsError> {
                let hash = match hash {
                    Some(hash) => hash,
                    None => decoy_or_init(&decoy)?,
                };
                Ok(verify_hash(&hash, &password))
            })
            .await??
        };
        Ok(known && !locked && self.record(user, matches))
    }

    /// Whether the account is locked now. Attempts on a locked account are refused and not
    /// recorded, so the lock ends the unlock time after the failure that set it.
    fn is_locked(&self, user: &str) -> bool {
        lock(&self.failures)
            .get(user)
            .is_some_and(|f| self.locked(f, Instant::now()))
    }

    /// Records an attempt on an existing account that was not locked; whether it may log in.
    fn record(&self, user: &str, matches: bool) -> bool {
        let now = Instant::now();
        let mut failures = lock(&self.failures);
        if matches {
            failures.remove(user);
            return true;
        }
        let entry = failures.entry(user.to_string()).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(entry.last) >= self.unlock_time() {
            entry.count = 0;
        }
        entry.count += 1;
        entry.last = now;
        if entry.count == self.lock_after() {
            tracing::warn!(
                user,
                "account locked for {} s after {} failed logins",
                self.unlock_time().as_secs(),
                self.lock_after()
            );
        }
        false
    }

    fn locked(&self, failures: &Failures, now: Instant) -> bool {
        let lock_after = self.lock_after();
        lock_after > 0
            && failures.count >= lock_after
            && now.duration_since(failures.last) < self.unlock_time()
    }
}

/// The decoy hash, made on first use.
fn decoy_or_init(decoy: &OnceLock<String>) -> Result<String, AccountsError> {
    if let Some(hash) = decoy.get() {
        return Ok(hash.clone());
    }
    let made = decoy_hash()?;
    Ok(decoy.get_or_init(|| made).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured(lock_after: u32, unlock_secs: u64) -> Logins {
        let mut config = Config::load(None).unwrap();
        config.account_lock_failures = lock_after;
        config.account_unlock_time_secs = unlock_secs;
        Logins::new(&config)
    }

    #[test]
    fn failures_lock_an_account_until_the_unlock_time_passes() {
        let logins = configured(3, 900);
        assert!(!logins.record("root", false));
        assert!(!logins.record("root", false));
        assert!(logins.record("root", true), "a success resets the count");
        for _ in 0..3 {
            assert!(!logins.record("root", false));
        }
        assert!(logins.is_locked("root"));
        assert!(
            !logins.is_locked("other"),
            "other accounts are not affected"
        );

        let instant = configured(3, 0);
        for _ in 0..5 {
            assert!(!instant.record("root", false));
        }
        assert!(
            !instant.is_locked("root"),
            "unlocked once the unlock time passed"
        );
        let never = configured(0, 900);
        for _ in 0..10 {
            assert!(!never.record("root", false));
        }
        assert!(!never.is_locked("root"), "0 disables the lockout");
    }
}
