//! What the media check noted about archived recordings: the duration the file's header
//! gives, and a note when it disagrees with the call's billed seconds (archived, but flagged
//! for a person to look at).

use std::time::Duration;

use serde::Serialize;
use sqlx::Row;

use super::{Ledger, LedgerError, QueryContext};

/// The media columns of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaNote {
    pub duration_ms: Option<i64>,
    pub note: Option<String>,
}

impl Ledger {
    /// Records the media check's findings on a record `owner` holds, just before it is
    /// settled as archived (a later archival of the record overwrites them).
    pub async fn note_media(
        &self,
        uuid: &str,
        owner: &str,
        duration: Option<Duration>,
        note: Option<&str>,
    ) -> Result<(), LedgerError> {
        let ms = duration.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        sqlx::query(
            "UPDATE calls SET media_duration_ms = $1, media_note = $2
             WHERE uuid = $3 AND lease_owner = $4 AND state = 'in_progress'",
        )
        .bind(ms)
        .bind(note)
        .bind(uuid)
        .bind(owner)
        .execute(&self.pool)
        .await
        .ctx("noting a recording's media check")?;
        Ok(())
    }

    pub async fn media_of(&self, uuid: &str) -> Result<Option<MediaNote>, LedgerError> {
        let row = sqlx::query("SELECT media_duration_ms, media_note FROM calls WHERE uuid = $1")
            .bind(uuid)
            .fetch_optional(&self.pool)
            .await
            .ctx("reading a recording's media check")?;
        Ok(row.map(|row| MediaNote {
            duration_ms: row.get("media_duration_ms"),
            note: row.get("media_note"),
        }))
    }

    /// Archived recordings whose duration disagrees with the billed seconds.
    pub(super) async fn media_flagged(&self) -> Result<i64, LedgerError> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM calls WHERE state = 'archived' AND media_note IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .ctx("counting flagged recordings")
    }
}
