//! A real S3 server beside s3s-fs: Garage, started as an operator would run a single node
//! (a `garage.toml`, `garage server`, a layout of one node, a key and a bucket per
//! measurement, all through the `garage` command), on loopback ports, in a directory under
//! the rig's; killed when dropped. `bench/prepare` builds the binary into a cache.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// The S3 region the node answers for (`[s3_api] s3_region`).
pub const REGION: &str = "garage";

/// Where `bench/prepare` installs Garage: `$CALLVAULT_BENCH_TOOLS/bin/garage`, by default
/// under `~/.cache/callvault/bench-tools`.
pub fn binary() -> PathBuf {
    let tools = std::env::var_os("CALLVAULT_BENCH_TOOLS").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/callvault/bench-tools")
        },
        PathBuf::from,
    );
    tools.join("bin/garage")
}

/// A running single-node Garage.
pub struct Garage {
    binary: PathBuf,
    config: PathBuf,
    server: Child,
    pub pid: u32,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub version: String,
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.server.start_kill();
    }
}

impl Garage {
    /// Writes the configuration into `dir`, starts the server, gives it a layout and a
    /// key `bench`; buckets come from [`Garage::create_bucket`].
    pub async fn start(binary: PathBuf, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let [rpc, s3, admin] = [free_port()?, free_port()?, free_port()?];
        let config = dir.join("garage.toml");
        std::fs::write(&config, config_text(dir, rpc, s3, admin))?;
        let log = std::fs::File::create(dir.join("garage.log"))?;
        let server = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = server.id().context("Garage's pid")?;
        let mut garage = Self {
            binary,
            config,
            server,
            pid,
            endpoint: format!("http://127.0.0.1:{s3}"),
            access_key: String::new(),
            secret_key: String::new(),
            version: String::new(),
        };
        garage.version = garage.cli(&["--version"]).await?.trim().to_owned();
        garage.lay_out().await?;
        let key = garage.cli(&["key", "create", "bench"]).await?;
        garage.access_key = field(&key, "Key ID:")?;
        garage.secret_key = field(&key, "Secret key:")?;
        Ok(garage)
    }

    /// Waits for the node, assigns it a zone and a capacity, applies the layout.
    async fn lay_out(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let id = loop {
            match self.cli(&["node", "id", "-q"]).await {
                Ok(out) => break out.trim().split('@').next().unwrap_or_default().to_owned(),
                Err(e) if started.elapsed() > Duration::from_secs(30) => {
                    return Err(e.context("Garage did not answer within 30 s"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        // `node id` reads the key file; the RPC that `layout` needs may open a moment later.
        while let Err(e) = self
            .cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id])
            .await
        {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(e.context("Garage's RPC did not answer within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.cli(&["layout", "apply", "--version", "1"]).await?;
        Ok(())
    }

    /// `garage -c CONFIG ARGS...`; its standard output, or why it failed.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "garage {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A new bucket the `bench` key reads, writes and owns (retried while the fresh
    /// layout settles).
    pub async fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let mut tries = 0;
        while let Err(e) = self.cli(&["bucket", "create", name]).await {
            tries += 1;
            if tries > 50 {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let allow = ["--read", "--write", "--owner", name, "--key", "bench"];
        self.cli(&[&["bucket", "allow"][..], &allow[..]].concat())
            .await?;
        Ok(())
    }

    /// Deletes an (emptied) bucket.
    pub async fn delete_bucket(&self, name: &str) -> anyhow::Result<()> {
        self.cli(&["bucket", "delete", "--yes", name]).await?;
        Ok(())
    }

    /// User + system CPU time of the server process so far.
    pub fn cpu(&self) -> Duration {
        crate::child::cpu_time(self.pid).unwrap_or_default()
    }
}

/// A single node on loopback: replication factor 1, LMDB metadata (Garage's default
/// engine), data and metadata in `dir`, a random RPC secret and admin token.
fn config_text(dir: &Path, rpc: u16, s3: u16, admin: u16) -> String {
    format!(
        r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "lmdb"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{token}"
"#,
        meta = dir.join("meta").display(),
        data = dir.join("data").display(),
        secret = random_hex(32),
        token = random_hex(32),
    )
}

fn random_hex(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(raw)
}

/// A port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The value after `label` in `garage key create`'s table.
fn field(text: &str, label: &str) -> anyhow::Result<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("no {label:?} in garage's answer: {text}"))
}
