//! `callvault serve`: one long-running process for a VM or a pod. It receives the provider's
//! callbacks into the ledger, answers health, readiness and metrics probes, and, given
//! schedules, runs archival passes and syncs itself. SIGTERM stops all of it cleanly.
//!
//! One process serves every account it is given: each account's callbacks on its own
//! address, each account's passes and syncs on the schedules; the probes and metrics are
//! shared.

mod receiver;
mod schedule;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::accounts::AccountName;
use crate::archive::Shutdown;
use crate::ledger::Ledger;

pub use receiver::{CallbackAccount, CallbackAnswer, Counters, MIN_SECRET_LEN, ReceiverConfig};
pub use schedule::{
    ScheduledPasses, ScheduledSyncs, parse_schedule, run_scheduled, run_scheduled_syncs,
};

#[derive(Clone)]
struct ServeState {
    ledger: Ledger,
    /// The accounts served: `/metrics` gives each one's figures.
    accounts: Vec<crate::accounts::AccountName>,
    /// `callvault_callbacks_total{account=…,result=…}` (the receiver's, when it runs).
    callbacks: Counters,
    /// `callvault_scheduled_passes_total{account=…,exit_code=…}`.
    passes: Counters,
    /// `callvault_scheduled_syncs_total{account=…,exit_code=…}`.
    syncs: Counters,
    retention: chrono::Duration,
}

/// What `serve` runs.
pub struct ServeOptions {
    /// The ledger (the receiver scopes it to each callback's account; the probes read it).
    pub ledger: Ledger,
    /// The accounts this process serves.
    pub accounts: Vec<crate::accounts::AccountName>,
    /// The callback receiver; `None` serves the web page alone.
    pub receiver: Option<ReceiverConfig>,
    /// The web page (`serve --ui`), under `/ui`.
    pub ui: Option<crate::ui::Ui>,
    pub retention: chrono::Duration,
    pub passes: Option<ScheduledPasses>,
    pub syncs: Option<ScheduledSyncs>,
}

#[derive(Debug, thiserror::Error)]
#[error("the HTTP server failed: {0}")]
pub struct ServeError(#[from] std::io::Error);

/// Serves on `listener` until `shutdown` stops claiming, then lets a running pass finish
/// within its grace period and returns.
pub async fn serve(
    listener: TcpListener,
    options: ServeOptions,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    let state = ServeState {
        ledger: options.ledger.clone(),
        accounts: options.accounts.clone(),
        callbacks: Counters::default(),
        passes: Counters::default(),
        syncs: Counters::default(),
        retention: options.retention,
    };
    let schedulers = Schedulers::start(&state, options.passes, options.syncs, &shutdown);
    let router = routes(&state, options.receiver, options.ui);
    tracing::info!(addr = %listener.local_addr()?, "serving");
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.stop_claiming.clone().cancelled_owned())
    .await;
    // The server stopped (a stop was requested, or it failed): stop the scheduler too.
    shutdown.stop_claiming.cancel();
    schedulers.stopped().await;
    served.map_err(ServeError)
}

/// The probes, the callback receiver when there is one, and the web page when asked for.
fn routes(
    state: &ServeState,
    receiver: Option<ReceiverConfig>,
    ui: Option<crate::ui::Ui>,
) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    if let Some(config) = receiver {
        let receiver = receiver::Receiver {
            ledger: state.ledger.clone(),
            config: Arc::new(config),
            callbacks: state.callbacks.clone(),
        };
        router = router.merge(
            Router::new()
                // Two segments are an account and its secret; one is the account
                // `default`'s secret, or an account when `?secret=` follows.
                .route(
                    "/callback/{account}/{secret}",
                    post(receiver::with_account_and_secret),
                )
                .route("/callback/{segment}", post(receiver::with_one_segment))
                .route("/callback", post(receiver::with_query_secret))
                .with_state(receiver),
        );
    }
    if let Some(ui) = ui {
        router = router.merge(ui.router());
    }
    router.fallback(receiver::not_found)
}

/// The scheduled passes and syncs running beside the server; each returns how many it ran.
struct Schedulers {
    passes: Option<JoinHandle<u64>>,
    syncs: Option<JoinHandle<u64>>,
}

impl Schedulers {
    /// Starts the schedules given, each counting its runs by exit code in `state`.
    fn start(
        state: &ServeState,
        passes: Option<ScheduledPasses>,
        syncs: Option<ScheduledSyncs>,
        shutdown: &Shutdown,
    ) -> Self {
        let sync_scheduler = syncs.map(|syncs| {
            let counter = state.syncs.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                run_scheduled_syncs(syncs, shutdown, move |account, code| {
                    count(&counter, account, code);
                })
                .await
            })
        });
        let scheduler = passes.map(|passes| {
            let counter = state.passes.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                run_scheduled(passes, shutdown, move |account, code| {
                    count(&counter, account, code);
                })
                .await
            })
        });
        Self {
            passes: scheduler,
            syncs: sync_scheduler,
        }
    }

    /// Waits for both to stop (once claiming stopped) and logs how many each ran.
    async fn stopped(self) {
        if let Some(task) = self.passes {
            match task.await {
                Ok(ran) => tracing::info!(passes = ran, "scheduler stopped"),
                Err(e) => tracing::error!(error = %e, "the scheduler failed"),
            }
        }
        if let Some(task) = self.syncs {
            match task.await {
                Ok(ran) => tracing::info!(syncs = ran, "sync scheduler stopped"),
                Err(e) => tracing::error!(error = %e, "the sync scheduler failed"),
            }
        }
    }
}

/// One scheduled pass or sync of `account`'s, ended with `code`.
fn count(counter: &Counters, account: &AccountName, code: i32) {
    counter
        .get_or_create(&vec![
            ("account".into(), account.to_string()),
            ("exit_code".into(), code.to_string()),
        ])
        .inc();
}

async fn readyz(State(state): State<ServeState>) -> Response {
    match state.ledger.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the ledger does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "ledger unavailable\n").into_response()
        }
    }
}

async fn metrics(State(state): State<ServeState>) -> Response {
    let figures = async {
        let mut figures = Vec::with_capacity(state.accounts.len());
        for account in &state.accounts {
            let ledger = state.ledger.scoped(account);
            figures.push(crate::metrics::AccountFigures::read(&ledger, state.retention).await?);
        }
        Ok::<_, crate::ledger::LedgerError>(figures)
    };
    let figures = match figures.await {
        Ok(figures) => figures,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the ledger does not answer");
            return (StatusCode::SERVICE_UNAVAILABLE, "ledger unavailable\n").into_response();
        }
    };
    let mut registry = Registry::default();
    registry.register(
        "callvault_callbacks",
        "Callbacks received, by account and result",
        state.callbacks.clone(),
    );
    registry.register(
        "callvault_scheduled_passes",
        "Scheduled archival passes run by this process, by account and exit code",
        state.passes.clone(),
    );
    registry.register(
        "callvault_scheduled_syncs",
        "Scheduled syncs run by this process, by account and exit code",
        state.syncs.clone(),
    );
    crate::metrics::register_accounts(&mut registry, &figures);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::encode_text(&registry),
    )
        .into_response()
}
