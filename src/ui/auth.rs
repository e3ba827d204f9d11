//! Who is asking, on every route of the web page: a session cookie checked against the
//! ledger's sessions (so a logout ends it on every replica, and a copied cookie is dead
//! after logout), or the user header of an authenticating proxy, believed only from the
//! proxy's own networks; either way the users file must list the user, with the accounts
//! whose calls it sees. Also the login's guards: a CSRF token on every form that changes
//! anything, and a lock on a name or an address after repeated wrong passwords.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{COOKIE, HeaderName};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::users::UserName;
use super::{Ui, UsersFileUnreadable};
use crate::accounts::AccountName;
use crate::clock::Clock;
use crate::ledger::AccessAction;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "callvault_session";
/// The login form's CSRF cookie (double submit: the form must carry the same value).
pub const LOGIN_CSRF_COOKIE: &str = "callvault_login_csrf";
/// Where the page's cookies apply.
pub const COOKIE_PATH: &str = "/ui";

/// An authenticating proxy in front of the page (oauth2-proxy and the like).
#[derive(Debug, Clone)]
pub struct ProxyAuth {
    /// The header carrying the user's name (`X-Forwarded-User`, `X-Auth-Request-User`).
    pub header: HeaderName,
    /// Only requests from these networks may name their user by that header.
    pub networks: Vec<IpNet>,
}

impl ProxyAuth {
    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// How a user proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A session; the SHA-256 of its token (to end it), and the CSRF token its forms carry.
    Session {
        token_sha256: String,
        csrf: String,
    },
    Proxy,
}

/// The authenticated user of a request, where the request came from, and the accounts
/// served here whose calls it may see (read from the users file at every request).
#[derive(Debug, Clone)]
pub struct User {
    pub name: UserName,
    pub via: Via,
    pub from: IpAddr,
    pub accounts: Vec<AccountName>,
}

/// A random token for a cookie: 32 bytes, hex.
pub fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A session's CSRF token: derived from its token, which only the browser holding the
/// (HttpOnly) cookie knows, so it needs no storage and another site cannot guess it.
pub fn csrf_of(session_token: &str) -> String {
    sha256_hex(&format!("callvault-csrf:{session_token}"))
}

/// Whether two tokens are equal, in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value with the page's attributes: `HttpOnly`, `SameSite=Strict`, the
/// page's path, and `Secure` unless served on loopback.
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path={COOKIE_PATH}; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    c
}

/// A `Set-Cookie` value that removes cookie `name`.
pub fn clear_cookie(name: &str, secure: bool) -> String {
    set_cookie(name, "", Some(Duration::ZERO), secure)
}

/// The peer's address (the socket's; a proxy's forwarding headers are not believed here).
pub fn peer(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip().to_canonical())
}

/// The browser's address as a trusted proxy reports it (the first of `X-Forwarded-For`), for
/// the access log; asked only of requests from the proxy's networks.
fn forwarded_for(parts: &Parts) -> Option<IpAddr> {
    let value = parts.headers.get("x-forwarded-for")?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    first.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// Why a request gets no user; `pages` renders the answer.
pub enum Refused {
    /// The request has no valid user: the login page (401) for a page, a plain 401
    /// otherwise.
    Unauthenticated { page: bool, secure: bool },
    /// The user proved who they are but the users file does not list them (a proxy's user
    /// never added, a user removed since the session began): they see nothing.
    NotListed { page: bool },
    /// The ledger does not answer, so no session can be checked.
    LedgerDown,
    /// The users file cannot be read, so no user's accounts are known.
    UsersFileDown,
}

impl FromRequestParts<Ui> for User {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, ui: &Ui) -> Result<Self, Self::Rejection> {
        let is_page =
            !parts.uri.path().ends_with("/audio") && !parts.uri.path().ends_with("/download");
        let (name, via, from) = who(parts, ui, is_page).await?;
        match ui.user_accounts(name.as_str()).await {
            Ok(Some(accounts)) => Ok(User {
                accounts,
                name,
                via,
                from,
            }),
            Ok(None) => {
                not_listed(ui, &name, from, parts.uri.path()).await;
                Err(Refused::NotListed { page: is_page })
            }
            Err(UsersFileUnreadable) => Err(Refused::UsersFileDown),
        }
    }
}

/// Logs a request of a user the users file does not list, in every account's access log
/// (it concerns none in particular, and each account's officers should see it).
async fn not_listed(ui: &Ui, name: &UserName, from: IpAddr, path: &str) {
    tracing::warn!(user = %name, %from, "a user not in the users file was refused");
    let query = format!("{path} (not in the users file)");
    if let Err(e) = ui
        .log_each(
            &ui.served(),
            name.as_str(),
            from,
            AccessAction::Refused,
            Some(query),
        )
        .await
    {
        tracing::error!(error = %e, "cannot write the access log");
    }
}

