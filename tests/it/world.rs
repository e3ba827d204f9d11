//! Spawns the world a test needs, all on loopback and all inside the test: the provider
//! simulator, an S3 protocol server (s3s-fs over a temp directory), and a fresh ledger: a
//! temp SQLite file, or a new database on the test binary's PostgreSQL (see `pg.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callvault::archive::{Deps, RetryPolicy, RunOptions, RunResult, Shutdown, run_pass};
use callvault::callback::parse_record;
use callvault::clock::TestClock;
use callvault::domain::CallRecord;
use callvault::ledger::{BackendKind, Ledger, Slice};
use callvault::provider::{
    DownloadPolicy, Downloader, DownloaderSettings, ProviderClient, ProviderConfig,
};
use callvault::simulator::{Simulator, SimulatorConfig};
use callvault::store::{DEFAULT_TEMPLATE, KeyTemplate, S3Options, Store, StoreConfig};
use callvault::timefmt::default_provider_tz;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub const S3_ACCESS_KEY: &str = "test-access-key";
pub const S3_SECRET_KEY: &str = "test-secret-key-canary";
pub const BUCKET: &str = "archive";
/// The network the simulator and the S3 server run on, allowed for downloads explicitly.
pub const LOOPBACK: &str = "127.0.0.0/8";

/// An S3 protocol server over a temp directory.
pub struct S3Server {
    pub endpoint: String,
    pub root: TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Server {
    pub async fn start() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket dir");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
        let service = {
            let mut b = s3s::service::S3ServiceBuilder::new(fs);
            b.set_auth(s3s::auth::SimpleAuth::from_single(
                S3_ACCESS_KEY,
                S3_SECRET_KEY,
            ));
            b.build()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self {
            endpoint: format!("http://{addr}"),
            root,
            task,
        }
    }

    /// The `AWS_*` settings (as environment variable names) that reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
        ]
    }

    pub fn options(&self) -> S3Options {
        self.env()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect()
    }
}

/// Everything one test works against.
pub struct World {
    pub sim: Simulator,
    pub s3: S3Server,
    pub dir: TempDir,
    pub ledger_url: String,
    pub ledger: Ledger,
    pub store: Store,
    /// The clock of every pass the world runs: real time until a test moves it forward (a
    /// lease running out, a window passing) instead of sleeping.
    pub clock: TestClock,
}

/// Multipart part size in tests: the smallest S3 accepts.
pub const TEST_PART: usize = 5 * 1024 * 1024;

impl World {
    /// A world on a temp SQLite ledger.
    pub async fn new() -> Self {
        Self::with_backend(BackendKind::Sqlite).await
    }

    /// A world on a fresh database of the test binary's PostgreSQL.
    pub async fn postgres() -> Self {
        Self::with_backend(BackendKind::Postgres).await
    }

