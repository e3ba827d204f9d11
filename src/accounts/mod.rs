//! Provider accounts: one deployment archiving the calls of several provider accounts (an
//! outsourcing company's clients, a group's subsidiaries), each into its own place under its
//! own rules. Why a module of its own: an account is not a setting of one command but the
//! unit everything else is divided by (the ledger's rows, the store, the pace, the callback
//! address, the web page's users), so its name, its declaration and the rules between
//! accounts live here once.
//!
//! An account is declared in the settings file as a table `[accounts.<name>]` holding the
//! settings that differ from the top level ([`AccountTable`]); secrets are named by
//! reference (`accesskey-env`, `accesskey-file`, and `*-env`/`*-file` in its `[aws]`
//! table), never written inline, so that the file can be shared and kept in version
//! control. Without any table the top-level settings form one account, [`DEFAULT`], and
//! every command behaves as it did before accounts existed.
//!
//! What is here is the file's side: the names, the tables as declared, reading a secret a
//! table names, and the rule that two accounts never write to the same place. Merging a
//! table with the top-level settings of a command is `app::accounts`'s (it knows the
//! command line).

mod table;

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;

pub use table::{AccountTable, AwsSetting};

/// The account the top-level settings form when the file declares none, and the account
/// of every row a ledger held before accounts existed.
pub const DEFAULT: &str = "default";

/// The longest account name: it appears in object keys, metric labels and URLs.
const MAX_NAME: usize = 40;

/// An account's name: a short slug (`acme`, `north-1`): lower-case ASCII letters, digits
/// and `-`, starting with a letter or digit, at most 40 characters. It is safe in an
/// object key, a URL path segment, a metric label and a file name as it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct AccountName(String);

impl AccountName {
    pub fn parse(raw: &str) -> Result<Self, AccountError> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_NAME
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-')
            && !raw.ends_with('-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(AccountError(format!(
                "account name {raw:?} is not a short slug: use lower-case letters, digits \
                 and `-` (not first or last), at most {MAX_NAME} characters"
            )))
        }
    }

    pub fn default_account() -> Self {
        Self(DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An account's declaration is wrong; the message names the account and the setting. (The
/// caller reports it as a configuration error, exit 2.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AccountError(pub String);

/// Where a secret is: an environment variable or a file (a mounted Kubernetes Secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl SecretRef {
    /// The secret's value: the variable's, or the file's without its trailing newline. A
    /// variable that is unset or empty, or a file that cannot be read or is empty, is an
    /// error naming it (but never the value).
    pub fn read(&self) -> Result<SecretString, String> {
        self.read_with(|name| std::env::var(name).ok())
    }

    fn read_with(&self, env: impl Fn(&str) -> Option<String>) -> Result<SecretString, String> {
        match self {
            SecretRef::Env(name) => match env(name) {
                Some(v) if !v.is_empty() => Ok(SecretString::from(v)),
                _ => Err(format!("the variable {name} it names is not set")),
            },
            SecretRef::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("the file {} it names: {e}", path.display()))?;
                let value = text.trim_end_matches(['\n', '\r']);
                if value.is_empty() {
                    return Err(format!("the file {} it names is empty", path.display()));
                }
                Ok(SecretString::from(value.to_owned()))
            }
        }
    }

    /// How the reference is shown: where the secret is, never what it is.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env(name) => format!("env {name}"),
            SecretRef::File(path) => format!("file {}", path.display()),
        }
    }
}

/// Where an account writes, as far as the rule between accounts is concerned.
#[derive(Debug, Clone)]
pub struct Destination<'a> {
    pub account: &'a AccountName,
    /// The store URL (`s3://bucket/prefix`, `file:///path`).
    pub store: &'a str,
    /// The key template's text.
    pub key_template: &'a str,
}

/// The placeholder that makes keys differ between accounts sharing a store and prefix.
pub const ACCOUNT_PLACEHOLDER: &str = "{account}";

