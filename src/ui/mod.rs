//! `callvault serve --ui`: the web page for the people who ask for recordings (compliance
//! officers, quality managers): search calls as `callvault find` does, open a call's page,
//! play its recording streamed from the store, download it checked against the ledger's
//! SHA-256, and a dashboard of the archive's state. Server-rendered HTML (maud), no script
//! or asset from anywhere else. Every route requires a user (see [`auth`]), and every page
//! view, play and download is appended to the ledger's access log under that user's name
//! before the answer is sent.
//!
//! One page serves the accounts of the deployment: each user sees the calls of the accounts
//! the users file gives it (see [`users`]) and nothing of the others'. A call is named by its
//! account and uuid (`/ui/calls/<account>/<uuid>`); another account's call answers exactly
//! as an unknown call does (404), and the attempt is logged as `refused` in that account's
//! access log (see `scope.rs`). Every list (search, the dashboard) is the union of the user's
//! accounts, each row naming its account.

mod audio;
pub mod auth;
mod chart;
mod dashboard;
mod pages;
mod scope;
pub mod users;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use chrono::FixedOffset;

use crate::accounts::AccountName;
use crate::clock::Clock;
use crate::domain::CallUuid;
use crate::ledger::{AccessAction, AccessEntry, Ledger, LedgerError};
use crate::store::Store;
pub use auth::{LoginGuard, ProxyAuth, User};
pub use users::{UserAccounts, UserName, UsersError, UsersFile};

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

/// One account the page serves: its rows of the ledger and its store.
#[derive(Clone)]
pub struct UiAccount {
    /// The ledger scoped to this account.
    pub ledger: Ledger,
    pub store: Store,
}

/// The page's state: the accounts it serves (each its scoped ledger and its store), its
/// settings, the login guard, and the clock sessions, login locks and the dashboard's dates
/// are read from.
#[derive(Clone)]
pub struct Ui {
    /// For the sessions and the reads across accounts (which accounts hold a uuid): they
    /// belong to no account, so any scoped handle serves.
    pub(crate) sessions: Ledger,
    pub(crate) accounts: Arc<BTreeMap<AccountName, UiAccount>>,
    pub(crate) config: Arc<UiConfig>,
    pub(crate) guard: Arc<LoginGuard>,
    pub(crate) clock: Clock,
}

impl Ui {
    /// The page over one account: the one `ledger` is scoped to, whose recordings are in
    /// `store`.
    pub fn new(ledger: Ledger, store: Store, config: UiConfig, clock: Clock) -> Self {
        let name = ledger.account().clone();
        let account = UiAccount {
            ledger: ledger.clone(),
            store,
        };
        Self::with_accounts(ledger, BTreeMap::from([(name, account)]), config, clock)
    }

    /// The page over several accounts; `sessions` is any handle on the same ledger.
    pub fn with_accounts(
        sessions: Ledger,
        accounts: BTreeMap<AccountName, UiAccount>,
        config: UiConfig,
        clock: Clock,
    ) -> Self {
        let guard = LoginGuard::new(config.failure_window, config.lock_for, clock.clone());
        Self {
            sessions,
            accounts: Arc::new(accounts),
            config: Arc::new(config),
            guard: Arc::new(guard),
            clock,
        }
    }

    /// The page's routes, all below `/ui`. A call's page is `/ui/calls/<account>/<uuid>`;
    /// the links from before accounts, `/ui/calls/<uuid>` (and its `/audio`, `/download`),
    /// still lead to the call when the uuid is in exactly one of the user's accounts. (The
    /// old links' `/audio` and `/download` win over a call whose uuid is `audio` or
    /// `download`: such a call is reached by its old link, `/ui/calls/audio`.)
    pub fn router(self) -> Router {
        Router::new()
            .route("/ui", get(pages::root))
            .route("/ui/", get(pages::search))
            .route("/ui/login", get(pages::login_form).post(pages::login))
            .route("/ui/logout", post(pages::logout))
            .route("/ui/dashboard", get(dashboard::dashboard))
            .route("/ui/calls/{first}", get(pages::old_call))
            .route("/ui/calls/{first}/audio", get(audio::old_play))
            .route("/ui/calls/{first}/download", get(audio::old_download))
            .route("/ui/calls/{first}/{uuid}", get(pages::call))
            .route("/ui/calls/{first}/{uuid}/audio", get(audio::play))
            .route("/ui/calls/{first}/{uuid}/download", get(audio::download))
            .layer(axum::middleware::map_response(pages::protect))
            .with_state(self)
    }

    /// Appends one access to `account`'s log; the caller answers only once this returned.
    pub(crate) async fn log(
        &self,
        account: &AccountName,
        actor: &str,
        from: IpAddr,
        action: AccessAction,
        query: Option<String>,
        calls: Vec<CallUuid>,
    ) -> Result<(), LedgerError> {
        let Some(served) = self.accounts.get(account) else {
            return Ok(());
        };
        let entry = AccessEntry {
            at: self.clock.now(),
            actor: actor.to_owned(),
            action,
            source: format!("web@{from}"),
            reason: None,
            query,
            calls,
        };
        served.ledger.log_access(&entry).await.map(|_| ())
    }

    /// Appends one access, touching no call, to the log of each of `accounts` (those of a
    /// user: a login, a logout).
    pub(crate) async fn log_each(
        &self,
        accounts: &[AccountName],
        actor: &str,
        from: IpAddr,
        action: AccessAction,
        query: Option<String>,
    ) -> Result<(), LedgerError> {
        for account in accounts {
            self.log(account, actor, from, action, query.clone(), vec![])
                .await?;
        }
        Ok(())
    }

    /// The accounts served here that `allowed` lets a user see, in name order.
    pub(crate) fn visible(&self, allowed: &UserAccounts) -> Vec<AccountName> {
        self.accounts
            .keys()
            .filter(|name| allowed.includes(name))
            .cloned()
            .collect()
    }

    /// Every account served here.
    pub(crate) fn served(&self) -> Vec<AccountName> {
        self.accounts.keys().cloned().collect()
    }

    /// The accounts served here that the users file gives `name` (`None`: the file does not
    /// list it). The file is read each time, so a user taken out of it is refused from the
    /// next request on.
    pub(crate) async fn user_accounts(
        &self,
        name: &str,
    ) -> Result<Option<Vec<AccountName>>, UsersFileUnreadable> {
        let users = self.config.users.clone();
        let name = name.to_owned();
        match tokio::task::spawn_blocking(move || users.accounts_of(&name)).await {
            Ok(Ok(found)) => Ok(found.map(|allowed| self.visible(&allowed))),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the users file");
                Err(UsersFileUnreadable)
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the users file failed");
                Err(UsersFileUnreadable)
            }
        }
    }
}

/// The users file could not be read (logged where it was found).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UsersFileUnreadable;

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
