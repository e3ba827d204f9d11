//! PostgreSQL for the tests, started by the test binary itself: one server per test binary
//! (started on first use), a fresh database for every test, and a dedicated server for a
//! test that must restart its own. Nothing is started by hand, and nothing is skipped: the
//! server's binaries must be installed (Debian's `postgresql` package).
//!
//! Each server lives in a temp directory (its data, its unix socket, its log) on a free
//! loopback port, with fsync off. PostgreSQL refuses to run as root, so when the tests run
//! as root, initdb and postgres run as the `postgres` OS user. A server dies with the test
//! process: it is spawned from one long-lived thread with `PR_SET_PDEATHSIG` (which fires
//! when the spawning *thread* ends, and test threads end after each test), and is shut down
//! and its directory removed at exit (`atexit`), or when its [`Dedicated`] handle drops.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tempfile::TempDir;

/// How long a server may take to accept connections after it is spawned.
const START_LIMIT: Duration = Duration::from_secs(90);
/// How long a fast shutdown may take before the server is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);
const INSTALL_HINT: &str = "the PostgreSQL tests start their own server and need its binaries: \
     install Debian's `postgresql` package (`apt-get install postgresql`; .ci/run does it)";

/// A fresh, empty database on the test binary's server (started on first use); its URL,
/// `postgres://postgres@127.0.0.1:PORT/test_<n>`.
pub async fn database() -> String {
    shared().await.create_database().await
}

/// A server of the test's own, for a test that stops or restarts it; stopped and removed
/// when dropped.
pub async fn dedicated() -> Dedicated {
    let server = Postmaster::start().await;
    let url = server.create_database().await;
    Dedicated { server, url }
}

/// A PostgreSQL server a single test owns.
pub struct Dedicated {
    server: Postmaster,
    url: String,
}

impl Dedicated {
    /// The test database on this server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fast shutdown (sessions are ended, in-flight transactions rolled back), `down` with
    /// connections refused, then started again on the same port and directory; returns
    /// once it accepts connections.
    pub async fn restart(&self, down: Duration) {
        self.server.stop(libc::SIGINT, STOP_LIMIT).await;
        tokio::time::sleep(down).await;
        self.server.spawn_postgres().await;
        self.server
            .wait_ready()
            .await
            .unwrap_or_else(|log| panic!("PostgreSQL did not start again; its log:\n{log}"));
    }
}

/// The test binary's shared server: started once, by the first test that needs it.
async fn shared() -> &'static Postmaster {
    static SHARED: tokio::sync::OnceCell<Postmaster> = tokio::sync::OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            let server = Postmaster::start().await;
            // A static is never dropped: stop the server and remove its directory at exit.
            extern "C" fn stop_shared() {
                if let Some(server) = SHARED.get() {
                    server.halt();
                    let _ = std::fs::remove_dir_all(server.dir.path());
                }
            }
            // SAFETY: registers a plain function; it only signals, waits and removes files.
            unsafe { libc::atexit(stop_shared) };
            server
        })
        .await
}

/// One PostgreSQL server: its directory, port and process.
struct Postmaster {
    dir: TempDir,
    port: u16,
    bin: PathBuf,
    /// The OS user the server runs as, when the tests run as root.
    owner: Option<Owner>,
    process: Mutex<Option<Child>>,
}

#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: libc::uid_t,
    gid: libc::gid_t,
}

