//! The world every measurement shares, on loopback: the provider simulator, the S3 servers
//! (s3s over s3s-fs in a temporary directory, and Garage when it is installed; one bucket per
//! measurement) and fresh ledgers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use callvault::callback::parse_record;
use callvault::domain::CallRecord;
use callvault::ledger::Ledger;
use callvault::simulator::{Simulator, SimulatorConfig};
use callvault::timefmt::default_provider_tz;
use futures::{StreamExt, TryStreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tempfile::TempDir;

pub const S3_ACCESS_KEY: &str = "bench-access-key";
pub const S3_SECRET_KEY: &str = "bench-secret-key";
pub const S3_REGION: &str = "us-east-1";

/// The S3 server a transfer is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// s3s over s3s-fs, in the benchmark's own process.
    S3sFs,
    /// Garage, a single node in its own process.
    Garage,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::S3sFs => "s3s-fs",
            Server::Garage => "garage",
        }
    }
}

/// How a client reaches one S3 server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

/// Everything the measurements run against.
pub struct Rig {
    pub sim: Simulator,
    /// `http://127.0.0.1:PORT` of s3s-fs.
    pub s3_endpoint: String,
    s3_root: PathBuf,
    s3_task: tokio::task::JoinHandle<()>,
    /// Dropped (killed) before `dir` is removed.
    pub garage: Option<crate::garage::Garage>,
    /// Holds the S3 root, the ledgers and rclone's config; removed on drop.
    pub dir: TempDir,
    pub callvault: PathBuf,
    buckets: AtomicUsize,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.s3_task.abort();
    }
}

