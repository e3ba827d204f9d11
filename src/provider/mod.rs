//! The telephony provider: its API client (token cache with single-flight re-login, the
//! bill list, a shared pace, wire types, error classes) and the recording downloader.

mod client;
mod download;
mod error;
mod pace;
mod policy;
#[cfg(test)]
mod policy_tests;
mod token;
mod wire;

use std::fmt;

use chrono::{DateTime, Utc};

pub use client::{ProviderClient, ProviderConfig};
pub use download::{
    Download, DownloadError, Downloader, DownloaderSettings, looks_like_error_page,
};
pub(crate) use error::describe_transport;
pub use error::{Action, ProviderError};
pub use pace::{MAX_BACKOFF_SPACING, MIN_BACKOFF_SPACING, Pace};
pub use policy::{DownloadPolicy, MAX_REDIRECTS, Refusal, special_kind};
pub use wire::{BILLS_PER_PAGE_MAX, BillPage, BillQuery};

/// A download link. Its query is a signature: it is shown without it, everywhere.
#[derive(Clone)]
pub struct DownloadUrl(pub(crate) url::Url);

impl DownloadUrl {
    pub fn host(&self) -> Option<&str> {
        self.0.host_str()
    }
}

impl fmt::Display for DownloadUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = &self.0;
        write!(
            f,
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.path()
        )?;
        if u.query().is_some() {
            f.write_str("?[redacted]")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DownloadUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DownloadUrl({self})")
    }
}

/// A fresh link to one recording, requested for one attempt and never reused.
#[derive(Debug, Clone)]
pub struct RecordingLink {
    pub url: DownloadUrl,
    pub expires_at: Option<DateTime<Utc>>,
}
