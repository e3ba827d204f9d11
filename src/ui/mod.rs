//! `callvault serve --ui`: the web page for the people who ask for recordings (compliance
//! officers, quality managers): search calls as `callvault find` does, open a call's page,
//! play its recording streamed from the store, download it checked against the ledger's
//! SHA-256, and a dashboard of the archive's state. Server-rendered HTML (maud), no script
//! or asset from anywhere else. Every route requires a user (see [`auth`]), and every page
//! view, play and download is appended to the ledger's access log under that user's name
//! before the answer is sent.

mod audio;
pub mod auth;
mod chart;
mod pages;
pub mod users;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use chrono::FixedOffset;

use crate::clock::Clock;
use crate::domain::CallUuid;
use crate::ledger::{AccessAction, AccessEntry, Ledger, LedgerError};
use crate::store::Store;
pub use auth::{LoginGuard, ProxyAuth, User};
pub use users::{UserName, UsersError, UsersFile};

/// How the page authenticates and shows what it shows.
#[derive(Debug, Clone)]
pub struct UiConfig {
    pub users: UsersFile,
    /// Trust this proxy's user header from its networks (besides the users file).
    pub proxy: Option<ProxyAuth>,
    /// Mark cookies `Secure` (false only when serving on loopback over plain HTTP).
    pub secure_cookies: bool,
    /// How long a session lasts after login.
    pub session_ttl: Duration,
    /// Wrong passwords are counted over this window ...
    pub failure_window: Duration,
    /// ... and, five reached, lock the name and the address for this long.
    pub lock_for: Duration,
    /// The provider deletes recordings this long after the call (the dashboard's risk).
    pub retention: chrono::Duration,
    /// Calls this close to deletion and not archived are "at risk".
    pub risk_margin: chrono::Duration,
    /// Times are shown in this zone (the provider's).
    pub tz: FixedOffset,
}

impl UiConfig {
    /// The defaults for `users`: 8-hour sessions, five wrong passwords in 15 minutes lock for
    /// 15 minutes, 90-day retention with 14 days' margin.
    pub fn new(users: UsersFile, tz: FixedOffset) -> Self {
        Self {
            users,
            proxy: None,
            secure_cookies: true,
            session_ttl: Duration::from_secs(8 * 3600),
            failure_window: Duration::from_secs(15 * 60),
            lock_for: Duration::from_secs(15 * 60),
            retention: chrono::Duration::days(90),
            risk_margin: chrono::Duration::days(14),
            tz,
        }
    }
}

/// The page's state: the ledger, the store, its settings, the login guard, and the clock
/// sessions, login locks and the dashboard's dates are read from.
#[derive(Clone)]
pub struct Ui {
    pub(crate) ledger: Ledger,
    pub(crate) store: Store,
    pub(crate) config: Arc<UiConfig>,
    pub(crate) guard: Arc<LoginGuard>,
    pub(crate) clock: Clock,
}

impl Ui {
    pub fn new(ledger: Ledger, store: Store, config: UiConfig, clock: Clock) -> Self {
        let guard = LoginGuard::new(config.failure_window, config.lock_for, clock.clone());
        Self {
            ledger,
            store,
            config: Arc::new(config),
            guard: Arc::new(guard),
            clock,
        }
    }

    /// The page's routes, all below `/ui`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/ui", get(pages::root))
            .route("/ui/", get(pages::search))
            .route("/ui/login", get(pages::login_form).post(pages::login))
            .route("/ui/logout", post(pages::logout))
            .route("/ui/dashboard", get(pages::dashboard))
            .route("/ui/calls/{uuid}", get(pages::call))
            .route("/ui/calls/{uuid}/audio", get(audio::play))
            .route("/ui/calls/{uuid}/download", get(audio::download))
            .layer(axum::middleware::map_response(pages::protect))
            .with_state(self)
    }

    /// Appends one access to the ledger's log; the caller answers only once this returned.
    pub(crate) async fn log(
        &self,
        actor: &str,
        from: IpAddr,
        action: AccessAction,
        query: Option<String>,
        calls: Vec<CallUuid>,
    ) -> Result<(), LedgerError> {
        let entry = AccessEntry {
            at: self.clock.now(),
            actor: actor.to_owned(),
            action,
            source: format!("web@{from}"),
            reason: None,
            query,
            calls,
        };
        self.ledger.log_access(&entry).await.map(|_| ())
    }
}

/// A call named in a page's address: a uuid the ledger could hold, and nothing that looks
/// like a path (`..`, slashes, backslashes, percent signs, however encoded).
pub(crate) fn uuid_from_path(raw: &str) -> Option<CallUuid> {
    let path_like = raw.contains("..")
        || raw
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '%' | '?' | '#') || c.is_whitespace());
    if path_like {
        return None;
    }
    CallUuid::parse(raw)
}
