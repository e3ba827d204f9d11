//! The web page's users: a file of lines (or a Kubernetes Secret mounted as that file),
//! written by `callvault user add` and read on every login and every request, so a changed
//! Secret takes effect without a restart. Passwords are hashed with Argon2id and never
//! stored, logged or taken from the command line.
//!
//! A line is `name:hash:accounts`:
//! - `hash` is the Argon2id hash of the user's password, or empty for a user who signs in
//!   only through the authenticating proxy (`user add NAME --proxy-only`): a proxy's user
//!   sees nothing unless the file lists it, since the line is what says which accounts it
//!   may see;
//! - `accounts` is the comma-separated list of the provider accounts whose calls the user
//!   sees (`acme,globex`), or `*` for every account the page serves (the outsourcer's own
//!   compliance staff).
//!
//! A line of two fields, `name:hash`, as callvault wrote before accounts existed, is the
//! account `default` only: a deployment with one account keeps working as it was.

use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};

use crate::accounts::AccountName;

/// A password shorter than this is refused by `user add`.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Why the users file could not be read or written, by what the operator must do.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error(
        "cannot read the users file {path}: {source} (create it with `callvault user add NAME`)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the users file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "line {line} of the users file {path} is not `name:argon2-hash:accounts` (accounts: \
         `*` or account names separated by commas)"
    )]
    BadLine { path: PathBuf, line: usize },
    #[error(
        "user name {0:?} is not allowed: use 1 to 64 letters, digits and . _ @ - (no spaces or colons)"
    )]
    BadName(String),
    #[error("the password is shorter than {MIN_PASSWORD_LEN} characters: choose a longer one")]
    ShortPassword,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// A user name as the page, the session and the access log carry it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserName(String);

impl UserName {
    /// Letters, digits and `. _ @ -`, 1 to 64 of them: safe in a file line, a header, a log.
    pub fn parse(raw: &str) -> Result<Self, UsersError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(UsersError::BadName(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which accounts' calls a user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAccounts {
    /// Every account the page serves (`*` in the file).
    All,
    /// These accounts (at least one), in the order the file lists them.
    Only(Vec<AccountName>),
}

impl UserAccounts {
    /// The account `default` alone: a line without accounts, or a user added without any.
    pub fn default_only() -> Self {
        Self::Only(vec![AccountName::default_account()])
    }

    /// Whether the user may see `account`'s calls.
    pub fn includes(&self, account: &AccountName) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.contains(account),
        }
    }

