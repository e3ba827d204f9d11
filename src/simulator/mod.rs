//! An in-process imitation of the telephony provider (token API, signed recording links,
//! downloads, the bill list, callback delivery) with fault injection, for integration tests,
//! `callvault demo` and benchmarks.

mod accounts;
mod api;
mod bills;
mod callbacks;
mod download;
mod envelope;
mod faults;
mod recordings;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::Json;
use axum::routing::{get, post};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use accounts::{AccountConfig, ProviderAccount};
pub use bills::{Delivery, MAX_ITEMS_PER_PAGE};
pub use faults::{DownloadFault, Faults};
pub use recordings::{content_type, expected_sha256, recording_bytes};

use accounts::{AccountIndex, AccountState};
use faults::FaultState;

/// How long `shutdown` waits for in-flight responses (a stalled download, say) to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The simulator's first account (the default one) and what all its accounts share.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub appid: String,
    pub accesskey: String,
    pub company_code: String,
    /// Lifetime of a download link handed out by `GetRecodeFile`.
    pub link_ttl: Duration,
}

impl SimulatorConfig {
    /// The default account's credentials and company.
    pub fn account(&self) -> AccountConfig {
        AccountConfig {
            appid: self.appid.clone(),
            accesskey: self.accesskey.clone(),
            company_code: self.company_code.clone(),
        }
    }
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            appid: "demo-app".to_owned(),
            accesskey: "demo-secret-key".to_owned(),
            company_code: "20000013".to_owned(),
            link_ttl: Duration::from_secs(10 * 60),
        }
    }
}

/// What the simulator has been asked to do since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Login requests, successful or not.
    pub logins: u64,
    pub failed_logins: u64,
    pub logouts: u64,
    /// `GetRecodeFile` requests, whatever their answer.
    pub url_requests: u64,
    /// Requests to the download endpoint, whatever their answer.
    pub downloads: u64,
    /// API requests answered `ret` 500 by a fault knob.
    pub server_errors: u64,
    /// Times live tokens were invalidated (fault knobs or `invalidate_all_tokens`); clearing
    /// when no token is live does not count.
    pub invalidations: u64,
    /// Downloads asked for (and given) a byte range.
    pub ranged_downloads: u64,
    /// Body bytes the download endpoint announced (Content-Length), over all downloads.
    pub bytes_announced: u64,
    /// `GetBill` requests, whatever their answer.
    pub bill_requests: u64,
    /// Bills returned, over all pages.
    pub bills_listed: u64,
}

/// State shared by the handle and the request handlers.
struct Shared {
    config: SimulatorConfig,
    /// `http://HOST:PORT/`
    base_url: String,
    /// Keys the download-link signatures; fresh for every simulator.
    secret: [u8; 32],
    state: Mutex<SimState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().expect("simulator state mutex poisoned")
    }
}

#[derive(Debug)]
struct SimState {
    /// The accounts served, the default one first.
    accounts: Vec<AccountState>,
    /// token -> the account that logged in, and when the token expires
    tokens: HashMap<String, (AccountIndex, Instant)>,
    faults: FaultState,
    stats: SimStats,
    /// When each API request arrived (for measuring a client's rate).
    api_arrivals: Vec<Instant>,
}

impl SimState {
    /// Clears every token; counts an invalidation only when a live token died, so that
    /// "one login per invalidation" can be checked exactly.
    fn invalidate_all_tokens(&mut self) {
        if !self.tokens.is_empty() {
            self.tokens.clear();
            self.stats.invalidations += 1;
        }
    }
}