/// Who the request's user is and how they proved it: the proxy's header from its networks,
/// else a live session.
async fn who(parts: &Parts, ui: &Ui, page: bool) -> Result<(UserName, Via, IpAddr), Refused> {
    let from = peer(parts);
    let refuse = || Refused::Unauthenticated {
        page,
        secure: ui.config.secure_cookies,
    };
    if let Some(proxy) = &ui.config.proxy
        && proxy.trusts(from)
        && let Some(value) = parts.headers.get(&proxy.header)
    {
        let name = value
            .to_str()
            .ok()
            .and_then(|v| UserName::parse(v.trim()).ok());
        return match name {
            Some(name) => Ok((name, Via::Proxy, forwarded_for(parts).unwrap_or(from))),
            None => {
                tracing::warn!(%from, "the proxy's user header holds no valid user name");
                Err(refuse())
            }
        };
    }
    let Some(token) = cookie(parts, SESSION_COOKIE) else {
        return Err(refuse());
    };
    let token_sha256 = sha256_hex(token);
    match ui.sessions.session(&token_sha256, ui.clock.now()).await {
        Ok(Some(session)) => match UserName::parse(&session.username) {
            Ok(name) => Ok((
                name,
                Via::Session {
                    token_sha256,
                    csrf: csrf_of(token),
                },
                from,
            )),
            Err(_) => Err(refuse()),
        },
        Ok(None) => Err(refuse()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read sessions from the ledger");
            Err(Refused::LedgerDown)
        }
    }
}

/// Wrong passwords allowed before a name or an address is locked.
pub const MAX_FAILURES: u32 = 5;

/// Counts wrong passwords per user name and per address; after [`MAX_FAILURES`] within the
/// window, that name or address is refused until the lock runs out, right password or not.
/// Kept in memory: each replica locks on its own count. Windows and locks are read on the
/// page's clock.
#[derive(Debug)]
pub struct LoginGuard {
    window: chrono::Duration,
    lock_for: chrono::Duration,
    clock: Clock,
    failures: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: DateTime<Utc>,
    locked_until: Option<DateTime<Utc>>,
}

impl LoginGuard {
    pub fn new(window: Duration, lock_for: Duration, clock: Clock) -> Self {
        let long = |d| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365));
        Self {
            window: long(window),
            lock_for: long(lock_for),
            clock,
            failures: Mutex::default(),
        }
    }

    fn keys(name: &str, from: IpAddr) -> [String; 2] {
        [format!("user:{name}"), format!("addr:{from}")]
    }

    /// How long until this name and address may try again; `None` when they may now.
    pub fn locked(&self, name: &str, from: IpAddr) -> Option<Duration> {
        let now = self.clock.now();
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        Self::keys(name, from)
            .iter()
            .filter_map(|k| map.get(k)?.locked_until)
            .filter_map(|until| (until - now).to_std().ok())
            .filter(|left| !left.is_zero())
            .max()
    }

    pub fn failed(&self, name: &str, from: IpAddr) {
        let now = self.clock.now();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Forget what is older than the window, so the map stays small.
        let window = self.window;
        map.retain(|_, f| now - f.first < window || f.locked_until.is_some_and(|u| u > now));
        for key in Self::keys(name, from) {
            let entry = map.entry(key).or_insert(Failures {
                count: 0,
                first: now,
                locked_until: None,
            });
            if now - entry.first >= self.window {
                *entry = Failures {
                    count: 0,
                    first: now,
                    locked_until: None,
                };
            }
            entry.count += 1;
            if entry.count >= MAX_FAILURES {
                entry.locked_until = Some(now + self.lock_for);
            }
        }
    }

    /// A successful login clears the name's count (not the address's: one address trying
    /// many names stays counted).
    pub fn succeeded(&self, name: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&format!("user:{name}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_the_name_and_the_address_until_the_lock_runs_out() {
        let clock = crate::clock::TestClock::new();
        let guard = LoginGuard::new(
            Duration::from_secs(60),
            Duration::from_secs(15 * 60),
            clock.clock(),
        );
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            guard.failed("alice", a);
        }
        assert!(guard.locked("alice", a).is_none());
        guard.failed("alice", a);
        assert!(guard.locked("alice", a).is_some());
        assert!(
            guard.locked("alice", b).is_some(),
            "the name is locked from anywhere"
        );
        assert!(
            guard.locked("bob", a).is_some(),
            "the address is locked for any name"
        );
        assert!(guard.locked("bob", b).is_none());
        clock.advance(Duration::from_secs(14 * 60));
        assert!(guard.locked("alice", a).is_some(), "not yet");
        clock.advance(Duration::from_secs(60));
        assert!(guard.locked("alice", a).is_none());
    }

    #[test]
    fn cookies_carry_the_page_attributes() {
        let c = set_cookie(SESSION_COOKIE, "abc", None, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie(SESSION_COOKIE, "abc", None, false).contains("Secure"));
    }
}
