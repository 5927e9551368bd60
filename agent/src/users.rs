//! Local accounts: `users` in the data dir, one `name:argon2-PHC-hash` per line. The root
//! password comes from the operator (file or environment) or is generated and printed once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Why the account file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// Reading or writing the account file failed.
    #[error("account file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `name:hash`.
    #[error("account file {path} line {line} is not name:hash")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The line number.
        line: usize,
    },
    /// Hashing failed.
    #[error("cannot hash a password: {0}")]
    Hash(String),
    /// Randomness for a salt or password was unavailable.
    #[error("no randomness available: {0}")]
    Random(String),
}

/// Where the root password comes from at start.
pub enum RootPassword {
    /// Given by the operator.
    Given(String),
    /// Not given: keep the stored one, or generate one if there is none.
    KeepOrGenerate,
}

/// The local accounts and their password hashes.
pub struct Accounts {
    path: PathBuf,
    hashes: HashMap<String, String>,
}

impl Accounts {
    /// Loads the account file, making sure root exists with the given password.
    /// Returns the accounts and, if one was generated, the new root password to print.
    pub fn open(
        data_dir: &Path,
        root: RootPassword,
    ) -> Result<(Accounts, Option<String>), AccountsError> {
        let path = data_dir.join("users");
        let mut accounts = Accounts {
            hashes: HashMap::new(),
            path,
        };
        if accounts.path.exists() {
            accounts.read()?;
        }
        let generated = match root {
            RootPassword::Given(password) => {
                if !accounts.verify("root", &password) {
                    accounts.set_password("root", &password)?;
                }
                None
            }
            RootPassword::KeepOrGenerate if !accounts.hashes.contains_key("root") => {
                let password = random_password()?;
                accounts.set_password("root", &password)?;
                Some(password)
            }
            RootPassword::KeepOrGenerate => None,
        };
        Ok((accounts, generated))
    }

    /// No accounts, stored at `data_dir/users` once one is set (for tests).
    #[cfg(test)]
    pub fn empty(data_dir: &Path) -> Accounts {
        Accounts {
            path: data_dir.join("users"),
            hashes: HashMap::new(),
        }
    }

    /// Whether `password` is `user`'s password. Runs argon2: callers serving clients check
    /// passwords through `Logins` instead, outside the accounts lock.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        self.hashes
            .get(user)
            .is_some_and(|hash| verify_hash(hash, password))
    }

    /// A user's password hash (PHC string), if the user exists.
    pub fn password_hash(&self, user: &str) -> Option<String> {
        self.hashes.get(user).cloned()
    }

    /// Sets (and saves) a user's password.
    pub fn set_password(&mut self, user: &str, password: &str) -> Result<(), AccountsError> {
        self.set_hash(user, hash_password(password)?)
    }

    /// Sets (and saves) a user's password hash, made by [`hash_password`].
    pub fn set_hash(&mut self, user: &str, hash: String) -> Result<(), AccountsError> {
        self.hashes.insert(user.to_string(), hash);
        self.write()
    }

    /// Every user name, sorted.
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self.hashes.keys().cloned().collect();
        users.sort();
        users
    }

    /// Removes (and saves) a user; false if there was none.
    pub fn remove(&mut self, user: &str) -> Result<bool, AccountsError> {
        if self.hashes.remove(user).is_none() {
            return Ok(false);
        }
        self.write().map(|()| true)
    }

    /// Whether the user exists.
    pub fn exists(&self, user: &str) -> bool {
        self.hashes.contains_key(user)
    }

    fn read(&mut self) -> Result<(), AccountsError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| AccountsError::Io {
            path: self.path.clone(),
            source,
        })?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let (name, hash) = line.split_once(':').ok_or_else(|| AccountsError::BadLine {
                path: self.path.clone(),
                line: n + 1,
            })?;
            self.hashes.insert(name.to_string(), hash.to_string());
        }
        Ok(())
    }

    fn write(&self) -> Result<(), AccountsError> {
        let mut names: Vec<_> = self.hashes.keys().collect();
        names.sort();
        let text: String = names
            .iter()
            .map(|n| format!("{n}:{}\n", self.hashes[*n]))
            .collect();
        replace_private(&self.path, text.as_bytes()).map_err(|source| AccountsError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Replaces `path` with `bytes` (mode 0600, written to a temporary file, synced, then renamed
/// over it) so that a crash leaves the old or the new content and no one else can read it.
pub fn replace_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Whether `password` matches a PHC-string hash (argon2; tens of milliseconds).
pub fn verify_hash(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash of a random password, with the parameters real accounts get: checking a password
/// against it costs what checking a real account does.
pub fn decoy_hash() -> Result<String, AccountsError> {
    hash_password(&random_password()?)
}

/// An argon2 hash (PHC string) of `password` with a fresh salt (tens of milliseconds: callers
/// serving clients run it on a blocking thread, outside the accounts lock).
pub fn hash_password(password: &str) -> Result<String, AccountsError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AccountsError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccountsError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AccountsError::Hash(e.to_string()))
}

/// 16 random characters from an unambiguous alphabet.
fn random_password() -> Result<String, AccountsError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| AccountsError::Random(e.to_string()))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_password_given_generated_and_kept() {
        let dir = std::env::temp_dir().join(format!("vireo-users-test-{}", std::process::id()));
        let (accounts, generated) = Accounts::open(&dir, RootPassword::KeepOrGenerate).unwrap();
        let password = generated.expect("first start generates a root password");
        assert!(accounts.verify("root", &password));
        assert!(!accounts.verify("root", "wrong"));
        let (accounts, generated) = Accounts::open(&dir, RootPassword::KeepOrGenerate).unwrap();
        assert!(
            generated.is_none() && accounts.verify("root", &password),
            "kept across restarts"
        );
        let (accounts, _) = Accounts::open(&dir, RootPassword::Given("s3cret".into())).unwrap();
        assert!(accounts.verify("root", "s3cret") && !accounts.verify("root", &password));
        assert!(std::fs::read_to_string(dir.join("users"))
            .unwrap()
            .starts_with("root:$argon2id$"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