/// Stops the server when the last handle goes away without `shutdown`.
struct Server {
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<io::Result<()>>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A running simulator; clones share the same server.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
    server: Arc<Server>,
    addr: SocketAddr,
    /// The simulator's own RFC 3161 time-stamping authority, at `/tsa`: it stands in for
    /// a public one as the simulator stands in for the provider.
    tsa: Arc<crate::proof::tsa::Authority>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Binds `bind` (use `127.0.0.1:0` in tests) and serves until [`Simulator::shutdown`].
    pub async fn start(bind: SocketAddr, config: SimulatorConfig) -> io::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let host = match addr.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        let shared = Arc::new(Shared {
            base_url: format!("http://{}/", SocketAddr::new(host, addr.port())),
            secret: rand::random(),
            state: Mutex::new(SimState {
                accounts: vec![AccountState::new(config.account())],
                tokens: HashMap::new(),
                faults: FaultState::default(),
                stats: SimStats::default(),
                api_arrivals: Vec::new(),
            }),
            config,
        });
        let router = Router::new()
            .route("/", post(api::handle))
            .route("/recordings/{filename}", get(download::download))
            .route("/_sim/stats", get(stats_handler))
            .with_state(Arc::clone(&shared));
        let tsa = Arc::new(crate::proof::tsa::Authority::generate(
            "callvault simulator TSA",
        ));
        let router = router.nest("/tsa", Arc::clone(&tsa).router());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(cancel.clone().cancelled_owned())
                .into_future(),
        );
        tracing::debug!(%addr, "simulator listening");
        let server = Arc::new(Server {
            cancel,
            task: Mutex::new(Some(task)),
        });
        Ok(Simulator {
            shared,
            server,
            addr,
            tsa,
        })
    }

    /// `http://127.0.0.1:PORT/tsa`: the simulator's time-stamping authority.
    pub fn tsa_url(&self) -> String {
        format!("{}tsa", self.shared.base_url)
    }

    /// The simulator's time-stamping authority (its root certificate, its faults).
    pub fn tsa(&self) -> &crate::proof::tsa::Authority {
        &self.tsa
    }

    /// `http://127.0.0.1:PORT/`
    pub fn api_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn config(&self) -> &SimulatorConfig {
        &self.shared.config
    }

    /// Makes `filename` downloadable by the default account with `size` bytes of
    /// deterministic content.
    pub fn add_recording(&self, filename: &str, size: u64) {
        self.default_account().add_recording(filename, size);
    }

    /// Later `GetRecodeFile` answers "file does not exist"; existing links answer 404.
    pub fn remove_recording(&self, filename: &str) {
        self.default_account().remove_recording(filename);
    }

    /// Hex SHA-256 of a registered recording (generated on the spot: slow for huge files).
    pub fn expected_sha256(&self, filename: &str) -> Option<String> {
        self.default_account().expected_sha256(filename)
    }

    pub fn set_faults(&self, f: impl FnOnce(&mut Faults)) {
        self.shared.lock().faults.update(f);
    }

    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.knobs().clone()
    }

    /// Queues `fault` for the next download of `filename` that passes the signature check.
    pub fn push_download_fault(&self, filename: &str, fault: DownloadFault) {
        self.shared.lock().faults.push_download(filename, fault);
    }

    /// Forgets every download fault still queued: downloads behave from now on.
    pub fn clear_download_faults(&self) {
        self.shared.lock().faults.clear_downloads();
    }

    pub fn stats(&self) -> SimStats {
        self.shared.lock().stats
    }

    pub fn invalidate_all_tokens(&self) {
        self.shared.lock().invalidate_all_tokens();
    }

    /// The default account's [`ProviderAccount::sample_callbacks`].
    pub fn sample_callbacks(
        &self,
        n: usize,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<serde_json::Value> {
        self.default_account().sample_callbacks(n, now)
    }

    /// The default account's [`ProviderAccount::add_call`].
    pub fn add_call(
        &self,
        callback: &serde_json::Value,
        started: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        self.default_account().add_call(callback, started)
    }

    /// The default account's [`ProviderAccount::edit_bill`].
    pub fn edit_bill(
        &self,
        id: u64,
        edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) {
        self.default_account().edit_bill(id, edit);
    }

    /// A fresh call id of the default account, for tests that write their own callbacks.
    pub fn next_call_id(&self) -> u64 {
        self.default_account().next_call_id()
    }

    /// When each API request (any service) arrived, in order.
    pub fn api_arrivals(&self) -> Vec<Instant> {
        self.shared.lock().api_arrivals.clone()
    }

    /// Posts each callback as JSON to `url` (a receiver's callback address), one at a time,
    /// except those the `drop_callbacks_percent` fault drops. Never fails: what happened
    /// to each call is in the answer.
    pub async fn deliver_callbacks(&self, url: &str, callbacks: &[serde_json::Value]) -> Delivery {
        let http = reqwest::Client::new();
        let mut delivery = Delivery::default();
        for callback in callbacks {
            let uuid = callback["uuid"].as_str().unwrap_or_default().to_owned();
            if self.shared.lock().faults.take_drop() {
                delivery.dropped.push(uuid);
                continue;
            }
            let sent = http
                .post(url)
                .timeout(Duration::from_secs(30))
                .json(callback)
                .send()
                .await;
            match sent {
                Ok(answer) if answer.status().is_success() => delivery.delivered.push(uuid),
                Ok(answer) => {
                    tracing::warn!(status = %answer.status(), "callback refused");
                    delivery.failed.push(uuid);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "callback not delivered");
                    delivery.failed.push(uuid);
                }
            }
        }
        delivery
    }

    /// Stops accepting connections and waits (up to a few seconds) for in-flight responses.
    pub async fn shutdown(self) {
        self.server.cancel.cancel();
        let task = self
            .server
            .task
            .lock()
            .expect("simulator task mutex poisoned")
            .take();
        let Some(mut task) = task else { return };
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => tracing::warn!(%err, "simulator server failed"),
            Ok(Err(err)) => tracing::warn!(%err, "simulator server task failed"),
            Err(_) => {
                tracing::warn!("simulator did not drain in time; aborting");
                task.abort();
            }
        }
    }
}

