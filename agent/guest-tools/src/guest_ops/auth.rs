//! Guest credentials, checked in the guest: a user name and password against the system's
//! password database (/etc/passwd for the account, /etc/shadow for its hash, verified with
//! libcrypt's `crypt`, which knows every hash the distribution writes: yescrypt, SHA-512,
//! ...), or a ticket handed out by `acquire-ticket` for such a check. Locked accounts and
//! empty hashes never authenticate. Passwords are never logged or kept.

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::raw::c_char;
use std::path::PathBuf;
use std::sync::Mutex;

use super::wire::{GuestAuth, GuestFault, GuestOpError};

/// Most tickets held at once; the oldest goes first.
const MAX_TICKETS: usize = 64;

#[link(name = "crypt")]
extern "C" {
    /// libcrypt's `crypt(3)`: hashes `key` with the method and salt of `setting`.
    fn crypt(key: *const c_char, setting: *const c_char) -> *mut c_char;
}

/// `crypt` returns a static buffer: one caller at a time.
static CRYPT: Mutex<()> = Mutex::new(());

/// A guest account operations run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// The password database and the tickets handed out.
pub struct Accounts {
    passwd: PathBuf,
    shadow: PathBuf,
    tickets: Vec<(String, String)>,
}

fn invalid_login() -> GuestOpError {
    GuestOpError::new(
        GuestFault::InvalidLogin,
        "the guest user name or password is not correct",
    )
}

impl Accounts {
    /// The database in `passwd` and `shadow` (/etc/passwd and /etc/shadow on a real guest).
    pub fn new(passwd: impl Into<PathBuf>, shadow: impl Into<PathBuf>) -> Accounts {
        Accounts {
            passwd: passwd.into(),
            shadow: shadow.into(),
            tickets: Vec::new(),
        }
    }

    /// The account `auth` proves, or InvalidLogin.
    pub fn authenticate(&self, auth: &GuestAuth) -> Result<Account, GuestOpError> {
        let name = match auth {
            GuestAuth::Password { user, password } => {
                self.check_password(user, password)?;
                user.clone()
            }
            GuestAuth::Ticket { ticket } => self
                .tickets
                .iter()
                .find(|(t, _)| constant_time_eq(t.as_bytes(), ticket.as_bytes()))
                .map(|(_, user)| user.clone())
                .ok_or_else(invalid_login)?,
        };
        self.account(&name).ok_or_else(invalid_login)
    }

    /// A new ticket standing for `account`.
    pub fn acquire_ticket(&mut self, account: &Account) -> Result<String, GuestOpError> {
        let ticket = random_hex(24)
            .map_err(|e| GuestOpError::new(GuestFault::Failed, format!("no randomness: {e}")))?;
        if self.tickets.len() >= MAX_TICKETS {
            self.tickets.remove(0);
        }
        self.tickets.push((ticket.clone(), account.name.clone()));
        Ok(ticket)
    }

    /// Forgets the ticket `auth` carries (a password needs no release).
    pub fn release(&mut self, auth: &GuestAuth) {
        if let GuestAuth::Ticket { ticket } = auth {
            self.tickets.retain(|(t, _)| t != ticket);
        }
    }