impl Rig {
    /// The simulator and s3s-fs; Garage too when `with_garage` (and it is installed).
    pub async fn start(callvault: PathBuf, with_garage: bool) -> anyhow::Result<Self> {
        let sim = Simulator::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            SimulatorConfig::default(),
        )
        .await
        .context("starting the simulator")?;
        let dir = tempfile::Builder::new()
            .prefix("callvault-bench-")
            .tempdir()
            .context("creating the bench directory")?;
        let s3_root = dir.path().join("s3");
        std::fs::create_dir(&s3_root)?;
        let (s3_endpoint, s3_task) = start_s3(&s3_root).await?;
        let garage = if with_garage {
            start_garage(dir.path()).await?
        } else {
            None
        };
        Ok(Self {
            sim,
            s3_endpoint,
            s3_root,
            s3_task,
            garage,
            dir,
            callvault,
            buckets: AtomicUsize::new(0),
        })
    }

    /// The `AWS_*` settings that reach `server`.
    pub fn s3_env_on(&self, server: Server) -> Vec<(&'static str, String)> {
        let e = self.endpoint(server);
        vec![
            ("AWS_ACCESS_KEY_ID", e.access_key),
            ("AWS_SECRET_ACCESS_KEY", e.secret_key),
            ("AWS_REGION", e.region),
            ("AWS_ENDPOINT", e.url),
        ]
    }

    /// The servers transfers are measured against: s3s-fs, and Garage when it runs.
    pub fn servers(&self) -> Vec<Server> {
        let mut out = vec![Server::S3sFs];
        if self.garage.is_some() {
            out.push(Server::Garage);
        }
        out
    }

    pub fn endpoint(&self, server: Server) -> Endpoint {
        match (server, &self.garage) {
            (Server::Garage, Some(g)) => Endpoint {
                url: g.endpoint.clone(),
                access_key: g.access_key.clone(),
                secret_key: g.secret_key.clone(),
                region: crate::garage::REGION.into(),
            },
            _ => Endpoint {
                url: self.s3_endpoint.clone(),
                access_key: S3_ACCESS_KEY.into(),
                secret_key: S3_SECRET_KEY.into(),
                region: S3_REGION.into(),
            },
        }
    }

    /// The server process's CPU time so far, when it has a process of its own (Garage);
    /// s3s-fs's is the benchmark process's.
    pub fn server_cpu(&self, server: Server) -> Option<std::time::Duration> {
        match (server, &self.garage) {
            (Server::Garage, Some(g)) => Some(g.cpu()),
            _ => None,
        }
    }

    /// A new empty bucket on `server`; [`Rig::drop_bucket_on`] frees it.
    pub async fn bucket_on(&self, server: Server) -> anyhow::Result<String> {
        match (server, &self.garage) {
            (Server::Garage, Some(g)) => {
                let name = format!("bench-{}", self.buckets.fetch_add(1, Ordering::Relaxed));
                g.create_bucket(&name).await?;
                Ok(name)
            }
            _ => self.bucket(),
        }
    }

    /// Empties and removes a bucket of `server`.
    pub async fn drop_bucket_on(&self, server: Server, name: &str) -> anyhow::Result<()> {
        match (server, &self.garage) {
            (Server::Garage, Some(g)) => {
                let s3 = self.object_store(server, name)?;
                let paths = s3.list(None).map_ok(|m| m.location).boxed();
                s3.delete_stream(paths).try_collect::<Vec<_>>().await?;
                g.delete_bucket(name).await
            }
            _ => self.drop_bucket(name),
        }
    }

    /// Bytes and objects in a bucket of `server`.
    pub async fn usage_on(&self, server: Server, name: &str) -> anyhow::Result<(u64, usize)> {
        if server == Server::S3sFs {
            return Ok(self.bucket_usage(name));
        }
        let s3 = self.object_store(server, name)?;
        let all: Vec<_> = s3.list(None).try_collect().await?;
        Ok((all.iter().map(|m| m.size).sum(), all.len()))
    }

    /// A plain object_store client for a bucket of `server` (listing, deleting).
    pub fn object_store(
        &self,
        server: Server,
        bucket: &str,
    ) -> anyhow::Result<Arc<dyn object_store::ObjectStore>> {
        Ok(Arc::new(self.s3_builder(server, bucket).build()?))
    }

    /// An object_store builder for a bucket of `server`, with its endpoint and keys, over
    /// plain HTTP; the caller adds what it measures (checksums, payload signing).
    pub fn s3_builder(&self, server: Server, bucket: &str) -> object_store::aws::AmazonS3Builder {
        let e = self.endpoint(server);
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(&e.url)
            .with_region(&e.region)
            .with_access_key_id(&e.access_key)
            .with_secret_access_key(&e.secret_key)
            .with_allow_http(true)
    }

    /// A new empty bucket; [`Rig::drop_bucket`] frees its disk space.
    pub fn bucket(&self) -> anyhow::Result<String> {
        let name = format!("bench-{}", self.buckets.fetch_add(1, Ordering::Relaxed));
        std::fs::create_dir(self.s3_root.join(&name))?;
        Ok(name)
    }

    /// Removes the bucket and any multipart leftovers.
    pub fn drop_bucket(&self, name: &str) -> anyhow::Result<()> {
        std::fs::remove_dir_all(self.s3_root.join(name))?;
        for entry in std::fs::read_dir(&self.s3_root)?.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".upload_id-")
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Bytes and files under a bucket (what the store holds after a run).
    pub fn bucket_usage(&self, name: &str) -> (u64, usize) {
        fn walk(dir: &Path, acc: &mut (u64, usize)) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, acc);
                } else if let Ok(meta) = entry.metadata() {
                    acc.0 += meta.len();
                    acc.1 += 1;
                }
            }
        }
        let mut acc = (0, 0);
        walk(&self.s3_root.join(name), &mut acc);
        acc
    }

    /// Registers `n` recordings of `size` bytes named `{prefix}-00000.wav`...; returns the names.
    pub fn recordings(&self, prefix: &str, n: usize, size: u64) -> Vec<String> {
        (0..n)
            .map(|i| {
                let name = format!("{prefix}-{i:05}.wav");
                self.sim.add_recording(&name, size);
                name
            })
            .collect()
    }

    /// A fresh ledger file holding one pending call per recording name (new uuids each time).
    pub async fn ledger_with(
        &self,
        label: &str,
        names: &[String],
        size: u64,
    ) -> anyhow::Result<String> {
        let path = self.dir.path().join(format!("{label}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let url = format!("sqlite://{}", path.display());
        let ledger = Ledger::open(&url).await?;
        ledger
            .import(&calls(names, size), chrono::Utc::now())
            .await?;
        ledger.close().await;
        Ok(url)
    }

    pub fn remove_ledger(&self, url: &str) {
        let path = url.trim_start_matches("sqlite://");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
}

/// One answered call per recording, started in the last days (well inside retention), billed
/// for as long as its WAV recording of `size` bytes lasts (8 kHz, 16 bit, mono).
pub fn calls(names: &[String], size: u64) -> Vec<CallRecord> {
    let now = chrono::Utc::now();
    let billsec = (size / 16_000).max(1);
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let start = (now - chrono::Duration::minutes(10 + i as i64))
                .with_timezone(&default_provider_tz())
                .format("%Y-%m-%d %H:%M:%S")
                .to_string();
            let json = serde_json::json!({
                "uuid": uuid::Uuid::new_v4().to_string(), "companycode": 20000013,
                "recordfilename": name, "starttime": start, "answertime": start,
                "endtime": start, "duration": billsec + 10, "billsec": billsec, "type": "callout",
            });
            parse_record(&json.to_string(), default_provider_tz()).expect("a valid call")
        })
        .collect()
}

/// Garage, when `bench/prepare` installed it; `None` (and a note) otherwise.
async fn start_garage(dir: &Path) -> anyhow::Result<Option<crate::garage::Garage>> {
    let binary = crate::garage::binary();
    if !binary.exists() {
        println!(
            "{} missing: transfers on s3s-fs only (bench/prepare installs Garage)",
            binary.display()
        );
        return Ok(None);
    }
    let garage = crate::garage::Garage::start(binary, &dir.join("garage")).await?;
    println!("{}, single node on {}", garage.version, garage.endpoint);
    Ok(Some(garage))
}

/// Serves S3 over `root` on 127.0.0.1; returns the endpoint and the accept loop's task.
async fn start_s3(root: &Path) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| anyhow::anyhow!("s3s-fs: {e:?}"))?;
    let service = {
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(
            S3_ACCESS_KEY,
            S3_SECRET_KEY,
        ));
        b.build()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
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
    Ok((format!("http://{addr}"), task))
}
