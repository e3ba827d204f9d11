//! Fetching a recording from a download link: status and header checks up front, then the
//! body as a stream (never buffered whole), with a stall timeout between chunks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};

use super::RecordingLink;
use super::error::describe_transport;
use super::policy::{DownloadPolicy, PolicyResolver, Refusal, refusal_in};

/// Why a download could not be used. Each says whether a later attempt (with a fresh
/// link) may succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DownloadError {
    /// 404 / 410 on a fresh link: the provider no longer has the file.
    #[error("the recording is gone (HTTP {status})")]
    Gone { status: u16 },
    /// 401 / 403: the link expired or was refused; a fresh link may work.
    #[error("the download link was refused (HTTP {status})")]
    LinkRefused { status: u16 },
    #[error("the download server failed (HTTP {status})")]
    Server { status: u16 },
    #[error("unexpected HTTP {status} for a download")]
    Unexpected { status: u16 },
    /// An HTML or JSON page where a recording should be.
    #[error("the download is not a recording ({0})")]
    NotARecording(String),
    #[error("the download ended early: {received} of {expected} bytes")]
    Truncated { received: u64, expected: u64 },
    #[error("the download stalled or timed out: {0}")]
    Timeout(String),
    /// The connection broke or could not be read (a resumable break).
    #[error("the download failed: {0}")]
    Network(String),
    /// The download host refused the connection or could not be connected to: if that
    /// happens on every try, the host is down (the run's breaker), not the recording bad.
    #[error("the download host cannot be reached: {0}")]
    Connect(String),
    /// The body went on past the length the server announced.
    #[error("the download sent more bytes than the announced {announced}")]
    TooLong { announced: u64 },
    /// The run is shutting down; the record is given back, not blamed.
    #[error("cancelled by shutdown")]
    Cancelled,
    /// A resumed download's server did not answer with the asked byte range.
    #[error("the download server did not honour the byte range")]
    RangeIgnored,
    /// The link, a redirect or an address it resolves to is not allowed (see
    /// `DownloadPolicy`). Passing: the next attempt gets a fresh link, which may differ;
    /// the usual retry limits end it.
    #[error("the download link was refused: {0}")]
    Refused(String),
}

impl DownloadError {
    /// True when no later attempt can succeed.
    /// What the pass must do about it: only a 404/410 on a fresh link says the recording
    /// cannot be had; everything else may pass (a fresh link, the real file next time).
    pub fn action(&self) -> crate::failure::Action {
        match self {
            Self::Gone { .. } => crate::failure::Action::GiveUp,
            _ => crate::failure::Action::Retry,
        }
    }

    /// Whether the host could not be reached at all (for the run's breaker).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Connect(_))
    }

    pub fn code(&self) -> String {
        match self {
            Self::Gone { status }
            | Self::LinkRefused { status }
            | Self::Server { status }
            | Self::Unexpected { status } => {
                format!("download_http_{status}")
            }
            Self::NotARecording(_) => "download_not_a_recording".into(),
            Self::Truncated { .. } => "download_truncated".into(),
            Self::Timeout(_) => "download_timeout".into(),
            Self::Network(_) => "download_network".into(),
            Self::Connect(_) => "download_connect".into(),
            Self::TooLong { .. } => "download_too_long".into(),
            Self::Cancelled => "shutdown".into(),
            Self::RangeIgnored => "download_range_ignored".into(),
            Self::Refused(_) => "url_refused".into(),
        }
    }

    fn from_transport(err: reqwest::Error) -> Self {
        if let Some(Refusal(why)) = refusal_in(&err) {
            Self::Refused(why)
        } else if err.is_timeout() {
            Self::Timeout(describe_transport(err))
        } else if err.is_connect() {
            Self::Connect(describe_transport(err))
        } else {
            Self::Network(describe_transport(err))
        }
    }
}

/// An open download: checked headers and the body still to be read.
pub struct Download {
    pub content_length: Option<u64>,
    pub content_type: Option<String>,
    pub body: BoxStream<'static, Result<Bytes, DownloadError>>,
}

/// How the downloader connects.
#[derive(Debug, Clone)]
pub struct DownloaderSettings {
    pub connect_timeout: Duration,
    /// A download that sends nothing for this long fails.
    pub stall_timeout: Duration,
    /// Which links, redirects and addresses may be fetched.
    pub policy: DownloadPolicy,
    /// Downloads go through this proxy; without it, proxy environment variables are ignored.
    pub proxy: Option<url::Url>,
}

/// The HTTP client for recordings: no total timeout (recordings can be large), a stall
/// timeout between reads, every link, redirect (at most 3) and resolved address checked
/// against the policy, no proxy from the environment.
#[derive(Clone)]
pub struct Downloader {
    http: reqwest::Client,
    policy: Arc<DownloadPolicy>,
}

