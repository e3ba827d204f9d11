//! SQLite: what the media check noted about archived recordings.

use async_trait::async_trait;

use super::{QueryContext, SqliteLedger, col};
use crate::domain::CallUuid;
use crate::ledger::{LedgerError, Media, MediaNote};

#[async_trait]
impl Media for SqliteLedger {
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