/// Two accounts may not write to the same store and prefix (or one inside the other's)
/// unless both key templates contain `{account}`: otherwise one client's recordings could
/// land on, or beside, another's. Returns the pairs that share a place and may (their
/// manifests then go below a prefix of their own), or the first pair that may not.
pub fn check_destinations<'a>(
    all: &[Destination<'a>],
) -> Result<Vec<(&'a AccountName, &'a AccountName)>, AccountError> {
    let mut shared = Vec::new();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if !overlaps(a.store, b.store) {
                continue;
            }
            let separated = a.key_template.contains(ACCOUNT_PLACEHOLDER)
                && b.key_template.contains(ACCOUNT_PLACEHOLDER);
            if !separated {
                return Err(AccountError(format!(
                    "accounts `{}` and `{}` write to the same store and prefix ({} and {}): \
                     give each its own store or prefix, or put {ACCOUNT_PLACEHOLDER} in both \
                     key templates",
                    a.account, b.account, a.store, b.store
                )));
            }
            shared.push((a.account, b.account));
        }
    }
    Ok(shared)
}

/// Whether two store URLs name the same place or one lies inside the other
/// (`s3://b/calls` and `s3://b/calls/acme`), compared by whole path segments.
fn overlaps(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.trim().trim_end_matches('/');
        s.split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (a, b) = (norm(a), norm(b));
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_are_short_slugs() {
        for good in ["default", "acme", "north-1", "a", "0x"] {
            assert!(AccountName::parse(good).is_ok(), "{good}");
        }
        let long = "a".repeat(41);
        for bad in [
            "",
            "Acme",
            "-a",
            "a-",
            "a b",
            "a/b",
            "ä",
            "a_b",
            long.as_str(),
        ] {
            let err = AccountName::parse(bad).unwrap_err().to_string();
            assert!(err.contains("short slug"), "{bad}: {err}");
        }
    }

    #[test]
    fn secrets_are_read_from_a_variable_or_a_file_and_never_shown() {
        use secrecy::ExposeSecret;
        let env = |name: &str| (name == "K").then(|| "s3cr3t".to_owned());
        let got = SecretRef::Env("K".into()).read_with(env).unwrap();
        assert_eq!(got.expose_secret(), "s3cr3t");
        let err = SecretRef::Env("MISSING".into()).read_with(env).unwrap_err();
        assert!(err.contains("MISSING"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "from-file\n").unwrap();
        let got = SecretRef::File(path.clone()).read().unwrap();
        assert_eq!(got.expose_secret(), "from-file");
        std::fs::write(&path, "\n").unwrap();
        let err = SecretRef::File(path.clone()).read().unwrap_err();
        assert!(err.contains("empty"), "{err}");
        assert!(!SecretRef::File(path).describe().contains("from-file"));
    }

    fn dest<'a>(account: &'a AccountName, store: &'a str, key: &'a str) -> Destination<'a> {
        Destination {
            account,
            store,
            key_template: key,
        }
    }

    #[test]
    fn two_accounts_share_a_place_only_with_the_account_in_their_keys() {
        let (a, b) = (
            AccountName::parse("a").unwrap(),
            AccountName::parse("b").unwrap(),
        );
        let plain = "{companycode}/{uuid}{ext}";
        let split = "{account}/{companycode}/{uuid}{ext}";
        // Different buckets or prefixes: fine, whatever the templates.
        for (x, y) in [
            ("s3://one/calls", "s3://two/calls"),
            ("s3://one/calls/a", "s3://one/calls/b"),
            ("s3://one/calls", "s3://one/calls-b"),
        ] {
            let got = check_destinations(&[dest(&a, x, plain), dest(&b, y, plain)]).unwrap();
            assert!(got.is_empty(), "{x} {y}");
        }
        // The same place, or one inside the other: only with {account} in both.
        for (x, y) in [
            ("s3://one/calls", "s3://one/calls/"),
            ("s3://one/calls", "s3://one/calls/b"),
            ("file:///srv/a", "file:///srv/a"),
        ] {
            let err = check_destinations(&[dest(&a, x, plain), dest(&b, y, split)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("`a` and `b`"), "{err}");
            let got = check_destinations(&[dest(&a, x, split), dest(&b, y, split)]).unwrap();
            assert_eq!(got, vec![(&a, &b)]);
        }
    }
}
