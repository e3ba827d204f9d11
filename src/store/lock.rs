//! S3 Object Lock: retention (governance or compliance, until a date) on each recording and
//! its sidecar, read back for `verify`, and the bucket's lock configuration for preflight.
//! object_store 0.14 has no per-object lock attribute, so these are requests of our own,
//! signed with object_store's SigV4 authorizer (`s3meta.rs`), each carrying the
//! `x-amz-checksum-sha256` S3 requires of Object Lock requests.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Months, SecondsFormat, Utc};

use super::s3meta::xml_value;
use super::{Store, StoreError};

/// The S3 Object Lock retention modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` may shorten or remove the lock.
    Governance,
    /// No one, not even the account's root user, may shorten it or delete the object.
    Compliance,
}

impl LockMode {
    fn s3_name(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Governance => "governance",
            Self::Compliance => "compliance",
        })
    }
}

impl FromStr for LockMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "governance" => Ok(Self::Governance),
            "compliance" => Ok(Self::Compliance),
            other => Err(format!(
                "retention mode {other:?}: use governance or compliance"
            )),
        }
    }
}

/// How long a recording is kept, counted from its call's start: calendar years, months or
/// days (`7y`, `18mo`, `90d`), so a call started on 3 March is kept until 3 March.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainFor {
    Years(u32),
    Months(u32),
    Days(u32),
}

impl FromStr for RetainFor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u32 = digits.parse().map_err(|_| {
            format!("retention {s:?}: write a whole number and a unit, e.g. 7y, 18mo or 90d")
        })?;
        if n == 0 {
            return Err(format!("retention {s:?}: must be longer than zero"));
        }
        match unit.to_ascii_lowercase().as_str() {
            "y" | "year" | "years" => Ok(Self::Years(n)),
            "mo" | "month" | "months" => Ok(Self::Months(n)),
            "d" | "day" | "days" => Ok(Self::Days(n)),
            other => Err(format!(
                "retention {s:?}: unknown unit {other:?} (use y, mo or d)"
            )),
        }
    }
}

impl fmt::Display for RetainFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Years(n) => write!(f, "{n}y"),
            Self::Months(n) => write!(f, "{n}mo"),
            Self::Days(n) => write!(f, "{n}d"),
        }
    }
}

impl RetainFor {
    /// The end of retention for a call that started at `start` (`None` past year 262143).
    pub fn until(self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Years(n) => start.checked_add_months(Months::new(n.checked_mul(12)?)),
            Self::Months(n) => start.checked_add_months(Months::new(n)),
            Self::Days(n) => start.checked_add_signed(chrono::Duration::days(i64::from(n))),
        }
    }
}

/// What the archive asks of the bucket's Object Lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub mode: LockMode,
    pub retain_for: RetainFor,
}

impl RetentionPolicy {
    /// Whether `found` satisfies the policy for a call that started at `start`; else why not.
    pub fn shortfall(
        &self,
        start: DateTime<Utc>,
        found: Option<&ObjectRetention>,
    ) -> Option<String> {
        let want = self.retain_for.until(start)?;
        match found {
            None => Some(format!(
                "no retention (the policy asks {} until {})",
                self.mode,
                want.to_rfc3339_opts(SecondsFormat::Secs, true)
            )),
            Some(r) if r.mode != self.mode => Some(format!(
                "retention mode {} (the policy asks {})",
                r.mode, self.mode
            )),
            // S3 keeps the date to the second at best; allow for the truncation.
            Some(r) if r.until + chrono::Duration::seconds(1) < want => Some(format!(
                "retained until {} (the policy asks until {})",
                r.until.to_rfc3339_opts(SecondsFormat::Secs, true),
                want.to_rfc3339_opts(SecondsFormat::Secs, true)
            )),
            Some(_) => None,
        }
    }
}

/// An object's retention as the bucket reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectRetention {
    pub mode: LockMode,
    pub until: DateTime<Utc>,
}

impl Store {
    /// The retention every recording and sidecar gets, when configured.
    pub fn retention(&self) -> Option<RetentionPolicy> {
        self.retention
    }

    pub fn with_retention(mut self, retention: Option<RetentionPolicy>) -> Self {
        self.retention = retention;
        self
    }

    fn s3_for(&self, what: &str) -> Result<&super::s3meta::S3Target, StoreError> {
        self.s3.as_ref().ok_or_else(|| {
            StoreError::Config(format!(
                "{what} needs an S3 store with Object Lock; {} is not one",
                self.description
            ))
        })
    }

    /// Whether the bucket has Object Lock enabled; `None` for stores that are not S3.
    pub async fn object_lock_enabled(&self) -> Result<Option<bool>, StoreError> {
        const CONTEXT: &str = "reading the bucket's Object Lock configuration";
        let Some(s3) = &self.s3 else {
            return Ok(None);
        };
        let answer = s3
            .signed(http::Method::GET, None, "object-lock", &[], None, CONTEXT)
            .await?;
        if answer.status.is_success() {
            return Ok(Some(
                xml_value(&answer.body, "ObjectLockEnabled") == Some("Enabled"),
            ));
        }
        match answer.error_code() {
            Some("ObjectLockConfigurationNotFoundError") => Ok(Some(false)),
            _ => Err(answer.into_error(CONTEXT)),
        }
    }