    /// The field as the file holds it: `*` or `acme,globex`.
    fn field(&self) -> String {
        match self {
            Self::All => "*".to_owned(),
            Self::Only(names) => names
                .iter()
                .map(AccountName::as_str)
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    fn parse_field(raw: &str) -> Option<Self> {
        if raw.trim() == "*" {
            return Some(Self::All);
        }
        let names = raw
            .split(',')
            .map(|n| AccountName::parse(n.trim()).ok())
            .collect::<Option<Vec<_>>>()?;
        (!names.is_empty()).then_some(Self::Only(names))
    }
}

/// One line of the file.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    /// Empty for a user who signs in only through the proxy.
    hash: String,
    accounts: UserAccounts,
}

/// The users file at a path.
#[derive(Debug, Clone)]
pub struct UsersFile {
    path: PathBuf,
}

/// A hash of a random password nobody has, verified when the name is unknown so that a
/// wrong name costs as long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let random: [u8; 32] = rand::random();
        Argon2::default()
            .hash_password(&random)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl UsersFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every line; blank lines and `#` comments are skipped.
    fn entries(&self) -> Result<Vec<Entry>, UsersError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(UsersError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || UsersError::BadLine {
                path: self.path.clone(),
                line: i + 1,
            };
            let mut fields = line.splitn(3, ':');
            let (name, hash) = (fields.next().unwrap_or(""), fields.next().ok_or_else(bad)?);
            let accounts = match fields.next() {
                None => UserAccounts::default_only(),
                Some(field) => UserAccounts::parse_field(field).ok_or_else(bad)?,
            };
            out.push(Entry {
                name: name.to_owned(),
                hash: hash.to_owned(),
                accounts,
            });
        }
        Ok(out)
    }

    /// Checks a name and password (CPU-heavy: call it off the async threads). A wrong name
    /// and a wrong password take as long and both answer `Ok(None)`; so does a user listed
    /// without a password (who signs in through the proxy only).
    pub fn verify(
        &self,
        name: &str,
        password: &SecretString,
    ) -> Result<Option<UserName>, UsersError> {
        let entries = self.entries()?;
        let found = entries.iter().find(|e| e.name == name);
        let hash = found.map_or(decoy_hash(), |e| e.hash.as_str());
        let matches = PasswordHash::new(hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok()
        });
        match found {
            Some(e) if matches => Ok(Some(UserName::parse(&e.name)?)),
            _ => Ok(None),
        }
    }

    /// The accounts `name` may see; `None` when the file does not list the user.
    pub fn accounts_of(&self, name: &str) -> Result<Option<UserAccounts>, UsersError> {
        Ok(self
            .entries()?
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| e.accounts))
    }

    /// Adds `name` with `password`, or replaces that user's password, keeping its accounts
    /// (a new user gets the account `default`).
    pub fn add(&self, name: &UserName, password: &SecretString) -> Result<bool, UsersError> {
        self.put(name, Some(password), None)
    }

    /// Adds `name`, or replaces its line: with `password` hashed, or without a password (a
    /// user of the proxy only) when `None`; with `accounts`, or when `None` the accounts its
    /// line had (`default` for a new user). Whether the user was there already. The file is
    /// rewritten whole (through a temporary file and a rename), readable by its owner only.
    pub fn put(
        &self,
        name: &UserName,
        password: Option<&SecretString>,
        accounts: Option<UserAccounts>,
    ) -> Result<bool, UsersError> {
        let hash = match password {
            Some(password) => hash(password)?,
            None => String::new(),
        };
        let mut entries = self.entries()?;
        let old = entries.iter().position(|e| e.name == name.as_str());
        let accounts = accounts
            .or_else(|| old.map(|i| entries[i].accounts.clone()))
            .unwrap_or_else(UserAccounts::default_only);
        let entry = Entry {
            name: name.as_str().to_owned(),
            hash,
            accounts,
        };
        match old {
            Some(i) => entries[i] = entry,
            None => entries.push(entry),
        }
        let mut text = String::from(
            "# callvault web page users: name:argon2id-hash:accounts (`callvault user add`);\n\
             # no hash: signs in through the proxy only; accounts `*`: every account\n",
        );
        for e in &entries {
            text.push_str(&format!("{}:{}:{}\n", e.name, e.hash, e.accounts.field()));
        }
        self.write(&text)?;
        Ok(old.is_some())
    }

    fn write(&self, text: &str) -> Result<(), UsersError> {
        let err = |source| UsersError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut tmp = tempfile_in(&dir).map_err(err)?;
        tmp.1.write_all(text.as_bytes()).map_err(err)?;
        tmp.1.sync_all().map_err(err)?;
        std::fs::rename(&tmp.0, &self.path).map_err(err)?;
        Ok(())
    }
}

/// The Argon2id hash of `password`, refused when it is too short.
fn hash(password: &SecretString) -> Result<String, UsersError> {
    if password.expose_secret().chars().count() < MIN_PASSWORD_LEN {
        return Err(UsersError::ShortPassword);
    }
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Hash(e.to_string()))
}

