//! PostgreSQL for the benchmark, started by the harness as the tests start theirs
//! (tests/it/pg.rs): Debian's server binaries, a fresh cluster in a temp directory (its data,
//! its unix socket, its log), a free loopback port, and, when the harness runs as root, the
//! `postgres` OS user (PostgreSQL refuses root). It is stopped and its directory removed when
//! the handle drops, and dies with the harness if that is killed (`PR_SET_PDEATHSIG`).
//!
//! Unlike the tests' server it keeps PostgreSQL's durable defaults (`fsync`,
//! `synchronous_commit`, `full_page_writes`): the SQLite ledger it is compared with commits
//! with `synchronous=FULL`.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection;
use tempfile::TempDir;

/// How long the server may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(90);
/// How long a fast shutdown may take before the server is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);
const INSTALL_HINT: &str = "install Debian's `postgresql` package (bench/run does)";

/// The server settings that differ from initdb's: room for 64 claimers and several
/// worker processes at once, a buffer cache that holds a million-call ledger's indexes, and
/// `pg_stat_statements` (triggers' statements included) to say where the ledger's time goes.
const SETTINGS: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "max_connections=300",
    "shared_buffers=256MB",
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track=all",
];

/// A running PostgreSQL server.
pub struct Postgres {
    dir: TempDir,
    port: u16,
    /// `postgres (PostgreSQL) 15.x`
    pub version: String,
    pid: u32,
    exited: Arc<AtomicBool>,
    /// Dropping it tells the keeper thread to stop the server.
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: libc::uid_t,
    gid: libc::gid_t,
}

impl Postgres {
    /// initdb into a fresh temp directory, then postgres on a free port, ready for
    /// connections.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = bindir()?;
        let owner = owner()?;
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .context("a temp dir for PostgreSQL")?;
        if let Some(owner) = owner {
            std::os::unix::fs::chown(dir.path(), Some(owner.uid), Some(owner.gid))
                .context("giving the temp dir to the postgres user")?;
        }
        initdb(&bin, dir.path(), owner).await?;
        let version = Command::new(bin.join("postgres"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let mut server = Self {
            dir,
            port: 0,
            version,
            pid: 0,
            exited: Arc::new(AtomicBool::new(false)),
            stop: None,
            keeper: None,
        };
        for _ in 0..5 {
            server.port = free_port()?;
            server.spawn(&bin, owner)?;
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(log) if log.contains("Address already in use") => server.halt(),
                Err(log) => bail!("PostgreSQL did not start; its log:\n{log}"),
            }
        }
        bail!("PostgreSQL found no free port in 5 tries")
    }

    /// `postgres://postgres@127.0.0.1:PORT/{database}`
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A new empty database named `name` (dropped first if it exists); its URL.
    pub async fn database(&self, name: &str) -> anyhow::Result<String> {
        self.drop_database(name).await?;
        self.admin(&format!("CREATE DATABASE {name}")).await?;
        Ok(self.url(name))
    }

