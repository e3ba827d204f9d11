//! The callback receiver: takes the provider's call-record callbacks into the ledger, and
//! answers 200 only once the record is durable there. The provider can only be given an
//! address, so it is authenticated by a secret in the path (or query) and, optionally, by
//! the network it posts from.
//!
//! Each account has an address of its own, `/callback/<account>/<secret>` (or
//! `/callback/<account>?secret=`), opened by that account's secret only and written into
//! that account's rows: the address names the account, the secret only proves the sender,
//! so a callback can never land in another account than the one its address names. The
//! address from before accounts, `/callback/<secret>` (or `/callback?secret=`), is the
//! account `default`'s, so what the provider already holds keeps working. An unknown
//! account, an account without a secret and a wrong secret all answer the same 404.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::FixedOffset;
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::accounts::AccountName;
use crate::callback::{RecordError, parse_document};
pub use crate::cli::CallbackAnswer;
use crate::ledger::{ImportOutcome, Ledger};

/// How the receiver checks and bounds what it is sent, and how it answers.
#[derive(Debug)]
pub struct ReceiverConfig {
    /// The accounts that take callbacks, each on its own address (an account without a
    /// secret has none).
    pub accounts: Vec<CallbackAccount>,
    /// Empty: any source network.
    pub allow_from: Vec<IpNet>,
    pub max_body_bytes: usize,
    pub tz: FixedOffset,
    pub answer: CallbackAnswer,
}

/// One account's callback address: the account it names and the secret that opens it.
#[derive(Debug)]
pub struct CallbackAccount {
    pub account: AccountName,
    /// At least [`MIN_SECRET_LEN`] long.
    pub secret: SecretString,
}

impl CallbackAccount {
    /// The account `default`'s address, which is also `/callback/<secret>` as before
    /// accounts.
    pub fn default_account(secret: SecretString) -> Self {
        Self {
            account: AccountName::default_account(),
            secret,
        }
    }
}

/// A secret shorter than this is refused at start.
pub const MIN_SECRET_LEN: usize = 16;

pub type Counters = Family<Vec<(String, String)>, Counter>;

#[derive(Clone)]
pub struct Receiver {
    /// The ledger, scoped to an account's rows for each callback stored.
    pub ledger: Ledger,
    pub config: Arc<ReceiverConfig>,
    /// `callvault_callbacks_total{account=…,result=…}`.
    pub callbacks: Counters,
}

#[derive(Debug, serde::Deserialize)]
pub struct SecretQuery {
    secret: Option<String>,
}

/// The account a callback's address names.
#[derive(Debug, Clone, Copy)]
enum Named<'a> {
    /// The address from before accounts: the account `default`'s.
    Default,
    Account(&'a str),
}

/// `POST /callback/{account}/{secret}`.
pub async fn with_account_and_secret(
    State(rx): State<Receiver>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((account, secret)): Path<(String, String)>,
    request: Request,
) -> Response {
    rx.handle(peer, Named::Account(&account), Some(&secret), request)
        .await
}

/// `POST /callback/{segment}`: with `?secret=`, the segment is the account
/// (`/callback/<account>?secret=…`); without, it is the account `default`'s secret
/// (`/callback/<secret>`, the address from before accounts).
pub async fn with_one_segment(
    State(rx): State<Receiver>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(segment): Path<String>,
    query: Result<Query<SecretQuery>, QueryRejection>,
    request: Request,
) -> Response {
    // A query that is not `secret=…` leaves the old address as it always was.
    let query = query.ok().and_then(|Query(q)| q.secret);
    let (named, secret) = match query.as_deref() {
        Some(secret) => (Named::Account(&segment), secret),
        None => (Named::Default, segment.as_str()),
    };
    rx.handle(peer, named, Some(secret), request).await
}

/// `POST /callback?secret=…`: the account `default`'s.
pub async fn with_query_secret(
    State(rx): State<Receiver>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<SecretQuery>,
    request: Request,
) -> Response {
    rx.handle(peer, Named::Default, query.secret.as_deref(), request)
        .await
}

impl Receiver {
    async fn handle(
        &self,
        peer: SocketAddr,
        named: Named<'_>,
        secret: Option<&str>,
        request: Request,
    ) -> Response {
        let account = self.address(named);
        let (result, response) = self.answer(peer, account, secret, request).await;
        // Only a served account's name: an address made up by a stranger adds no series.
        let label = account.map_or("", |a| a.account.as_str());
        self.callbacks
            .get_or_create(&vec![
                ("account".into(), label.into()),
                ("result".into(), result.into()),
            ])
            .inc();
        match self.config.answer {
            CallbackAnswer::Json => response,
            CallbackAnswer::Text => as_text(result, response),
        }
    }

