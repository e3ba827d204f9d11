//! The TOML configuration file (`--config`). Its settings become the defaults of the command
//! line's own arguments, so clap keeps the precedence flag > environment > file > built-in
//! default, and every setting with a flag can be put in the file under the flag's long name.
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
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;

/// What a configuration file says.
#[derive(Debug, Default)]
pub struct FileSettings {
    /// Argument id (the long name with `_` for `-`) → its value or values.
    values: BTreeMap<String, Vec<String>>,
    /// `[aws]`: object_store's S3 keys (`aws_region`, …) → value.
    pub aws: Vec<(String, String)>,
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
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        let mut settings = Self::default();
        for (key, value) in table {
            if key == "aws" {
                let toml::Value::Table(aws) = value else {
                    return Err(ConfigError("`aws` must be a table".into()));
                };
                for (k, v) in aws {
                    let name = k.to_ascii_lowercase().replace('-', "_");
                    let name = if name.starts_with("aws_") {
                        name
                    } else {
                        format!("aws_{name}")
                    };
                    if name
                        .parse::<object_store::aws::AmazonS3ConfigKey>()
                        .is_err()
                    {
                        return Err(ConfigError(format!("unknown S3 setting `aws.{k}`")));
                    }
                    let mut scalar = scalars(&k, v)?;
                    if scalar.len() != 1 {
                        return Err(ConfigError(format!("`aws.{k}` must be one value")));
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
    pub fn apply(&self, cmd: clap::Command) -> Result<clap::Command, ConfigError> {
        let mut known = BTreeSet::new();
        collect_ids(&cmd, &mut known);
        if let Some(unknown) = self
            .values
            .keys()
            .find(|k| !known.contains(k.as_str()) || NOT_IN_FILE.contains(&k.as_str()))
        {
            return Err(ConfigError(format!(
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

fn scalars(key: &str, value: toml::Value) -> Result<Vec<String>, ConfigError> {
    match value {
        toml::Value::Array(items) => items.into_iter().map(|v| scalar(key, v)).collect(),
        other => Ok(vec![scalar(key, other)?]),
    }
}

fn scalar(key: &str, value: toml::Value) -> Result<String, ConfigError> {
    Ok(match value {
        toml::Value::String(s) => s,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            return Err(ConfigError(format!(
                "`{key}`: expected a value, not a table"
            )));
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::{CommandFactory, FromArgMatches};

    /// Parses `args` with `file` as the configuration file (for tests here and in `cli`).
    pub(crate) fn parse_with(file: &str, args: &[&str]) -> Result<Cli, String> {
        let settings = FileSettings::parse(file).map_err(|e| e.0)?;
        let cmd = settings.apply(Cli::command()).map_err(|e| e.0)?;
        let matches = cmd
            .try_get_matches_from(args.iter().copied())
            .map_err(|e| e.to_string())?;
        Cli::from_arg_matches(&matches).map_err(|e| e.to_string())
    }

    #[test]
    fn file_values_fill_in_and_flags_win() {
        let file = "concurrency = 3\nstore = \"file:///tmp/x\"\ndry-run = true\n[aws]\nregion = \"eu-1\"\n";
        let cli = parse_with(file, &["callvault", "run", "--concurrency", "5"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.concurrency, 5);
        assert_eq!(run.store.as_deref(), Some("file:///tmp/x"));
        assert!(run.dry_run);
        let settings = FileSettings::parse(file).unwrap();
        assert_eq!(settings.aws, [("aws_region".to_owned(), "eu-1".to_owned())]);
    }

    #[test]
    fn a_global_setting_reaches_every_subcommand() {
        let cli = parse_with("ledger = \"sqlite://f.db\"", &["callvault", "status"]).unwrap();
        assert_eq!(cli.ledger, "sqlite://f.db");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = parse_with("concurency = 3", &["callvault", "status"]).unwrap_err();
        assert!(err.contains("unknown setting `concurency`"), "{err}");
        let err = parse_with("[aws]\nbogus = 1", &["callvault", "status"]).unwrap_err();
        assert!(err.contains("aws.bogus"), "{err}");
        let err = parse_with("concurrency = \"many\"", &["callvault", "run"]).unwrap_err();
        assert!(err.contains("many"), "{err}");
        assert!(parse_with("config = \"x\"", &["callvault", "status"]).is_err());
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