/// A new file beside the users file, owner-only.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = format!(
        ".callvault-users.{}.{}",
        std::process::id(),
        rand::random::<u64>()
    );
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_users_verify_and_wrong_passwords_or_names_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let users = UsersFile::new(dir.path().join("users"));
        let name = UserName::parse("alice").unwrap();
        let pw = SecretString::from("correct horse battery");
        assert!(!users.add(&name, &pw).unwrap());
        assert_eq!(users.verify("alice", &pw).unwrap(), Some(name.clone()));
        assert_eq!(
            users
                .verify("alice", &SecretString::from("wrong password!"))
                .unwrap(),
            None
        );
        assert_eq!(users.verify("bob", &pw).unwrap(), None);
        let text = std::fs::read_to_string(users.path()).unwrap();
        assert!(!text.contains("correct horse"), "only the hash is written");
        assert!(text.contains("alice:$argon2id$"));
        // A new password replaces the old one.
        let pw2 = SecretString::from("another long password");
        assert!(users.add(&name, &pw2).unwrap());
        assert_eq!(users.verify("alice", &pw).unwrap(), None);
        assert_eq!(users.verify("alice", &pw2).unwrap(), Some(name));
    }

    #[test]
    fn names_that_could_break_the_file_or_a_header_are_refused() {
        for bad in ["", "a:b", "a b", "a\nb", "<script>", &"x".repeat(65)] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UserName::parse("jane.doe@example-corp_1").is_ok());
    }

    #[test]
    fn short_passwords_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let users = UsersFile::new(dir.path().join("users"));
        let name = UserName::parse("alice").unwrap();
        assert!(matches!(
            users.add(&name, &SecretString::from("short")),
            Err(UsersError::ShortPassword)
        ));
    }

    fn account(name: &str) -> AccountName {
        AccountName::parse(name).unwrap()
    }

    #[test]
    fn old_lines_are_the_default_account_and_new_lines_name_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let users = UsersFile::new(dir.path().join("users"));
        let old = UsersFile::new(dir.path().join("old"));
        old.add(
            &UserName::parse("x").unwrap(),
            &SecretString::from("a long password!"),
        )
        .unwrap();
        let hash = std::fs::read_to_string(old.path()).unwrap();
        let hash = hash
            .lines()
            .last()
            .unwrap()
            .split(':')
            .nth(1)
            .unwrap()
            .to_owned();
        std::fs::write(
            users.path(),
            format!("# a file from before accounts\nalice:{hash}\nproxy::acme, globex\nboss::*\n"),
        )
        .unwrap();
        assert_eq!(
            users.accounts_of("alice").unwrap(),
            Some(UserAccounts::default_only())
        );
        assert_eq!(
            users.accounts_of("proxy").unwrap(),
            Some(UserAccounts::Only(vec![account("acme"), account("globex")]))
        );
        assert_eq!(users.accounts_of("boss").unwrap(), Some(UserAccounts::All));
        assert_eq!(users.accounts_of("nobody").unwrap(), None);
        let pw = SecretString::from("a long password!");
        assert!(
            users.verify("alice", &pw).unwrap().is_some(),
            "an old line still logs in"
        );
        assert_eq!(
            users.verify("proxy", &SecretString::from("")).unwrap(),
            None,
            "a line without a hash never logs in with a password"
        );
        // A new password keeps the accounts; naming accounts replaces them.
        let alice = UserName::parse("alice").unwrap();
        assert!(users.put(&alice, Some(&pw), None).unwrap());
        assert_eq!(
            users.accounts_of("alice").unwrap(),
            Some(UserAccounts::default_only())
        );
        let proxy = UserName::parse("proxy").unwrap();
        users.put(&proxy, None, Some(UserAccounts::All)).unwrap();
        let text = std::fs::read_to_string(users.path()).unwrap();
        assert!(text.contains("\nproxy::*\n"), "{text}");
        assert!(text.contains("\nalice:$argon2id$"), "{text}");
        assert!(text.contains(":default\n"), "{text}");
    }

    #[test]
    fn a_line_with_a_bad_account_field_is_refused_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let users = UsersFile::new(dir.path().join("users"));
        for bad in ["bob::", "bob::Acme", "bob::acme,,globex", "bob"] {
            std::fs::write(users.path(), format!("# users\n{bad}\n")).unwrap();
            assert!(
                matches!(
                    users.accounts_of("bob"),
                    Err(UsersError::BadLine { line: 2, .. })
                ),
                "{bad}"
            );
        }
    }
}
