//! The provider's single POST endpoint (login, logout, recording links, the bill list),
//! answered in the provider's JSON envelope with the provider's error codes, faults applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header;
use axum::response::Json;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::accounts::AccountIndex;
use super::download::sign;
use super::envelope::{failure, provider_time, status_error, success};
use super::faults::Periodic;
use super::{Shared, SimState};

const LOGIN: &str = "App.Sip_Auth.Login";
const LOGOUT: &str = "App.Sip_Auth.Logout";
const GET_RECODE_FILE: &str = "App.Sip_Cdr.GetRecodeFile";
const GET_BILL: &str = "App.Sip_Cdr.GetBill";
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
const ILLEGAL: &str = "Illegal request: invalid parameter";
const TOKEN_INVALID: &str = "The token is invalid, please log in again to verify";

/// `POST /`: every answer is HTTP 200; the outcome is in `ret` and `data.status`.
pub(super) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Json<Value> {
    let reqtime = Utc::now();
    shared.lock().api_arrivals.push(Instant::now());
    let fields = read_fields(request).await;
    let delay = shared.lock().faults.knobs().api_delay;
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let Some(fields) = fields else {
        return Json(failure(400, ILLEGAL));
    };
    let service = fields.get("service").map_or("", |s| s.trim());
    let mut state = shared.lock();
    let account = live_account(&state, &fields);
    let mut periodic = Periodic::default();
    if service == GET_RECODE_FILE {
        state.stats.url_requests += 1;
        // Only requests made with a live token count: a token serves N - 1 requests, however
        // many stale requests arrive after it was invalidated.
        if account.is_some() {
            periodic = state.faults.next_recode();
            if periodic.invalidate_tokens {
                state.invalidate_all_tokens();
            }
        }
    }
    let answer = if service == LOGIN {
        login(&mut state, &fields, reqtime)
    } else if state.faults.take_server_error() {
        state.stats.server_errors += 1;
        failure(500, "Server Error")
    } else {
        // The account is looked up again: a periodic fault may just have ended its token.
        let account = live_account(&state, &fields);
        match (service, account) {
            (GET_RECODE_FILE | GET_BILL, None) => failure(600, TOKEN_INVALID),
            (GET_RECODE_FILE, Some(account)) => {
                let asked = Asked { account, periodic };
                recode_file(&shared, &mut state, &fields, asked, reqtime)
            }
            (GET_BILL, Some(account)) => {
                super::bills::get_bill(&mut state, account, &fields, reqtime)
            }
            (LOGOUT, _) => logout(&mut state, &fields, reqtime),
            _ => failure(400, "Illegal request: unknown service"),
        }
    };
    drop(state);
    tracing::debug!(service, ret = %answer["ret"], "simulator api");
    Json(answer)
}

/// The form fields of a multipart or urlencoded body; `None` if it is neither or is malformed.
async fn read_fields(request: Request) -> Option<HashMap<String, String>> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    if !content_type.starts_with("multipart/form-data") {
        let Form(fields) = Form::<HashMap<String, String>>::from_request(request, &())
            .await
            .ok()?;
        return Some(fields);
    }
    let mut multipart = Multipart::from_request(request, &()).await.ok()?;
    let mut fields = HashMap::new();
    while let Some(field) = multipart.next_field().await.ok()? {
        let name = field.name().map(str::to_owned);
        let value = field.text().await.ok()?;
        if let Some(name) = name {
            fields.insert(name, value);
        }
    }
    Some(fields)
}

