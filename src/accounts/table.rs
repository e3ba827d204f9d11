//! One `[accounts.<name>]` table as declared: the settings it overrides, typed, with its
//! secrets as references. A key it does not know, a secret written inline or a value of the
//! wrong kind is an error naming the account and the key: a typo must not make an account
//! silently take the top level's setting.
//!
//! ```toml
//! [accounts.acme]
//! appid = "acme-app"
//! accesskey-env = "ACME_ACCESSKEY"
//! store = "s3://acme-recordings/calls"
//! retention-mode = "compliance"
//! retain-for = "7y"
//! api-rate = 5
//! share = 2
//! callback-secret-file = "/run/secrets/acme/callback"
//!
//! [accounts.acme.aws]
//! region = "eu-west-1"
//! access-key-id-env = "ACME_AWS_KEY_ID"
//! secret-access-key-env = "ACME_AWS_SECRET"
//! sse-kms-key-id = "arn:aws:kms:eu-west-1:111122223333:key/acme"
//! ```

use std::path::PathBuf;

use super::{AccountError, AccountName, SecretRef};

/// What one account's table sets; `None` (or empty) where the top level's setting applies.
#[derive(Debug, Clone, Default)]
pub struct AccountTable {
    pub api_url: Option<String>,
    pub appid: Option<String>,
    pub accesskey: Option<SecretRef>,
    pub store: Option<String>,
    pub key_template: Option<String>,
    pub storage_class: Option<String>,
    pub retention_mode: Option<String>,
    pub retain_for: Option<String>,
    pub api_rate: Option<f64>,
    /// The account's share of the transfers when others have work too (a weight, 1 by
    /// default).
    pub share: Option<u32>,
    pub callback_secret: Option<SecretRef>,
    /// `[accounts.<name>.aws]`: object_store's S3 keys (`aws_region`, …).
    pub aws: Vec<(String, AwsSetting)>,
}

/// One S3 setting of an account: a value, or (for a secret) where to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsSetting {
    Value(String),
    Secret(SecretRef),
}

/// S3 settings that are secrets: an account names them by reference only.
const AWS_SECRETS: &[&str] = &["aws_secret_access_key", "aws_session_token", "aws_token"];

impl AccountTable {
    /// Reads `[accounts.<name>]`. `name` is checked to be a slug.
    pub fn from_toml(name: &str, table: toml::Table) -> Result<(AccountName, Self), AccountError> {
        let account = AccountName::parse(name)?;
        let fail = |key: &str, problem: &str| {
            AccountError(format!("account `{account}`: `{key}` {problem}"))
        };
        let mut out = Self::default();
        for (key, value) in table {
            let string = || match &value {
                toml::Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
                _ => Err(fail(&key, "must be a non-empty string")),
            };
            match key.as_str() {
                "api-url" => out.api_url = Some(string()?),
                "appid" => out.appid = Some(string()?),
                "accesskey-env" => out.accesskey = Some(SecretRef::Env(string()?)),
                "accesskey-file" => out.accesskey = Some(SecretRef::File(PathBuf::from(string()?))),
                "store" => out.store = Some(string()?),
                "key-template" => out.key_template = Some(string()?),
                "storage-class" => out.storage_class = Some(string()?),
                "retention-mode" => out.retention_mode = Some(string()?),
                "retain-for" => out.retain_for = Some(string()?),
                "api-rate" => {
                    let rate = match &value {
                        toml::Value::Integer(i) => *i as f64,
                        toml::Value::Float(f) => *f,
                        _ => f64::NAN,
                    };
                    if !(rate.is_finite() && rate > 0.0) {
                        return Err(fail(&key, "must be a positive number of requests a second"));
                    }
                    out.api_rate = Some(rate);
                }
                "share" => {
                    let share = match &value {
                        toml::Value::Integer(i) => u32::try_from(*i).ok().filter(|s| *s >= 1),
                        _ => None,
                    };
                    out.share =
                        Some(share.ok_or_else(|| fail(&key, "must be a whole number from 1"))?);
                }
                "callback-secret-env" => out.callback_secret = Some(SecretRef::Env(string()?)),
                "callback-secret-file" => {
                    out.callback_secret = Some(SecretRef::File(PathBuf::from(string()?)))
                }
                "accesskey" | "callback-secret" => {
                    return Err(fail(
                        &key,
                        &format!(
                            "may not be written in the file: name it with `{key}-env = \"VAR\"` \
                             or `{key}-file = \"/path\"`"
                        ),
                    ));
                }
                "aws" => {
                    let toml::Value::Table(aws) = value else {
                        return Err(fail(&key, "must be a table"));
                    };
                    out.aws = aws_table(&account, aws)?;
                }
                _ => return Err(fail(&key, "is not an account setting")),
            }
        }
        Ok((account, out))
    }
}