    /// The served account whose address this is, if any.
    fn address(&self, named: Named<'_>) -> Option<&CallbackAccount> {
        let name = match named {
            Named::Default => crate::accounts::DEFAULT,
            Named::Account(name) => name,
        };
        self.config
            .accounts
            .iter()
            .find(|a| a.account.as_str() == name)
    }

    async fn answer(
        &self,
        peer: SocketAddr,
        account: Option<&CallbackAccount>,
        secret: Option<&str>,
        request: Request,
    ) -> (&'static str, Response) {
        if !self.source_allowed(peer.ip()) {
            tracing::warn!(%peer, "callback from a network that is not allowed");
            return (
                "forbidden",
                refuse(StatusCode::FORBIDDEN, "source not allowed"),
            );
        }
        let opened = match (account, secret) {
            (Some(account), Some(given)) => {
                secret_matches(&account.secret, given).then_some(account)
            }
            _ => None,
        };
        let Some(account) = opened else {
            tracing::warn!(%peer, "callback to an unknown address, or with a wrong or missing secret");
            // 404, as for any unknown address: a wrong secret learns nothing.
            return ("unauthorized", refuse(StatusCode::NOT_FOUND, "not found"));
        };
        let limit = self.config.max_body_bytes;
        if declared_length(request.headers()).is_some_and(|n| n > limit) {
            return ("too_large", too_large(limit));
        }
        let body = match axum::body::to_bytes(request.into_body(), limit).await {
            Ok(body) => body,
            Err(_) => return ("too_large", too_large(limit)),
        };
        let Ok(text) = std::str::from_utf8(&body) else {
            return (
                "rejected",
                refuse(StatusCode::BAD_REQUEST, "body is not UTF-8 text"),
            );
        };
        self.store(&account.account, text).await
    }

    /// Validates every record in the body, then writes them all in one transaction, or
    /// none: a body with one bad record is refused whole.
    async fn store(&self, account: &AccountName, text: &str) -> (&'static str, Response) {
        let parsed = parse_document(text, self.config.tz);
        if parsed.is_empty() {
            return (
                "rejected",
                refuse(StatusCode::BAD_REQUEST, "no JSON object in the body"),
            );
        }
        let mut records = Vec::new();
        let mut ignored = 0;
        for item in parsed {
            match item.result {
                Ok(record) => records.push(record),
                Err(RecordError::CallStateCallback) => ignored += 1,
                Err(why) => {
                    return (
                        "rejected",
                        refuse(StatusCode::BAD_REQUEST, &why.to_string()),
                    );
                }
            }
        }
        if records.is_empty() {
            // Extension call-state callbacks: nothing to archive; acknowledged.
            return (
                "ignored",
                (
                    StatusCode::OK,
                    Json(json!({"ok": true, "ignored": ignored})),
                )
                    .into_response(),
            );
        }
        let ledger = self.ledger.scoped(account);
        match ledger.import(&records, chrono::Utc::now()).await {
            Ok(outcomes) => {
                let names: Vec<_> = outcomes.iter().map(|o| o.as_str()).collect();
                let result = if outcomes.iter().all(|o| *o == ImportOutcome::Known) {
                    "duplicate"
                } else {
                    "stored"
                };
                let body = json!({"ok": true, "outcomes": names, "ignored": ignored});
                (result, (StatusCode::OK, Json(body)).into_response())
            }
            Err(e) => {
                tracing::error!(error = %e, %account, "cannot store a callback");
                (
                    "ledger_error",
                    refuse(StatusCode::SERVICE_UNAVAILABLE, "ledger unavailable; retry"),
                )
            }
        }
    }

    fn source_allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.config.allow_from.is_empty() || self.config.allow_from.iter().any(|n| n.contains(&ip))
    }
}

/// Compares digests in constant time, so neither content nor length leaks by timing.
fn secret_matches(secret: &SecretString, given: &str) -> bool {
    let want = Sha256::digest(secret.expose_secret().as_bytes());
    let got = Sha256::digest(given.as_bytes());
    want.ct_eq(&got).into()
}

/// The plain-text answer (`--callback-answer text`): HTTP 200 with `1` when the callback is
/// in the ledger (stored now or before, or an ignored call-state callback), `0` when it is
/// not; a wrong secret or source keeps its 404/403, which tells a stranger nothing.
fn as_text(result: &str, json: Response) -> Response {
    let stored = match result {
        "stored" | "duplicate" | "ignored" => "1",
        "unauthorized" | "forbidden" => return json,
        _ => "0",
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        stored,
    )
        .into_response()
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn too_large(limit: usize) -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("body larger than {limit} bytes"),
    )
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    let mut response = Json(json!({"ok": false, "error": reason})).into_response();
    *response.status_mut() = status;
    response
}

/// Any other address: 404 with the same body as a wrong secret.
pub async fn not_found() -> Response {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"ok":false,"error":"not found"}"#))
        .unwrap_or_default()
}
