//! S3 Object Lock legal holds, and deleting an object for good: setting or clearing the
//! legal hold on one object (PutObjectLegalHold), listing every version of an object
//! (ListObjectVersions) with the lock each holds, and deleting each version
//! (DeleteObject?versionId). These are what `hold`, `release` and `erase` ask of the bucket;
//! object_store 0.14 has none of them, so each is a request of our own, signed like the
//! others (`s3meta.rs`). A store without these calls (a local directory; s3s-fs, which does
//! not implement Object Lock or versions) answers `Unsupported` / `None`, and the caller
//! decides what that means.

use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;

use super::lock::ObjectRetention;
use super::s3meta::{Answer, failed, xml_value};
use super::{Store, StoreError};

/// What setting or clearing a legal hold did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegalHoldOutcome {
    Done,
    /// The store has no Object Lock API, or the bucket has no Object Lock: nothing set.
    Unsupported,
}

/// One version of an object, as ListObjectVersions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub version_id: String,
    /// A delete marker (no data, no lock).
    pub delete_marker: bool,
}

/// The lock one object version holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VersionLock {
    pub retention: Option<ObjectRetention>,
    pub legal_hold: bool,
}

impl VersionLock {
    /// Why the version cannot be deleted at `now`, if it cannot.
    pub fn blocks(&self, now: DateTime<Utc>) -> Option<String> {
        if self.legal_hold {
            return Some("the bucket holds it under an S3 legal hold".into());
        }
        match self.retention {
            Some(r) if r.until > now => Some(format!(
                "locked ({}) until {}",
                r.mode,
                r.until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            _ => None,
        }
    }
}

/// Whether an answer says the store (or the bucket) has no such feature.
fn unsupported(answer: &Answer) -> bool {
    answer.status.as_u16() == 501
        || matches!(
            answer.error_code(),
            Some("NotImplemented" | "InvalidRequest" | "ObjectLockConfigurationNotFoundError")
        )
}

/// `&`, `<`, `>`, `"` and `'` as XML writes them, back to text.
fn xml_text(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Store {
    /// Sets (`on`) or clears the S3 legal hold of the object at `key`.
    pub async fn set_legal_hold(
        &self,
        key: &str,
        on: bool,
    ) -> Result<LegalHoldOutcome, StoreError> {
        const CONTEXT: &str = "setting the object's legal hold";
        let Some(s3) = &self.s3 else {
            return Ok(LegalHoldOutcome::Unsupported);
        };
        let path = self.path(key)?;
        let body = format!(
            "<LegalHold xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>{}</Status></LegalHold>",
            if on { "ON" } else { "OFF" }
        );
        let answer = s3
            .signed(
                http::Method::PUT,
                Some(&path),
                "legal-hold",
                &[],
                Some(body),
                CONTEXT,
            )
            .await?;
        if answer.status.is_success() {
            Ok(LegalHoldOutcome::Done)
        } else if unsupported(&answer) {
            Ok(LegalHoldOutcome::Unsupported)
        } else {
            Err(answer.into_error(CONTEXT))
        }
    }

    /// Every version of the object at `key` (none: the object is gone), newest first; `None`
    /// when the store cannot list versions (then the object is one plain object).
    pub async fn versions(&self, key: &str) -> Result<Option<Vec<ObjectVersion>>, StoreError> {
        const CONTEXT: &str = "listing the object's versions";
        let Some(s3) = &self.s3 else {
            return Ok(None);
        };
        let full = self.path(key)?.to_string();
        let mut found = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut query = format!("prefix={}&versions=", encode(&full));
            if let Some((k, v)) = &marker {
                query = format!(
                    "key-marker={}&prefix={}&version-id-marker={}&versions=",
                    encode(k),
                    encode(&full),
                    encode(v)
                );
            }
            let answer = s3
                .signed(http::Method::GET, None, &query, &[], None, CONTEXT)
                .await?;
            if !answer.status.is_success() {
                if unsupported(&answer) {
                    return Ok(None);
                }
                return Err(answer.into_error(CONTEXT));
            }
            for (tag, delete_marker) in [("Version", false), ("DeleteMarker", true)] {
                let open = format!("<{tag}>");
                let close = format!("</{tag}>");
                for chunk in answer.body.split(open.as_str()).skip(1) {
                    let Some((item, _)) = chunk.split_once(close.as_str()) else {
                        continue;
                    };
                    // The prefix also matches longer keys (the recording's prefix matches
                    // its sidecar): only this key's versions.
                    if xml_value(item, "Key").map(xml_text).as_deref() != Some(full.as_str()) {
                        continue;
                    }
                    let Some(version_id) = xml_value(item, "VersionId") else {
                        return Err(failed(CONTEXT, "a version without VersionId".into()));
                    };
                    found.push(ObjectVersion {
                        version_id: xml_text(version_id),
                        delete_marker,
                    });
                }
            }
            if xml_value(&answer.body, "IsTruncated") != Some("true") {
                break;
            }
            match (
                xml_value(&answer.body, "NextKeyMarker"),
                xml_value(&answer.body, "NextVersionIdMarker"),
            ) {
                (Some(k), Some(v)) => marker = Some((xml_text(k), xml_text(v))),
                _ => {
                    return Err(failed(
                        CONTEXT,
                        "a truncated listing without markers".into(),
                    ));
                }
            }
        }
        Ok(Some(found))
    }

    /// The lock of one version of the object at `key` (the current one with `None`), as
    /// HeadObject reports it. A store without Object Lock reports none.
    pub async fn version_lock(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<VersionLock>, StoreError> {
        const CONTEXT: &str = "reading the object's lock";
        let Some(s3) = &self.s3 else {
            return Ok(Some(VersionLock::default()));
        };
        let path = self.path(key)?;
        let query = version.map_or_else(String::new, |v| format!("versionId={}", encode(v)));
        let answer = s3
            .signed(http::Method::HEAD, Some(&path), &query, &[], None, CONTEXT)
            .await?;
        if answer.status.as_u16() == 404 {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(answer.into_error(CONTEXT));
        }
        let retention = match (&answer.lock_mode, &answer.lock_until) {
            (Some(mode), Some(until)) => Some(ObjectRetention {
                mode: mode.parse().map_err(|e: String| failed(CONTEXT, e))?,
                until: DateTime::parse_from_rfc3339(until)
                    .map_err(|e| failed(CONTEXT, format!("retain-until date: {e}")))?
                    .with_timezone(&Utc),
            }),
            _ => None,
        };
        Ok(Some(VersionLock {
            retention,
            legal_hold: answer.legal_hold.as_deref() == Some("ON"),
        }))
    }

    /// Deletes one version of the object at `key` for good (or, with `None`, the object on
    /// a store without versions). A lock still running is a `Refused` error.
    pub async fn delete_version(&self, key: &str, version: Option<&str>) -> Result<(), StoreError> {
        const CONTEXT: &str = "deleting an object version";
        let path = self.path(key)?;
        let (Some(s3), Some(version)) = (&self.s3, version) else {
            return match self.inner.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(StoreError::classify(CONTEXT, e)),
            };
        };
        let query = format!("versionId={}", encode(version));
        let answer = s3
            .signed(
                http::Method::DELETE,
                Some(&path),
                &query,
                &[],
                None,
                CONTEXT,
            )
            .await?;
        if answer.status.is_success() || answer.status.as_u16() == 404 {
            Ok(())
        } else {
            Err(answer.into_error(CONTEXT))
        }
    }
}