impl Postmaster {
    /// initdb into a fresh temp directory, then postgres on a free port (another port when
    /// the one picked was taken meanwhile), ready for connections.
    async fn start() -> Self {
        let bin = bindir();
        let owner = owner();
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("a temp dir for PostgreSQL");
        if let Some(owner) = owner {
            std::os::unix::fs::chown(dir.path(), Some(owner.uid), Some(owner.gid))
                .expect("giving the temp dir to the postgres user");
        }
        initdb(&bin, dir.path(), owner).await;
        let mut server = Self {
            dir,
            port: 0,
            bin,
            owner,
            process: Mutex::new(None),
        };
        for _ in 0..5 {
            server.port = free_port();
            server.spawn_postgres().await;
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("PostgreSQL did not start; its log:\n{log}"),
            }
        }
        panic!("PostgreSQL found no free port in 5 tries");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Spawns the postmaster from the long-lived spawner thread, as the server's owner, with
    /// `PR_SET_PDEATHSIG`; its output goes to `postgres.log` (replaced).
    async fn spawn_postgres(&self) {
        let log = std::fs::File::create(self.log_path()).expect("the server log");
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
                // Durability is not what these tests are about: a crash loses the database
                // with its temp directory anyway.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        sandbox(&mut cmd, self.dir.path(), self.owner);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("the server log"))
            .stderr(log);
        let (parent, owner) = (std::process::id(), self.owner);
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
                    return Err(io::Error::other("the test process is gone"));
                }
                Ok(())
            });
        }
        let child = spawn_from_parent_thread(cmd)
            .await
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.join("postgres").display()));
        *self.process.lock().unwrap() = Some(child);
    }

    /// Polls a connection until the server accepts one; the log when it exits first (or
    /// does not answer within [`START_LIMIT`]).
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
                    if let Some(status) = self.exited() {
                        return Err(format!("(exited: {status})\n{}", self.log()));
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

    fn exited(&self) -> Option<ExitStatus> {
        let mut process = self.process.lock().unwrap();
        let status = process.as_mut()?.try_wait().ok()??;
        *process = None;
        Some(status)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    async fn create_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!("test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL: {e}\n{}", self.log()));
        // The name is ours: `test_` and a number.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        self.url(&name)
    }

    /// Sends `signal` (SIGINT: fast shutdown; SIGQUIT: immediate) and waits for the
    /// postmaster to exit, killing it after `limit`.
    async fn stop(&self, signal: libc::c_int, limit: Duration) {
        let Some(mut child) = self.process.lock().unwrap().take() else {
            return;
        };
        tokio::task::spawn_blocking(move || stop_child(&mut child, signal, limit))
            .await
            .unwrap();
    }

    /// Immediate shutdown, from synchronous code (drop, exit).
    fn halt(&self) {
        let Ok(mut process) = self.process.lock() else {
            return;
        };
        if let Some(mut child) = process.take() {
            stop_child(&mut child, libc::SIGQUIT, Duration::from_secs(5));
        }
    }
}

impl Drop for Postmaster {
    fn drop(&mut self) {
        self.halt();
    }
}

fn stop_child(child: &mut Child, signal: libc::c_int, limit: Duration) {
    // SAFETY: signals our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    let started = Instant::now();
    while started.elapsed() < limit {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `initdb -A trust -U postgres --no-sync` into `<dir>/data`, as the server's owner.
async fn initdb(bin: &Path, dir: &Path, owner: Option<Owner>) {
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
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("running initdb: {e}; {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "initdb failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A clean environment and the temp directory as working directory (the postgres user
/// may not be allowed into the test's own).
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

/// The `postgres` OS user when the tests run as root (PostgreSQL refuses root), else none.
fn owner() -> Option<Owner> {
    static OWNER: OnceLock<Option<Owner>> = OnceLock::new();
    *OWNER.get_or_init(|| {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let name = c"postgres";
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: an all-zero passwd is a valid value to be filled in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and the buffer's length is right.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        assert!(
            rc == 0 && !found.is_null(),
            "the tests run as root and PostgreSQL refuses root, but there is no `postgres` OS \
             user to run it as; {INSTALL_HINT} (it creates the user)"
        );
        Some(Owner {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        })
    })
}

/// Where the server binaries are: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`, else the directory on PATH holding `postgres`. Panics
/// (never skips) when there are none.
fn bindir() -> PathBuf {
    let complete = |dir: &Path| ["postgres", "initdb"].iter().all(|b| dir.join(b).is_file());
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
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
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    from_pg_config
        .into_iter()
        .chain(debian.into_iter().rev().map(|(_, dir)| dir))
        .chain(on_path)
        .find(|dir| complete(dir))
        .unwrap_or_else(|| {
            panic!("no PostgreSQL server binaries (postgres, initdb) found: {INSTALL_HINT}")
        })
}

/// A port nothing listens on now (PostgreSQL binds it a moment later; see the retry in
/// [`Postmaster::start`]).
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    probe.local_addr().expect("its address").port()
}

type SpawnRequest = (Command, tokio::sync::oneshot::Sender<io::Result<Child>>);

/// Spawns `cmd` from a thread that lives as long as the test process, so that a death
/// signal set in the child fires when the process ends, not when the calling test does.
async fn spawn_from_parent_thread(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("postgres-parent".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("the spawner thread");
        tx
    });
    let (reply, spawned) = tokio::sync::oneshot::channel();
    spawner
        .send((cmd, reply))
        .expect("the spawner thread is alive");
    spawned.await.expect("the spawner thread answers")
}

/// Temp directories of servers are named `callvault-pg-<pid>-…`.
const DIR_PREFIX: &str = "callvault-pg-";

/// Removes what test processes that did not exit cleanly (killed, aborted) left behind:
/// their servers died with them, their directories did not.
fn remove_stale_dirs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
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
    });
}