    /// Drops the database `name` (closing its connections) if it exists.
    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        self.admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
    }

    /// Runs one statement on the `postgres` database (the names are the harness's own).
    async fn admin(&self, sql: &str) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .with_context(|| sql.to_owned())?;
        conn.close().await?;
        Ok(())
    }

    /// CPU time the server has used so far: the postmaster, the backends it has reaped
    /// (children's times) and the ones still running.
    pub fn cpu(&self) -> Duration {
        let mut ticks = stat_ticks(self.pid, 4);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if parent_of(pid) == Some(self.pid) {
                ticks += stat_ticks(pid, 2);
            }
        }
        Duration::from_millis(ticks * 1000 / crate::machine::USER_HZ)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the postmaster from a keeper thread that owns it for its whole life (the
    /// death signal fires when the thread that spawned the process ends) and stops it when
    /// told to, or when the handle is dropped.
    fn spawn(&mut self, bin: &Path, owner: Option<Owner>) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.log_path()).context("the server log")?;
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path());
        for setting in SETTINGS {
            cmd.args(["-c", setting]);
        }
        sandbox(&mut cmd, self.dir.path(), owner);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let parent = std::process::id();
        // SAFETY: only async-signal-safe calls (setgroups, setgid, setuid, prctl, getppid)
        // between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                drop_privileges(owner)?;
                // After the change of user, which clears the death signal.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent as libc::pid_t {
                    return Err(io::Error::other("the harness is gone"));
                }
                Ok(())
            });
        }
        let (stop, stop_rx) = mpsc::channel::<()>();
        let (pid_tx, pid_rx) = mpsc::channel::<io::Result<u32>>();
        let exited = Arc::new(AtomicBool::new(false));
        let flag = exited.clone();
        let keeper = std::thread::Builder::new()
            .name("postgres-keeper".into())
            .spawn(move || {
                let mut child = match cmd.spawn() {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = pid_tx.send(Err(e));
                        return;
                    }
                };
                let _ = pid_tx.send(Ok(child.id()));
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(Duration::from_millis(100))
                {
                    if !matches!(child.try_wait(), Ok(None)) {
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                }
                // Fast shutdown: sessions ended, then a checkpoint; killed if it overruns.
                // SAFETY: signals our own child, not reaped yet.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
                let started = Instant::now();
                while started.elapsed() < STOP_LIMIT {
                    if !matches!(child.try_wait(), Ok(None)) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            })?;
        self.pid = pid_rx
            .recv()
            .context("the keeper thread answers")?
            .with_context(|| format!("starting {}; {INSTALL_HINT}", bin.display()))?;
        self.exited = exited;
        self.stop = Some(stop);
        self.keeper = Some(keeper);
        Ok(())
    }

    /// Polls a connection until the server accepts one; its log when it exits first or
    /// does not answer within [`START_LIMIT`].
    async fn wait_ready(&self) -> Result<(), String> {
        let started = Instant::now();
        let url = self.url("postgres");
        loop {
            match sqlx::PgConnection::connect(&url).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                Err(e) => {
                    if self.exited.load(Ordering::SeqCst) {
                        return Err(format!("(exited)\n{}", self.log()));
                    }
                    if started.elapsed() > START_LIMIT {
                        return Err(format!(
                            "(no connection after {START_LIMIT:?}: {e})\n{}",
                            self.log()
                        ));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server and waits for it.
    fn halt(&mut self) {
        self.stop.take();
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.halt();
    }
}

/// `initdb -A trust -U postgres --no-sync` into `<dir>/data`, as the server's owner.
async fn initdb(bin: &Path, dir: &Path, owner: Option<Owner>) -> anyhow::Result<()> {
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.args([
        "-A",
        "trust",
        "-U",
        "postgres",
        "--no-sync",
        "-E",
        "UTF8",
        "--locale=C",
        "-D",
    ])
    .arg(dir.join("data"));
    sandbox(&mut cmd, dir, owner);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe { cmd.pre_exec(move || drop_privileges(owner)) };
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .with_context(|| format!("running initdb; {INSTALL_HINT}"))?;
    if !out.status.success() {
        bail!(
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A clean environment, and the temp directory as working directory (the postgres user may
/// not be allowed into the harness's own).
fn sandbox(cmd: &mut Command, dir: &Path, owner: Option<Owner>) {
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .current_dir(dir);
    if owner.is_some() {
        cmd.env("HOME", dir).env("USER", "postgres");
    }
}

/// Becomes the server's owner in a child about to exec (nothing when not root).
fn drop_privileges(owner: Option<Owner>) -> io::Result<()> {
    let Some(owner) = owner else {
        return Ok(());
    };
    // SAFETY: plain system calls on values read before the fork.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(owner.gid) != 0
            || libc::setuid(owner.uid) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The `postgres` OS user when the harness runs as root, else none.
fn owner() -> anyhow::Result<Option<Owner>> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value to be filled in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and the buffer's length is right.
    let rc = unsafe {
        libc::getpwnam_r(
            c"postgres".as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        bail!(
            "running as root, and PostgreSQL refuses root, but there is no `postgres` OS user \
             to run it as; {INSTALL_HINT} (it creates the user)"
        );
    }
    Ok(Some(Owner {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    }))
}

/// The newest `/usr/lib/postgresql/*/bin` holding `postgres` and `initdb`, else
/// `pg_config --bindir`.
fn bindir() -> anyhow::Result<PathBuf> {
    let complete = |dir: &Path| ["postgres", "initdb"].iter().all(|b| dir.join(b).is_file());
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    debian.sort();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    debian
        .into_iter()
        .rev()
        .map(|(_, dir)| dir)
        .chain(from_pg_config)
        .find(|dir| complete(dir))
        .with_context(|| {
            format!("no PostgreSQL server binaries (postgres, initdb): {INSTALL_HINT}")
        })
}

/// The server's temp directory is `callvault-bench-pg-<pid>-…`.
const DIR_PREFIX: &str = "callvault-bench-pg-";

/// Removes what harnesses that did not exit cleanly (killed, interrupted) left behind: their
/// servers died with them, their directories (gigabytes after a full run) did not.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A port nothing listens on now (see the retry in [`Postgres::start`]).
fn free_port() -> anyhow::Result<u16> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?.port())
}

/// The fields after the command name in /proc/<pid>/stat.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')').map_or_else(Vec::new, |i| {
        stat[i + 1..]
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    })
}

/// utime + stime (`fields` = 2), and cutime + cstime too (4), in clock ticks.
fn stat_ticks(pid: u32, fields: usize) -> u64 {
    stat_fields(pid)
        .iter()
        .skip(11)
        .take(fields)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid).get(1)?.parse().ok()
}
