//! The TOML configuration file (`--config`). Its settings become the defaults of the command
//! line's own arguments, so clap keeps the precedence flag > environment > file > built-in
//! default, and every setting with a flag can be put in the file under the flag's long name.
//! The file knows the command line only as the `clap::Command` it is given; `app::args`
//! puts the two together.
//!
//! ```toml
//! ledger = "sqlite:///var/lib/callvault/ledger.db"
//! store = "s3://recordings/calls"
//! concurrency = 16
//! deadline = "50m"
//!
//! [aws]                 # the AWS_* variables, lower-cased, without the prefix
//! region = "eu-west-1"
//! endpoint = "https://s3.example.net"
//!
//! [accounts.acme]       # provider accounts (see `crate::accounts`)
//! appid = "acme-app"
//! accesskey-env = "ACME_ACCESSKEY"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::accounts::{AccountName, AccountTable};

/// The configuration file is unreadable or wrong; the message names the file and the
/// setting. (The caller reports it as a configuration error.)
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FileError(String);

/// What a configuration file says.
#[derive(Debug, Default)]
pub struct FileSettings {
    /// Argument id (the long name with `_` for `-`) → its value or values.
    values: BTreeMap<String, Vec<String>>,
    /// `[aws]`: object_store's S3 keys (`aws_region`, …) → value.
    pub aws: Vec<(String, String)>,
    /// `[accounts.<name>]`: the provider accounts declared, by name.
    pub accounts: Vec<(AccountName, AccountTable)>,
}

/// Arguments that make no sense in a file.
const NOT_IN_FILE: &[&str] = &[
    "config",
    "help",
    "version",
    // `retry`'s choice of records is made on the command line each time.
    "uuid",
    "retry_error_code",
    "all",
    "include_expired",
];

/// The `--config` path of this command line, else `CALLVAULT_CONFIG`.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("CALLVAULT_CONFIG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

impl FileSettings {
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FileError(format!("cannot read config file {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| FileError(format!("{}: {}", path.display(), e.0)))
    }

    pub fn parse(text: &str) -> Result<Self, FileError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| FileError(e.to_string()))?;
        let mut settings = Self::default();
        for (key, value) in table {
            if key == "accounts" {
                settings.accounts = accounts(value)?;
                continue;
            }
            if key == "aws" {
                let toml::Value::Table(aws) = value else {
                    return Err(FileError("`aws` must be a table".into()));
                };
                for (k, v) in aws {
                    let name = crate::store::s3_setting_name(&k)
                        .ok_or_else(|| FileError(format!("unknown S3 setting `aws.{k}`")))?;
                    let mut scalar = scalars(&k, v)?;
                    if scalar.len() != 1 {
                        return Err(FileError(format!("`aws.{k}` must be one value")));
                    }
                    settings.aws.push((name, scalar.remove(0)));
                }
                continue;
            }
            let id = key.replace('-', "_");
            settings.values.insert(id, scalars(&key, value)?);
        }
        Ok(settings)
    }

    /// Sets the file's values as the defaults of `cmd`'s arguments (and its subcommands').
    /// A key no argument has is an error: a typo must not pass silently.
    pub fn apply(&self, cmd: clap::Command) -> Result<clap::Command, FileError> {
        let mut known = BTreeSet::new();
        collect_ids(&cmd, &mut known);
        if let Some(unknown) = self
            .values
            .keys()
            .find(|k| !known.contains(k.as_str()) || NOT_IN_FILE.contains(&k.as_str()))
        {
            return Err(FileError(format!(
                "config file: unknown setting `{}`",
                unknown.replace('_', "-")
            )));
        }
        Ok(self.apply_to(cmd))
    }

    fn apply_to(&self, cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|arg| match self.values.get(arg.get_id().as_str()) {
            Some(values) => {
                let arg = arg.default_values(values.iter().cloned());
                // Hidden: the file may hold secrets, and `--help` must not print them.
                if arg.get_action().takes_values() {
                    arg.hide_default_value(true)
                } else {
                    arg
                }
            }
            None => arg,
        })
        .mut_subcommands(|sub| self.apply_to(sub))
    }
}