    /// Locks the object at `key` in the policy's mode until `until`. A date already past at
    /// `now` is no lock at all (S3 refuses it): nothing is sent, and `false` is returned.
    pub async fn lock_until(
        &self,
        key: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const CONTEXT: &str = "setting the object's retention";
        let Some(policy) = self.retention else {
            return Ok(false);
        };
        if until <= now {
            return Ok(false);
        }
        let s3 = self.s3_for("retention")?;
        let path = self.path(key)?;
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            policy.mode.s3_name(),
            until.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let answer = s3
            .signed(
                http::Method::PUT,
                Some(&path),
                "retention",
                &[],
                Some(body),
                CONTEXT,
            )
            .await?;
        if answer.status.is_success() {
            Ok(true)
        } else {
            Err(answer.into_lock_error(CONTEXT))
        }
    }

    /// The retention the bucket holds for the object at `key` (`None`: no lock), as HeadObject
    /// reports it (`x-amz-object-lock-mode`, `x-amz-object-lock-retain-until-date`).
    pub async fn object_retention(&self, key: &str) -> Result<Option<ObjectRetention>, StoreError> {
        const CONTEXT: &str = "reading the object's retention";
        let s3 = self.s3_for("reading retention")?;
        let path = self.path(key)?;
        let answer = s3
            .signed(http::Method::HEAD, Some(&path), "", &[], None, CONTEXT)
            .await?;
        if !answer.status.is_success() {
            return Err(answer.into_error(CONTEXT));
        }
        let (Some(mode), Some(until)) = (answer.lock_mode, answer.lock_until) else {
            return Ok(None);
        };
        let mode = mode
            .parse()
            .map_err(|e: String| super::s3meta::failed(CONTEXT, e))?;
        let until = DateTime::parse_from_rfc3339(&until)
            .map_err(|e| super::s3meta::failed(CONTEXT, format!("retain-until date: {e}")))?
            .with_timezone(&Utc);
        Ok(Some(ObjectRetention { mode, until }))
    }

    /// Preflight for Object Lock: retention configured on a bucket without Object Lock is a
    /// configuration error; Object Lock without retention configured is said once.
    pub(super) async fn preflight_lock(&self) -> Result<(), StoreError> {
        let Some(policy) = self.retention else {
            // Only a note to give: a store that cannot say (no Object Lock API) is no error.
            if let Ok(Some(true)) = self.object_lock_enabled().await {
                tracing::info!(
                    store = %self.description,
                    "the bucket has Object Lock enabled but no --retention-mode is set: \
                     the bucket's default retention (if any) applies"
                );
            }
            return Ok(());
        };
        match self.object_lock_enabled().await? {
            None => Err(StoreError::Config(format!(
                "--retention-mode {} needs an S3 bucket with Object Lock; {} is not S3",
                policy.mode, self.description
            ))),
            Some(false) => Err(StoreError::Config(format!(
                "--retention-mode {} is set but the bucket of {} does not have Object Lock \
                 enabled: create the bucket with Object Lock (it cannot be retrofitted on \
                 MinIO; on AWS enable it in the bucket's properties) or drop the retention settings",
                policy.mode, self.description
            ))),
            Some(true) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_counts_calendar_units_from_the_start() {
        let start = DateTime::parse_from_rfc3339("2024-02-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let y: RetainFor = "7y".parse().unwrap();
        assert_eq!(y, RetainFor::Years(7));
        assert_eq!(
            y.until(start).unwrap().to_rfc3339(),
            "2031-02-28T10:00:00+00:00"
        );
        assert_eq!(
            "90d"
                .parse::<RetainFor>()
                .unwrap()
                .until(start)
                .unwrap()
                .to_rfc3339(),
            "2024-05-29T10:00:00+00:00"
        );
        assert_eq!("18mo".parse::<RetainFor>().unwrap(), RetainFor::Months(18));
        assert!("7".parse::<RetainFor>().is_err());
        assert!("0d".parse::<RetainFor>().is_err());
        assert!("3w".parse::<RetainFor>().is_err());
    }

    #[test]
    fn a_shorter_or_other_lock_falls_short() {
        let start = Utc::now();
        let policy = RetentionPolicy {
            mode: LockMode::Compliance,
            retain_for: RetainFor::Days(10),
        };
        let want = policy.retain_for.until(start).unwrap();
        let ok = ObjectRetention {
            mode: LockMode::Compliance,
            until: want,
        };
        assert_eq!(policy.shortfall(start, Some(&ok)), None);
        assert!(policy.shortfall(start, None).is_some());
        let other = ObjectRetention {
            mode: LockMode::Governance,
            ..ok
        };
        assert!(policy.shortfall(start, Some(&other)).is_some());
        let short = ObjectRetention {
            until: want - chrono::Duration::days(1),
            ..ok
        };
        assert!(policy.shortfall(start, Some(&short)).is_some());
    }
}