    /// The passwd entry of `name`.
    pub fn account(&self, name: &str) -> Option<Account> {
        let text = std::fs::read_to_string(&self.passwd).ok()?;
        text.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 7 && f[0] == name).then(|| Account {
                name: name.to_string(),
                uid: f[2].parse().unwrap_or(u32::MAX),
                gid: f[3].parse().unwrap_or(u32::MAX),
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
    }

    /// The stored hash of `name`: shadow's, or passwd's when it holds one itself.
    fn stored_hash(&self, name: &str) -> Option<String> {
        let field = |path: &PathBuf| {
            let text = std::fs::read_to_string(path).ok()?;
            text.lines().find_map(|line| {
                let mut f = line.split(':');
                (f.next() == Some(name)).then(|| f.next().unwrap_or("").to_string())
            })
        };
        match field(&self.passwd)? {
            in_passwd if in_passwd != "x" => Some(in_passwd),
            _ => field(&self.shadow),
        }
    }

    fn check_password(&self, user: &str, password: &str) -> Result<(), GuestOpError> {
        let hash = self.stored_hash(user).ok_or_else(invalid_login)?;
        // "!..." and "*" are locked accounts; an empty hash would let anyone in.
        if hash.is_empty() || hash.starts_with('!') || hash.starts_with('*') {
            return Err(invalid_login());
        }
        match crypt_hash(password, &hash) {
            Some(computed) if constant_time_eq(computed.as_bytes(), hash.as_bytes()) => Ok(()),
            _ => Err(invalid_login()),
        }
    }
}

/// `password` hashed with the method and salt of `setting` (a stored hash); `None` if
/// libcrypt refuses the setting.
pub fn crypt_hash(password: &str, setting: &str) -> Option<String> {
    let key = CString::new(password).ok()?;
    let setting = CString::new(setting).ok()?;
    let _only_caller = CRYPT.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: both arguments are NUL-terminated strings that outlive the call; the result
    // (a static buffer, or NULL) is copied out before the lock is released.
    let hashed = unsafe { crypt(key.as_ptr(), setting.as_ptr()) };
    if hashed.is_null() {
        return None;
    }
    // SAFETY: a non-NULL result is a NUL-terminated string in libcrypt's buffer.
    let text = unsafe { CStr::from_ptr(hashed) }.to_str().ok()?.to_string();
    // libcrypt answers a refused setting with a "*0"/"*1" failure token.
    (!text.starts_with('*')).then_some(text)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `bytes` random bytes from the kernel, as hex.
fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buffer)?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &std::path::Path, password: &str) -> Accounts {
        let hash = crypt_hash(password, "$6$saltsaltsalt$").unwrap();
        let passwd = dir.join("passwd");
        let shadow = dir.join("shadow");
        std::fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/sh\nann:x:1000:1000:Ann:/home/ann:/bin/bash\n\
             locked:x:1001:1001::/home/locked:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            &shadow,
            format!("root:*:19000::::::\nann:{hash}:19000:0:99999:7:::\nlocked:!{hash}:1::::::\n"),
        )
        .unwrap();
        Accounts::new(passwd, shadow)
    }

    fn password(user: &str, password: &str) -> GuestAuth {
        GuestAuth::Password {
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn passwords_are_checked_against_shadow_hashes() {
        let dir = std::env::temp_dir().join(format!("vireo-tools-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let accounts = database(&dir, "right horse");
        let ann = accounts
            .authenticate(&password("ann", "right horse"))
            .unwrap();
        assert_eq!(
            (ann.uid, ann.gid, ann.home.as_str()),
            (1000, 1000, "/home/ann")
        );
        for (user, pass) in [
            ("ann", "wrong horse"),
            ("ann", ""),
            ("root", ""),
            ("locked", "right horse"),
            ("nobody", "right horse"),
        ] {
            let error = accounts.authenticate(&password(user, pass)).unwrap_err();
            assert_eq!(error.fault, GuestFault::InvalidLogin, "{user}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tickets_stand_for_the_account_until_released() {
        let dir = std::env::temp_dir().join(format!("vireo-tools-ticket-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut accounts = database(&dir, "pw");
        let ann = accounts.authenticate(&password("ann", "pw")).unwrap();
        let ticket = GuestAuth::Ticket {
            ticket: accounts.acquire_ticket(&ann).unwrap(),
        };
        assert_eq!(accounts.authenticate(&ticket).unwrap(), ann);
        let forged = GuestAuth::Ticket {
            ticket: "00".repeat(24),
        };
        assert!(accounts.authenticate(&forged).is_err());
        accounts.release(&ticket);
        assert!(accounts.authenticate(&ticket).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
