//! PostgreSQL: what the media check noted about archived recordings (the duration in the
//! file's header, and a note when it disagrees with the billed seconds).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;

use super::PgLedger;
use super::error::Ctx;
use crate::domain::{CallUuid, RunId};
use crate::ledger::{LedgerError, Media, MediaNote};

#[async_trait]
impl Media for PgLedger {
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
             WHERE uuid = $3 AND (lease_owner, state) IS NOT DISTINCT FROM ($4, 'in_progress')",
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
        const CONTEXT: &str = "reading a recording's media check";
        let row = sqlx::query("SELECT media_duration_ms, media_note FROM calls WHERE uuid = $1")
            .bind(uuid.as_str())
            .fetch_optional(&self.pool)
            .await
            .ctx(CONTEXT)?;
        row.map(|row| {
            Ok(MediaNote {
                duration_ms: row.try_get("media_duration_ms").ctx(CONTEXT)?,
                note: row.try_get("media_note").ctx(CONTEXT)?,
            })
        })
        .transpose()
    }
}
