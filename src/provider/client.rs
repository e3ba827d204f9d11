//! The provider's API: login, logout, fresh recording-download links and the bill list,
//! with the token cache doing re-login on `ret` 600 / code 1010, and every request paced by
//! the process's shared [`Pace`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use reqwest::multipart::Form;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::error::{Action, ProviderError};
use super::pace::Pace;
use super::token::{Token, TokenCache};
use super::wire::{BillPage, BillQuery, Envelope, parse_bill_page, parse_envelope, text};
use super::{DownloadUrl, RecordingLink};
use crate::timefmt::parse_provider_time;

/// How to reach and authenticate with the provider.
#[derive(Clone)]
pub struct ProviderConfig {
    pub api_url: Url,
    pub appid: String,
    pub accesskey: SecretString,
    /// Whole-request limit for API calls.
    pub api_timeout: Duration,
    pub connect_timeout: Duration,
    /// Refresh the token once it is this old (the provider's tokens live 12 h).
    pub token_max_age: Duration,
    /// The provider's zone for its zone-less times.
    pub tz: FixedOffset,
    /// The pace every request waits for; clones of the configuration share it, so every
    /// client of a process keeps one rate (`--api-rate`).
    pub pace: Arc<Pace>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("api_url", &self.api_url.as_str())
            .field("appid", &self.appid)
            .field("accesskey", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// How many rejected tokens one request takes before it gives up (a passing failure). Under
/// heavy invalidation churn a token can die before a request reaches the provider, and that
/// is no fault of the record: only a provider that rejects token after token should end
/// the attempt. So only tokens the provider never accepted count here, and
/// [`MAX_REJECTIONS_PER_REQUEST`] bounds the rest.
const MAX_RELOGINS_PER_REQUEST: usize = 10;

/// Rejections of any token (churn included) one request takes before it gives up.
const MAX_REJECTIONS_PER_REQUEST: usize = 100;

pub struct ProviderClient {
    http: reqwest::Client,
    config: ProviderConfig,
    tokens: TokenCache,
    logins: AtomicU64,
    requests: AtomicU64,
    /// The company the last login named (bills do not carry it).
    company: Mutex<Option<String>>,
}

impl ProviderClient {
    pub fn new(config: ProviderConfig) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.api_timeout)
            .user_agent(concat!("callvault/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::from_transport(e, "building the HTTP client"))?;
        Ok(Self {
            http,
            tokens: TokenCache::new(config.token_max_age),
            config,
            logins: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            company: Mutex::new(None),
        })
    }

    /// Requests this client made to the API (logins included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The company code the provider gave at the last login, if it gave one.
    pub fn company_code(&self) -> Option<String> {
        self.company
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Logins this client performed (successful or not).
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// Makes sure a valid token is at hand (logging in if needed); a refused login says so
    /// before any record is claimed.
    pub async fn ensure_login(&self) -> Result<(), ProviderError> {
        self.tokens.get(|| self.login()).await.map(|_| ())
    }

    /// `App.Sip_Auth.Login`: a new token.
    pub async fn login(&self) -> Result<SecretString, ProviderError> {
        self.logins.fetch_add(1, Ordering::Relaxed);
        let form = Form::new()
            .text("service", "App.Sip_Auth.Login")
            .text("appid", self.config.appid.clone())
            .text(
                "accesskey",
                self.config.accesskey.expose_secret().to_owned(),
            );
        let envelope = self.post(form, "logging in").await?.check(true)?;
        let token = text(&envelope.result["token"]);
        if token.is_empty() {
            return Err(ProviderError::Transient {
                code: "provider_unreadable".into(),
                detail: "the login answer has no token".into(),
            });
        }
        let company = text(&envelope.result["companycode"]);
        tracing::info!(company = %company, "logged in to the provider");
        if !company.is_empty() {
            *self.company.lock().unwrap_or_else(|e| e.into_inner()) = Some(company);
        }
        Ok(SecretString::from(token))
    }

    /// `App.Sip_Auth.Logout` for the current token, if there is one.
    pub async fn logout(&self) -> Result<(), ProviderError> {
        let token = self.tokens.get(|| self.login()).await?;
        let form = Form::new()
            .text("service", "App.Sip_Auth.Logout")
            .text("token", token.secret.expose_secret().to_owned());
        self.post(form, "logging out").await?.check(false)?;
        self.tokens.clear().await;
        Ok(())
    }

    /// `App.Sip_Cdr.GetRecodeFile`: a fresh download link for `filename`. Logs in again
    /// when the token is rejected (one login per rejection, however many callers).
    pub async fn recording_link(&self, filename: &str) -> Result<RecordingLink, ProviderError> {
        self.with_token(|token| async move { self.request_link(&token, filename).await })
            .await
    }

    /// `App.Sip_Cdr.GetBill`, always with `syncflag=3` (every bill: the provider's "not yet
    /// fetched" cursor would hide bills from other readers and lose a page on a crash), all
    /// directions and call methods: one page of the bills of calls in the query's window.
    pub async fn bills(&self, query: &BillQuery) -> Result<BillPage, ProviderError> {
        self.with_token(|token| async move { self.request_bills(&token, query).await })
            .await
    }

    /// Runs `request` with the current token, logging in again when the provider rejects
    /// it; gives up as a passing failure after too many rejections.
    async fn with_token<'a, T, F, Fut>(&'a self, request: F) -> Result<T, ProviderError>
    where
        F: Fn(Token) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>> + 'a,
    {
        let mut token = self.tokens.get(|| self.login()).await?;
        let (mut never_accepted, mut rejections) = (0, 0);
        loop {
            let err = match request(token.clone()).await {
                Ok(answer) => {
                    self.tokens.accepted(token.generation);
                    return Ok(answer);
                }
                Err(err) if err.action() == Action::Relogin => err,
                Err(other) => return Err(other),
            };
            rejections += 1;
            if !self.tokens.was_accepted(token.generation) {
                never_accepted += 1;
            }
            if never_accepted > MAX_RELOGINS_PER_REQUEST || rejections > MAX_REJECTIONS_PER_REQUEST
            {
                return Err(ProviderError::Transient {
                    code: "provider_token_rejected".into(),
                    detail: format!("still rejected after {rejections} tokens: {err}"),
                });
            }
            tracing::debug!(
                generation = token.generation,
                "token rejected; logging in again"
            );
            token = self
                .tokens
                .replace(token.generation, || self.login())
                .await?;
        }
    }

    async fn request_bills(
        &self,
        token: &Token,
        query: &BillQuery,
    ) -> Result<BillPage, ProviderError> {
        let time = |t: DateTime<Utc>| {
            t.with_timezone(&self.config.tz)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        };
        let form = Form::new()
            .text("service", "App.Sip_Cdr.GetBill")
            .text("token", token.secret.expose_secret().to_owned())
            .text("starttime", time(query.start))
            .text("endtime", time(query.end))
            .text("syncflag", "3")
            .text("direction", "3")
            .text("callmethod", "0")
            .text("currentpage", query.page.to_string())
            .text("itemsperpage", query.per_page.to_string());
        let envelope = self
            .post(form, "reading the bill list")
            .await?
            .check(false)?;
        parse_bill_page(&envelope.result, query)
    }

    async fn request_link(
        &self,
        token: &Token,
        filename: &str,
    ) -> Result<RecordingLink, ProviderError> {
        let form = Form::new()
            .text("service", "App.Sip_Cdr.GetRecodeFile")
            .text("token", token.secret.expose_secret().to_owned())
            .text("filename", filename.to_owned());
        let envelope = self
            .post(form, "requesting a download link")
            .await?
            .check(false)?;
        let raw_url = text(&envelope.result["downurl"]);
        let url = Url::parse(&raw_url)
            .or_else(|_| self.config.api_url.join(&raw_url))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !raw_url.is_empty())
            .ok_or_else(|| ProviderError::Unexpected {
                code: "provider_bad_link".into(),
                detail: "the answer has no usable download link".into(),
            })?;
        Ok(RecordingLink {
            url: DownloadUrl(url),
            expires_at: parse_expiry(&text(&envelope.result["expiredtime"]), self.config.tz),
        })
    }

    /// One API request, paced; a server error slows the pace, a proper answer relaxes it.
    async fn post(&self, form: Form, doing: &str) -> Result<Envelope, ProviderError> {
        self.config.pace.wait().await;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let answer = self.post_now(form, doing).await;
        let overloaded = match &answer {
            Ok(envelope) => (500..=599).contains(&envelope.ret),
            Err(ProviderError::Transient { code, .. }) => {
                code.starts_with("provider_http_5") || code == "provider_http_429"
            }
            Err(_) => false,
        };
        if overloaded {
            self.config.pace.server_error();
        } else if answer.is_ok() {
            self.config.pace.success();
        }
        answer
    }

    async fn post_now(&self, form: Form, doing: &str) -> Result<Envelope, ProviderError> {
        let response = self
            .http
            .post(self.config.api_url.clone())
            .multipart(form)
            .send()
            .await
            .map_err(|e| ProviderError::from_transport(e, doing))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| ProviderError::from_transport(e, doing))?;
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(ProviderError::Transient {
                code: format!("provider_http_{}", status.as_u16()),
                detail: format!("{doing}: HTTP {status}"),
            });
        }
        if !status.is_success() {
            return Err(ProviderError::Unexpected {
                code: format!("provider_http_{}", status.as_u16()),
                detail: format!("{doing}: HTTP {status}"),
            });
        }
        parse_envelope(&body)
    }
}