    pub async fn with_backend(kind: BackendKind) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger_url = fresh_ledger_url(kind, dir.path()).await;
        Self::on_ledger(ledger_url, dir).await
    }

    /// A world on the ledger at `ledger_url` (a dedicated server's, say); `dir` is the
    /// world's working directory.
    pub async fn on_ledger(ledger_url: String, dir: TempDir) -> Self {
        let sim = Simulator::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            SimulatorConfig::default(),
        )
        .await
        .expect("simulator");
        let s3 = S3Server::start().await;
        let ledger = Ledger::open(&ledger_url).await.expect("ledger");
        let store = Store::open(&StoreConfig {
            s3: s3.options(),
            part_size: TEST_PART,
            ..StoreConfig::new(format!("s3://{BUCKET}/calls"))
        })
        .expect("store");
        Self {
            sim,
            s3,
            dir,
            ledger_url,
            ledger,
            store,
            clock: TestClock::new(),
        }
    }

    pub fn provider_config(&self) -> ProviderConfig {
        let c = self.sim.config();
        ProviderConfig {
            api_url: self.sim.api_url().parse().expect("url"),
            appid: c.appid.clone(),
            accesskey: SecretString::from(c.accesskey.clone()),
            api_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            token_max_age: Duration::from_secs(3600),
            tz: default_provider_tz(),
            pace: Arc::default(),
        }
    }

    pub fn deps(&self) -> Deps {
        self.deps_with(self.ledger.clone(), self.store.clone())
    }

    pub fn deps_with(&self, ledger: Ledger, store: Store) -> Deps {
        Deps {
            ledger,
            provider: Arc::new(ProviderClient::new(self.provider_config()).expect("client")),
            downloader: Downloader::new(self.downloader_settings(&[], &[LOOPBACK]))
                .expect("downloader"),
            store,
            keys: KeyTemplate::parse(DEFAULT_TEMPLATE, default_provider_tz()).expect("template"),
            prover: callvault::proof::Prover::default(),
            clock: self.clock.clock(),
        }
    }

    /// The downloader's settings: the simulator's host plus `hosts`, and `networks` allowed
    /// (tests run on loopback, which is refused unless allowed).
    pub fn downloader_settings(&self, hosts: &[&str], networks: &[&str]) -> DownloaderSettings {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        DownloaderSettings {
            connect_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(5),
            policy: DownloadPolicy::new(
                &self.sim.api_url().parse().expect("url"),
                &owned(hosts),
                &owned(networks),
            )
            .expect("policy"),
            proxy: None,
        }
    }

    /// Fast options: tiny backoffs, later runs may retry at once.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            concurrency: 4,
            max_records: None,
            deadline: None,
            dry_run: false,
            lease: Duration::from_secs(30),
            retry: RetryPolicy {
                attempts_per_run: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                later_base: Duration::ZERO,
                later_max: Duration::ZERO,
                max_attempts: 30,
                outage_failures: 3,
                outage_window: Duration::from_millis(200),
                // The old rule (fail on the first such answer) unless a test asks for more.
                give_up_answers: 1,
                give_up_window: Duration::ZERO,
            },
            retention: chrono::Duration::days(90),
            slice: Slice::default(),
            grace: Duration::from_secs(2),
            shutdown: Shutdown::default(),
            description: serde_json::json!({"test": true}),
            host: "test-host".into(),
            progress: Default::default(),
            slots: None,
        }
    }

    pub async fn run(&self, opts: &RunOptions) -> RunResult {
        run_pass(&self.deps(), opts)
            .await
            .expect("the ledger works")
    }

    /// Registers `n` sample calls at the simulator and imports them; returns the records.
    pub async fn import_samples(&self, n: usize) -> Vec<CallRecord> {
        let callbacks = self.sim.sample_callbacks(n, chrono::Utc::now());
        let records: Vec<CallRecord> = callbacks
            .iter()
            .map(|c| parse_record(&c.to_string(), default_provider_tz()).expect("sample parses"))
            .collect();
        self.ledger
            .import(&records, chrono::Utc::now())
            .await
            .expect("import");
        records
    }

    /// Imports one call whose recording of `size` bytes the simulator serves.
    pub async fn import_call(&self, uuid: &str, file: &str, size: u64) -> CallRecord {
        self.sim.add_recording(file, size);
        let record = call(uuid, file, "2026-11-01 10:00:00");
        self.ledger
            .import(std::slice::from_ref(&record), chrono::Utc::now())
            .await
            .expect("import");
        record
    }

    /// The bytes of an object in the S3 store and their SHA-256.
    pub async fn object_sha256(&self, key: &str) -> Option<String> {
        let path = self.store.path(key).expect("path");
        match self.store.object_store().get(&path).await {
            Ok(got) => Some(hex::encode(Sha256::digest(
                got.bytes().await.expect("body"),
            ))),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("reading {key}: {e}"),
        }
    }

    /// Every object key under the store (relative to the bucket).
    pub async fn object_keys(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let mut keys: Vec<String> = self
            .store
            .object_store()
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list");
        keys.sort();
        keys
    }

    pub fn bucket_path(&self, key: &str) -> Path {
        self.store.path(key).expect("path")
    }
}

/// The URL of a new, empty ledger: `ledger.db` in `dir`, or a new PostgreSQL database.
pub async fn fresh_ledger_url(kind: BackendKind, dir: &std::path::Path) -> String {
    match kind {
        BackendKind::Sqlite => format!("sqlite://{}", dir.join("ledger.db").display()),
        BackendKind::Postgres => crate::pg::database().await,
    }
}

/// The receiver as the tests run it: the default account's callbacks signed with `secret`,
/// from anywhere, up to 64 KiB, times in the provider's zone, answered as `answer`.
pub fn receiver(
    secret: &str,
    answer: callvault::serve::CallbackAnswer,
) -> callvault::serve::ReceiverConfig {
    callvault::serve::ReceiverConfig {
        accounts: vec![callvault::serve::CallbackAccount::default_account(
            secrecy::SecretString::from(secret),
        )],
        allow_from: Vec::new(),
        max_body_bytes: 64 * 1024,
        tz: callvault::timefmt::PROVIDER_TZ,
        answer,
    }
}

/// A ledger at `url` as an earlier release left it: the migrations up to `version` only,
/// then `rows` (statements of that release's schema). Opening it applies the rest.
pub async fn ledger_migrated_to(kind: BackendKind, url: &str, version: i64, rows: &[&str]) {
    let dir = match kind {
        BackendKind::Sqlite => "migrations/sqlite",
        BackendKind::Postgres => "migrations/postgres",
    };
    let migrator =
        sqlx::migrate::Migrator::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .await
            .unwrap();
    match kind {
        BackendKind::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
            let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
                .await
                .unwrap();
            migrate_and_fill(&migrator, &pool, version, rows).await;
        }
        BackendKind::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            migrate_and_fill(&migrator, &pool, version, rows).await;
        }
    }
}