impl Downloader {
    pub fn new(settings: DownloaderSettings) -> Result<Self, DownloadError> {
        let mut policy = settings.policy;
        if let Some(proxy) = &settings.proxy {
            policy = policy.with_proxy(proxy);
        }
        let policy = Arc::new(policy);
        let hops = Arc::clone(&policy);
        let builder = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.stall_timeout)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| match hops
                .check_redirect(attempt.url(), attempt.previous().len())
            {
                Ok(()) => attempt.follow(),
                Err(refusal) => attempt.error(refusal),
            }))
            .dns_resolver(PolicyResolver(Arc::clone(&policy)))
            .no_proxy()
            .user_agent(concat!("callvault/", env!("CARGO_PKG_VERSION")));
        let builder = match settings.proxy {
            Some(proxy) => builder
                .proxy(reqwest::Proxy::all(proxy.as_str()).map_err(DownloadError::from_transport)?),
            None => builder,
        };
        let http = builder.build().map_err(DownloadError::from_transport)?;
        Ok(Self { http, policy })
    }

    /// Requests the recording and checks the answer's status and headers.
    pub async fn open(&self, link: &RecordingLink) -> Result<Download, DownloadError> {
        self.fetch(link, 0).await
    }

    /// Requests the recording from byte `offset` on (`Range: bytes=offset-`), to resume a
    /// broken download. The answer must be a 206 whose range starts at `offset`; a server
    /// that sends the whole file instead gives `RangeIgnored`.
    pub async fn open_from(
        &self,
        link: &RecordingLink,
        offset: u64,
    ) -> Result<Download, DownloadError> {
        self.fetch(link, offset).await
    }

    async fn fetch(&self, link: &RecordingLink, offset: u64) -> Result<Download, DownloadError> {
        self.policy
            .check_url(&link.url.0)
            .map_err(|Refusal(why)| DownloadError::Refused(why))?;
        let mut request = self.http.get(link.url.0.clone());
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        let response = request
            .send()
            .await
            .map_err(DownloadError::from_transport)?;
        let status = response.status();
        match status {
            StatusCode::OK if offset > 0 => return Err(DownloadError::RangeIgnored),
            StatusCode::OK => {}
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                let start = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(range_start);
                if start != Some(offset) {
                    return Err(DownloadError::RangeIgnored);
                }
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                return Err(DownloadError::Gone {
                    status: status.as_u16(),
                });
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(DownloadError::LinkRefused {
                    status: status.as_u16(),
                });
            }
            s if s.is_server_error() => return Err(DownloadError::Server { status: s.as_u16() }),
            s => return Err(DownloadError::Unexpected { status: s.as_u16() }),
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(CONTENT_TYPE);
        let content_length = header(CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
        if let Some(ct) = &content_type {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if matches!(
                essence.as_str(),
                "text/html"
                    | "application/json"
                    | "text/xml"
                    | "application/xml"
                    | "application/xhtml+xml"
            ) {
                return Err(DownloadError::NotARecording(format!(
                    "content type {essence}"
                )));
            }
        }
        let body = response
            .bytes_stream()
            .map(|r| r.map_err(DownloadError::from_transport))
            .boxed();
        Ok(Download {
            content_length,
            content_type,
            body,
        })
    }
}

/// Says whether the first bytes of a body look like an error page rather than audio: an
/// HTML/XML document, or JSON text. Binary audio that happens to start with `{` is not
/// text, so it is not mistaken for JSON.
pub fn looks_like_error_page(first: &[u8]) -> bool {
    let start = first
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&[][..], |i| &first[i..]);
    let lower: Vec<u8> = start.iter().take(15).map(u8::to_ascii_lowercase).collect();
    let markup = [
        &b"<!doctype"[..],
        b"<html",
        b"<?xml",
        b"<head",
        b"<body",
        b"<error",
    ]
    .iter()
    .any(|p| lower.starts_with(p));
    let json =
        matches!(start.first(), Some(b'{' | b'[')) && is_text(&start[..start.len().min(256)]);
    markup || json
}

/// Valid UTF-8 (a character cut off at the end allowed) without control characters.
fn is_text(bytes: &[u8]) -> bool {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or("")
        }
        Err(_) => return false,
    };
    text.chars().all(|c| !c.is_control() || c.is_whitespace())
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` answer.
fn range_start(value: &str) -> Option<u64> {
    value
        .trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::looks_like_error_page;

    #[test]
    fn error_pages_are_told_from_audio() {
        assert!(looks_like_error_page(b"  <!DOCTYPE html><html>"));
        assert!(looks_like_error_page(b"<HTML><body>502"));
        assert!(looks_like_error_page(b"{\"ret\":500}"));
        assert!(looks_like_error_page(b"<?xml version=\"1.0\"?><Error>"));
        assert!(!looks_like_error_page(b"RIFF\x24\x00\x00\x00WAVEfmt "));
        assert!(!looks_like_error_page(b"ID3\x03\x00"));
        assert!(!looks_like_error_page(&[0xff, 0xfb, 0x90, 0x00]));
        // Binary audio that starts with `{` or `[` by chance.
        assert!(!looks_like_error_page(&[b'{', 0x00, 0x9c, 0xff, 0x12]));
        assert!(!looks_like_error_page(&[b'[', 0xc3, 0x28, 0x41]));
        // JSON with non-ASCII text (the provider writes Chinese descriptions), cut mid-character.
        let json = "{\"ret\":500,\"msg\":\"服务器错误\"}".as_bytes();
        assert!(looks_like_error_page(&json[..json.len() - 4]));
    }
}