/// `[accounts.<name>.aws]`: the top-level `[aws]` table's keys, a secret as `KEY-env` or
/// `KEY-file`.
fn aws_table(
    account: &AccountName,
    table: toml::Table,
) -> Result<Vec<(String, AwsSetting)>, AccountError> {
    let fail = |key: &str, problem: &str| {
        AccountError(format!("account `{account}`: `aws.{key}` {problem}"))
    };
    let mut out = Vec::new();
    for (key, value) in table {
        let lower = key.to_ascii_lowercase().replace('-', "_");
        let (base, by) = if let Some(base) = lower.strip_suffix("_env") {
            (base, Some("env"))
        } else if let Some(base) = lower.strip_suffix("_file") {
            (base, Some("file"))
        } else {
            (lower.as_str(), None)
        };
        let name = crate::store::s3_setting_name(base)
            .ok_or_else(|| fail(&key, "is not an S3 setting"))?;
        let text = match &value {
            toml::Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
            toml::Value::Integer(i) if by.is_none() => i.to_string(),
            toml::Value::Boolean(b) if by.is_none() => b.to_string(),
            _ => return Err(fail(&key, "must be a non-empty string")),
        };
        let setting = match by {
            Some("env") => AwsSetting::Secret(SecretRef::Env(text)),
            Some(_) => AwsSetting::Secret(SecretRef::File(PathBuf::from(text))),
            None if AWS_SECRETS.contains(&name.as_str()) => {
                return Err(fail(
                    &key,
                    &format!("is a secret: name it with `{key}-env` or `{key}-file`"),
                ));
            }
            None => AwsSetting::Value(text),
        };
        out.push((name, setting));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(AccountName, AccountTable), AccountError> {
        let table: toml::Table = toml::from_str(text).unwrap();
        AccountTable::from_toml("acme", table)
    }

    #[test]
    fn a_table_reads_its_settings_and_names_its_secrets_by_reference() {
        let (name, t) = parse(
            r#"
            api-url = "http://127.0.0.1:9/api"
            appid = "acme-app"
            accesskey-env = "ACME_KEY"
            store = "s3://acme/calls"
            key-template = "{account}/{uuid}{ext}"
            storage-class = "STANDARD_IA"
            retention-mode = "governance"
            retain-for = "90d"
            api-rate = 2.5
            share = 3
            callback-secret-file = "/run/secrets/acme"
            [aws]
            region = "eu-1"
            secret-access-key-env = "ACME_AWS_SECRET"
            access_key_id_file = "/run/secrets/acme-id"
            "#,
        )
        .unwrap();
        assert_eq!(name.as_str(), "acme");
        assert_eq!(t.appid.as_deref(), Some("acme-app"));
        assert_eq!(t.accesskey, Some(SecretRef::Env("ACME_KEY".into())));
        assert_eq!(
            t.callback_secret,
            Some(SecretRef::File("/run/secrets/acme".into()))
        );
        assert_eq!(t.api_rate, Some(2.5));
        assert_eq!(t.share, Some(3));
        let mut aws = t.aws.clone();
        aws.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            aws,
            vec![
                (
                    "aws_access_key_id".to_owned(),
                    AwsSetting::Secret(SecretRef::File("/run/secrets/acme-id".into()))
                ),
                ("aws_region".to_owned(), AwsSetting::Value("eu-1".into())),
                (
                    "aws_secret_access_key".to_owned(),
                    AwsSetting::Secret(SecretRef::Env("ACME_AWS_SECRET".into()))
                ),
            ]
        );
    }

    #[test]
    fn inline_secrets_typos_and_bad_values_name_the_account_and_the_key() {
        for (text, says) in [
            ("accesskey = \"k\"", "`accesskey` may not be written"),
            ("callback-secret = \"s\"", "callback-secret-env"),
            (
                "[aws]\nsecret_access_key = \"s\"",
                "`aws.secret_access_key` is a secret",
            ),
            ("[aws]\nbogus = \"x\"", "`aws.bogus` is not an S3 setting"),
            ("appidd = \"x\"", "`appidd` is not an account setting"),
            ("share = 0", "`share` must be a whole number"),
            ("api-rate = -1", "`api-rate` must be a positive number"),
            ("store = 3", "`store` must be a non-empty string"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with("account `acme`"), "{text}: {err}");
            assert!(err.contains(says), "{text}: {err}");
        }
        let table: toml::Table = toml::from_str("appid = \"x\"").unwrap();
        let err = AccountTable::from_toml("Acme Corp", table)
            .unwrap_err()
            .to_string();
        assert!(err.contains("short slug"), "{err}");
    }
}
