//! PostgreSQL: what the media check noted about archived recordings (the duration in the
//! file's header, and a note when it disagrees with the billed seconds).

use async_trait::async_trait;
use sqlx::Row;

use super::PgLedger;
use super::error::Ctx;
use crate::domain::CallUuid;
use crate::ledger::{LedgerError, Media, MediaNote};

#[async_trait]
impl Media for PgLedger {
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
