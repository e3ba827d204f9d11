//! What the media check noted about archived recordings: the duration the file's header
//! gives, and a note when it disagrees with the call's billed seconds (archived, but flagged
//! for a person to look at). They are written with the archived settlement, in its commit.

use async_trait::async_trait;
use serde::Serialize;

use super::LedgerError;
use super::sql::{Db, Row, Stmt};
use crate::domain::CallUuid;

/// The media columns of one call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MediaNote {
    pub duration_ms: Option<i64>,
    pub note: Option<String>,
}

#[async_trait]
pub trait Media: Send + Sync {
    async fn media_of(&self, uuid: &CallUuid) -> Result<Option<MediaNote>, LedgerError>;
}

#[async_trait]
impl<D: Db> Media for D {
    async fn media_of(&self, uuid: &CallUuid) -> Result<Option<MediaNote>, LedgerError> {
        let row = self
            .fetch_optional(
                Stmt::new(
                    "SELECT media_duration_ms, media_note FROM calls
                     WHERE account = $2 AND uuid = $1",
                    "reading a recording's media check",
                )
                .bind(uuid)
                .bind(self.account()),
            )
            .await?;
        row.map(|row| {
            Ok(MediaNote {
                duration_ms: row.opt_int("media_duration_ms")?,
                note: row.opt_text("media_note")?,
            })
        })
        .transpose()
    }
}