/// Reads `"Expiration time:2020-02-11 17:27:23"` (or a bare time) in the provider's zone.
fn parse_expiry(raw: &str, tz: FixedOffset) -> Option<DateTime<Utc>> {
    let start = raw.find(|c: char| c.is_ascii_digit())?;
    parse_provider_time(&raw[start..], tz).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_text_is_read_in_the_provider_zone() {
        let tz = crate::timefmt::default_provider_tz();
        let t = parse_expiry("Expiration time:2020-02-11 17:27:23", tz).unwrap();
        assert_eq!(crate::timefmt::to_ledger(t), "2020-02-11T09:27:23.000Z");
        assert_eq!(parse_expiry("soon", tz), None);
    }

    /// A provider that rejects every token at once (never accepting one) makes a request
    /// give up after `MAX_RELOGINS_PER_REQUEST` logins, as a passing failure.
    #[tokio::test]
    async fn a_provider_that_never_accepts_a_token_ends_the_request() {
        let sim = crate::simulator::Simulator::start(
            ([127, 0, 0, 1], 0).into(),
            crate::simulator::SimulatorConfig::default(),
        )
        .await
        .unwrap();
        sim.add_recording("a.wav", 100);
        sim.set_faults(|f| f.invalidate_tokens_every = Some(1));
        let client = ProviderClient::new(ProviderConfig {
            api_url: sim.api_url().parse().unwrap(),
            appid: sim.config().appid.clone(),
            accesskey: SecretString::from(sim.config().accesskey.clone()),
            api_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            token_max_age: Duration::from_secs(3600),
            tz: crate::timefmt::default_provider_tz(),
            pace: Arc::default(),
        })
        .unwrap();

        let err = client.recording_link("a.wav").await.unwrap_err();

        assert_eq!(err.code(), "provider_token_rejected");
        assert_eq!(err.action(), Action::Retry);
        let stats = sim.stats();
        let tries = MAX_RELOGINS_PER_REQUEST as u64 + 1;
        assert_eq!((stats.url_requests, stats.logins), (tries, tries));
    }
}