/// `[accounts.*]`: each a table named by its account.
fn accounts(value: toml::Value) -> Result<Vec<(AccountName, AccountTable)>, FileError> {
    let toml::Value::Table(all) = value else {
        return Err(FileError(
            "`accounts` must hold tables: `[accounts.<name>]`".into(),
        ));
    };
    all.into_iter()
        .map(|(name, value)| match value {
            toml::Value::Table(table) => {
                AccountTable::from_toml(&name, table).map_err(|e| FileError(e.to_string()))
            }
            _ => Err(FileError(format!(
                "`accounts.{name}` must be a table: `[accounts.{name}]`"
            ))),
        })
        .collect()
}

fn collect_ids(cmd: &clap::Command, into: &mut BTreeSet<String>) {
    for arg in cmd.get_arguments() {
        if !arg.is_positional() {
            into.insert(arg.get_id().to_string());
        }
    }
    for sub in cmd.get_subcommands() {
        collect_ids(sub, into);
    }
}

fn scalars(key: &str, value: toml::Value) -> Result<Vec<String>, FileError> {
    match value {
        toml::Value::Array(items) => items.into_iter().map(|v| scalar(key, v)).collect(),
        other => Ok(vec![scalar(key, other)?]),
    }
}

fn scalar(key: &str, value: toml::Value) -> Result<String, FileError> {
    Ok(match value {
        toml::Value::String(s) => s,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            return Err(FileError(format!("`{key}`: expected a value, not a table")));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aws_table_takes_object_stores_names() {
        let settings =
            FileSettings::parse("[aws]\nregion = \"eu-1\"\naws-endpoint = \"http://s3\"\n")
                .unwrap();
        let mut aws = settings.aws;
        aws.sort();
        assert_eq!(
            aws,
            [
                ("aws_endpoint".to_owned(), "http://s3".to_owned()),
                ("aws_region".to_owned(), "eu-1".to_owned()),
            ]
        );
        let err = FileSettings::parse("[aws]\nbogus = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("aws.bogus"), "{err}");
    }

    #[test]
    fn accounts_are_tables_by_name() {
        let settings = FileSettings::parse(
            "store = \"s3://b/top\"\n[accounts.acme]\nappid = \"a\"\n[accounts.beta]\nappid = \"b\"\n",
        )
        .unwrap();
        let names: Vec<&str> = settings.accounts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["acme", "beta"]);
        let err = FileSettings::parse("accounts = 3").unwrap_err().to_string();
        assert!(err.contains("[accounts.<name>]"), "{err}");
        let err = FileSettings::parse("[accounts]\nacme = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[accounts.acme]"), "{err}");
    }

    /// (With callvault's own command line: `app::args`.)
    #[test]
    fn file_values_become_the_arguments_defaults() {
        let cmd = || clap::Command::new("t").arg(clap::Arg::new("concurrency").long("concurrency"));
        let settings = FileSettings::parse("concurrency = 3").unwrap();
        let matches = settings.apply(cmd()).unwrap().get_matches_from(["t"]);
        assert_eq!(
            matches.get_one::<String>("concurrency").map(String::as_str),
            Some("3")
        );
        let unknown = FileSettings::parse("concurency = 3").unwrap();
        let err = unknown.apply(cmd()).unwrap_err().to_string();
        assert!(err.contains("unknown setting `concurency`"), "{err}");
    }

    #[test]
    fn the_path_comes_from_the_flag_first() {
        let args: Vec<OsString> = ["callvault", "--config", "a.toml", "run"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(config_path(&args), Some(PathBuf::from("a.toml")));
        let args: Vec<OsString> = ["callvault", "run", "--config=b.toml"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(config_path(&args), Some(PathBuf::from("b.toml")));
    }
}