async fn stats_handler(State(shared): State<Arc<Shared>>) -> Json<SimStats> {
    Json(shared.lock().stats)
}

/// The sample calls [`serve_forever`] serves.
#[derive(Debug, Clone, Default)]
pub struct SampleOptions {
    pub recordings: usize,
    /// Every recording at this size instead of the usual mix.
    pub recording_size: Option<u64>,
    /// Where to write the calls' callbacks, as JSON lines.
    pub callbacks_out: Option<PathBuf>,
    /// A receiver's callback address to post the calls' callbacks to (a share dropped
    /// with the `drop_callbacks_percent` fault).
    pub callback_url: Option<String>,
}

/// Runs a simulator for the `callvault simulator` subcommand until Ctrl-C or SIGTERM:
/// registers `recordings` sample recordings, writes their callbacks as JSON lines to
/// `callbacks_out`, and prints the API URL and credentials to stdout.
pub async fn serve_forever(
    bind: SocketAddr,
    config: SimulatorConfig,
    faults: Faults,
    samples: SampleOptions,
) -> io::Result<()> {
    let SampleOptions {
        recordings,
        recording_size,
        callbacks_out,
        callback_url,
    } = samples;
    let sim = Simulator::start(bind, config).await?;
    sim.set_faults(|f| *f = faults);
    let mut callbacks = sim.sample_callbacks(recordings, chrono::Utc::now());
    if let Some(size) = recording_size {
        for callback in &mut callbacks {
            let name = callback["recordfilename"].as_str().unwrap_or("").to_owned();
            if !name.is_empty() {
                sim.add_recording(&name, size);
                // The billed seconds follow the recording's length, as the provider's do.
                callback["billsec"] = callbacks::billsec_for(&name, size).into();
            }
        }
    }
    if let Some(path) = &callbacks_out {
        let mut lines = String::new();
        for callback in &callbacks {
            lines.push_str(&callback.to_string());
            lines.push('\n');
        }
        tokio::fs::write(path, lines).await?;
    }
    println!("api_url: {}", sim.api_url());
    println!("appid: {}", sim.config().appid);
    println!("accesskey: {}", sim.config().accesskey);
    if let Some(path) = &callbacks_out {
        println!("callbacks: {} ({} lines)", path.display(), callbacks.len());
    }
    if let Some(url) = &callback_url {
        let delivery = sim.deliver_callbacks(url, &callbacks).await;
        println!(
            "callbacks posted: {} delivered, {} dropped, {} failed",
            delivery.delivered.len(),
            delivery.dropped.len(),
            delivery.failed.len()
        );
        for uuid in &delivery.dropped {
            println!("dropped: {uuid}");
        }
    }
    let stopped = shutdown_signal().await;
    sim.shutdown().await;
    stopped
}

async fn shutdown_signal() -> io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
