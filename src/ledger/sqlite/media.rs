//! SQLite: what the media check noted about archived recordings.

use std::time::Duration;

use async_trait::async_trait;

use super::{QueryContext, SqliteLedger, col};
use crate::domain::{CallUuid, RunId};
use crate::ledger::{LedgerError, Media, MediaNote};

#[async_trait]
impl Media for SqliteLedger {
    async fn note_media(
        &self,
        uuid: &CallUuid,
        owner: &RunId,
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
        .bind(uuid.as_str())
        .bind(owner.as_str())
        .execute(&self.pool)
        .await
        .ctx("noting a recording's media check")?;
        Ok(())
    }

    async fn media_of(&self, uuid: &CallUuid) -> Result<Option<MediaNote>, LedgerError> {
        let row = sqlx::query("SELECT media_duration_ms, media_note FROM calls WHERE uuid = $1")
            .bind(uuid.as_str())
            .fetch_optional(&self.pool)
            .await
            .ctx("reading a recording's media check")?;
        row.map(|row| {
            Ok(MediaNote {
                duration_ms: col(&row, "media_duration_ms")?,
                note: col(&row, "media_note")?,
            })
        })
        .transpose()
    }
}
