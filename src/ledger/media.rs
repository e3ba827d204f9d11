//! What the media check noted about archived recordings: the duration the file's header
//! gives, and a note when it disagrees with the call's billed seconds (archived, but flagged
//! for a person to look at).

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use super::LedgerError;
use crate::domain::{CallUuid, RunId};

/// The media columns of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaNote {
    pub duration_ms: Option<i64>,
    pub note: Option<String>,
}

#[async_trait]
pub trait Media: Send + Sync {
    /// Records the media check's findings on a record `owner` holds, just before it is
    /// settled as archived (a later archival of the record overwrites them).
    async fn note_media(
        &self,
        uuid: &CallUuid,
        owner: &RunId,
        duration: Option<Duration>,
        note: Option<&str>,
    ) -> Result<(), LedgerError>;

    async fn media_of(&self, uuid: &CallUuid) -> Result<Option<MediaNote>, LedgerError>;
}