/// Logs in the account whose `appid` is given: an unknown `appid` is not authorized (601),
/// a wrong `accesskey` fails (1003); the token then serves that account only.
fn login(state: &mut SimState, fields: &HashMap<String, String>, reqtime: DateTime<Utc>) -> Value {
    state.stats.logins += 1;
    let (Some(appid), Some(accesskey)) = (fields.get("appid"), fields.get("accesskey")) else {
        state.stats.failed_logins += 1;
        return failure(400, ILLEGAL);
    };
    let account = state.accounts.iter().position(|a| a.config.appid == *appid);
    let Some(account) = account.filter(|_| !state.faults.knobs().refuse_logins) else {
        state.stats.failed_logins += 1;
        return failure(601, "appid is not authorized");
    };
    if *accesskey != state.accounts[account].config.accesskey {
        state.stats.failed_logins += 1;
        return status_error(
            "Authorization failed",
            "1003",
            "Authorization failed",
            reqtime,
        );
    }
    let token = hex::encode(rand::random::<[u8; 16]>());
    let now = Instant::now();
    state.tokens.retain(|_, (_, expiry)| *expiry > now);
    state
        .tokens
        .insert(token.clone(), (account, now + TOKEN_LIFETIME));
    let result = json!({
        "companycode": state.accounts[account].config.company_code,
        "companyname": "sim",
        "token": token,
        "authtime": provider_time(reqtime),
        "authmodel": "",
    });
    success("Authorization successful", Some(result), reqtime)
}

fn logout(state: &mut SimState, fields: &HashMap<String, String>, reqtime: DateTime<Utc>) -> Value {
    state.stats.logouts += 1;
    if let Some(token) = fields.get("token") {
        state.tokens.remove(token.trim());
    }
    success("logout successful", None, reqtime)
}

/// A link request of a live token's account.
struct Asked {
    account: AccountIndex,
    /// Already counted (and its token invalidation applied) by the caller, so that
    /// requests answered with a server error still count towards every-N faults.
    periodic: Periodic,
}

/// `App.Sip_Cdr.GetRecodeFile` for the token's account: another account's recording is, to
/// it, a file that does not exist, as the provider looks only among the company's own.
fn recode_file(
    shared: &Shared,
    state: &mut SimState,
    fields: &HashMap<String, String>,
    asked: Asked,
    reqtime: DateTime<Utc>,
) -> Value {
    let Some(filename) = fields
        .get("filename")
        .map(|f| f.trim())
        .filter(|f| legal_filename(f))
    else {
        return failure(400, ILLEGAL);
    };
    if asked.periodic.extension_exception {
        state.invalidate_all_tokens();
        return status_error(
            "Extension exception",
            "1010",
            "Extension exception",
            reqtime,
        );
    }
    if state.faults.take_code_1001() {
        return status_error(
            "Server connection failed",
            "1001",
            "Server connection failed",
            reqtime,
        );
    }
    if !state.accounts[asked.account]
        .recordings
        .contains_key(filename)
    {
        return status_error("file does not exist", "1002", "Abnormal operation", reqtime);
    }
    let ttl = i64::try_from(shared.config.link_ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let expires = reqtime.timestamp().saturating_add(ttl);
    let base = state
        .faults
        .knobs()
        .link_base
        .clone()
        .unwrap_or_else(|| shared.base_url.clone());
    let downurl = link(&base, shared, asked.account, filename, expires);
    let expired_at = DateTime::from_timestamp(expires, 0).unwrap_or(reqtime);
    let result = json!({
        "downurl": downurl,
        "expiredtime": format!("Expiration time:{}", provider_time(expired_at)),
    });
    success("get success", Some(result), reqtime)
}

/// The signed download link of `account`'s `filename`; the default account's links name no
/// account.
fn link(
    base: &str,
    shared: &Shared,
    account: AccountIndex,
    filename: &str,
    expires: i64,
) -> String {
    let which = match account {
        0 => String::new(),
        n => format!("account={n}&"),
    };
    format!(
        "{}/recordings/{}?{which}expires={expires}&sig={}",
        base.trim_end_matches('/'),
        percent_encode(filename),
        sign(&shared.secret, account, filename, expires)
    )
}

/// The account whose live token the request carries.
fn live_account(state: &SimState, fields: &HashMap<String, String>) -> Option<AccountIndex> {
    let (account, expiry) = fields
        .get("token")
        .and_then(|t| state.tokens.get(t.trim()))?;
    (*expiry > Instant::now()).then_some(*account)
}

fn legal_filename(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['/', '\\'])
        && !name.contains("..")
        && !name.chars().any(char::is_control)
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for one path segment.
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
