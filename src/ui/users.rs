//! The web page's users: a file of `name:argon2-hash` lines (or a Kubernetes Secret mounted
//! as that file), written by `callvault user add` and read on every login, so a changed
//! Secret takes effect without a restart. Passwords are hashed with Argon2id and never
//! stored, logged or taken from the command line.

use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};

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
    #[error("line {line} of the users file {path} is not `name:argon2-hash`")]
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

    /// Every `(name, hash)` line; blank lines and `#` comments are skipped.
    fn entries(&self) -> Result<Vec<(String, String)>, UsersError> {
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
            let (name, hash) = line.split_once(':').ok_or_else(|| UsersError::BadLine {
                path: self.path.clone(),
                line: i + 1,
            })?;
            out.push((name.to_owned(), hash.to_owned()));
        }
        Ok(out)
    }

    /// Checks a name and password (CPU-heavy: call it off the async threads). A wrong name
    /// and a wrong password take as long and both answer `Ok(None)`.
    pub fn verify(
        &self,
        name: &str,
        password: &SecretString,
    ) -> Result<Option<UserName>, UsersError> {
        let entries = self.entries()?;
        let found = entries.iter().find(|(n, _)| n == name);
        let hash = found.map_or(decoy_hash(), |(_, h)| h.as_str());
        let matches = PasswordHash::new(hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok()
        });
        match found {
            Some((n, _)) if matches => Ok(Some(UserName::parse(n)?)),
            _ => Ok(None),
        }
    }

    /// Adds `name` with `password`, or replaces that user's password; the file is rewritten
    /// whole (through a temporary file and a rename), readable by its owner only.
    pub fn add(&self, name: &UserName, password: &SecretString) -> Result<bool, UsersError> {
        if password.expose_secret().chars().count() < MIN_PASSWORD_LEN {
            return Err(UsersError::ShortPassword);
        }
        let hash = Argon2::default()
            .hash_password(password.expose_secret().as_bytes())
            .map_err(|e| UsersError::Hash(e.to_string()))?
            .to_string();
        let mut entries = self.entries()?;
        let replaced = entries.iter().any(|(n, _)| n == name.as_str());
        entries.retain(|(n, _)| n != name.as_str());
        entries.push((name.as_str().to_owned(), hash));
        let mut text =
            String::from("# callvault web page users: name:argon2id-hash (`callvault user add`)\n");
        for (n, h) in &entries {
            text.push_str(&format!("{n}:{h}\n"));
        }
        self.write(&text)?;
        Ok(replaced)
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
}