/// Applies `migrator`'s migrations up to `version` to `pool`, then `rows`, and closes it.
async fn migrate_and_fill<DB>(
    migrator: &sqlx::migrate::Migrator,
    pool: &sqlx::Pool<DB>,
    version: i64,
    rows: &[&str],
) where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    migrator.run_to(version, pool).await.unwrap();
    for sql in rows {
        sqlx::query(sqlx::AssertSqlSafe(*sql))
            .execute(pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

/// A new, empty ledger on its own (no simulator, no store), for the ledger's own tests.
pub struct TempLedger {
    pub ledger: Ledger,
    pub url: String,
    _dir: TempDir,
}

impl TempLedger {
    pub async fn new(kind: BackendKind) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = fresh_ledger_url(kind, dir.path()).await;
        let ledger = Ledger::open(&url).await.expect("ledger");
        Self {
            ledger,
            url,
            _dir: dir,
        }
    }

    /// Another handle on the same ledger with its own connections, as another process
    /// would have.
    pub async fn reopen(&self) -> Ledger {
        Ledger::open(&self.url).await.expect("ledger")
    }
}

impl std::ops::Deref for TempLedger {
    type Target = Ledger;

    fn deref(&self) -> &Ledger {
        &self.ledger
    }
}

/// A call record in the provider's callback format.
pub fn call(uuid: &str, file: &str, start: &str) -> CallRecord {
    let json = serde_json::json!({
        "uuid": uuid, "companycode": 20000013, "recordfilename": file, "starttime": start,
        "answertime": start, "endtime": start, "duration": 30, "billsec": 25, "type": "callout",
    });
    parse_record(&json.to_string(), default_provider_tz()).expect("valid call")
}

/// Every file below `dir`.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path))
        } else {
            out.push(path)
        }
    }
    out
}

impl World {
    /// Checks every archived record: its object's SHA-256 equals the ledger's and the
    /// source's. Returns how many there are.
    pub async fn verify_archived(&self) -> usize {
        let archived = self
            .ledger
            .uuids_in_state(callvault::domain::RecordState::Archived)
            .await
            .unwrap();
        for uuid in &archived {
            let row = self
                .ledger
                .get(&crate::world::cu(uuid))
                .await
                .unwrap()
                .unwrap();
            let key = row
                .object_key
                .as_deref()
                .expect("an archived record has a key");
            assert!(row.sha256.is_some(), "{uuid} has a SHA-256");
            assert_eq!(
                self.object_sha256(key).await,
                row.sha256,
                "the stored object of {uuid}"
            );
            assert_eq!(
                row.sha256,
                self.sim.expected_sha256(&row.record.record_file),
                "the source of {uuid}"
            );
        }
        archived.len()
    }

    /// How many records are in `state`.
    pub async fn count(&self, state: callvault::domain::RecordState) -> usize {
        self.ledger.uuids_in_state(state).await.unwrap().len()
    }

    /// Makes every pending record's next download stall for `how_long`.
    pub async fn stall_all_pending(&self, how_long: std::time::Duration) {
        for uuid in self
            .ledger
            .uuids_in_state(callvault::domain::RecordState::Pending)
            .await
            .unwrap()
        {
            let row = self
                .ledger
                .get(&crate::world::cu(&uuid))
                .await
                .unwrap()
                .unwrap();
            self.sim.push_download_fault(
                &row.record.record_file,
                callvault::simulator::DownloadFault::Stall(how_long),
            );
        }
    }
}

/// A call uuid from a test's string (panics on a blank one: a test's own mistake).
pub fn cu(raw: &str) -> callvault::domain::CallUuid {
    callvault::domain::CallUuid::parse(raw).expect("a test uuid")
}

/// Records run `id` in the runs table unless it is there (a claim starts attempts, which
/// name their run).
pub async fn ensure_run(ledger: &Ledger, id: &str) {
    let run = callvault::ledger::RunRecord {
        id: id.into(),
        started_at: chrono::Utc::now(),
        host: "test".into(),
        pid: 1,
        options: "{}".into(),
    };
    let known = ledger
        .export_rows(callvault::ledger::Table::Runs, None, i64::MAX)
        .await
        .expect("reading the runs")
        .iter()
        .any(|row| row.get("id").and_then(|v| v.as_str()) == Some(id));
    if !known {
        ledger.start_run(&run).await.expect("recording the run");
    }
}

/// Claims the one oldest due record for `owner` (the ledger's claim, one at a time).
pub async fn claim_one(
    ledger: &Ledger,
    owner: &str,
    slice: &Slice,
    due_by: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    lease_until: chrono::DateTime<chrono::Utc>,
) -> Result<Option<callvault::domain::Claim>, callvault::ledger::LedgerError> {
    ensure_run(ledger, owner).await;
    let owner = callvault::domain::RunId::from(owner);
    let request = callvault::ledger::ClaimRequest {
        owner: &owner,
        slice,
        due_by,
        now,
        lease_until,
        limit: 1,
    };
    Ok(ledger.claim(&request).await?.into_iter().next())
}
