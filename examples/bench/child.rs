//! Runs the real `callvault` binary as a child process, as an operator would, and watches
//! its peak resident memory (`VmHWM` in /proc/<pid>/status) while it works.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::Command;

use crate::rig::{Rig, Server};

/// What one `callvault` invocation did.
#[derive(Debug, Clone)]
pub struct Child {
    pub wall: Duration,
    /// Peak resident set size, in KiB.
    pub peak_rss_kib: u64,
    /// User + system CPU time, as last sampled before the process exited.
    pub cpu: Duration,
    pub exit_code: i32,
    pub stdout: String,
}

/// Longer than any measured run takes: a run that hangs (or retries every record because
/// something is misconfigured) is stopped and reported instead of stalling the benchmark.
const CHILD_LIMIT: Duration = Duration::from_secs(20 * 60);

/// How often the memory high-water mark is read; it is a kernel-kept maximum, so a
/// poll only misses what happens after the last read before the process exits.
const POLL: Duration = Duration::from_millis(20);

impl Rig {
    /// `callvault` with the environment that points it at the rig (s3s-fs), and `args`.
    pub fn callvault_cmd(&self, ledger_url: &str, bucket: &str, args: &[&str]) -> Command {
        self.callvault_cmd_on(Server::S3sFs, ledger_url, bucket, args)
    }

    /// `callvault` pointed at the simulator and `server`, with `args`.
    pub fn callvault_cmd_on(
        &self,
        server: Server,
        ledger_url: &str,
        bucket: &str,
        args: &[&str],
    ) -> Command {
        let mut cmd = Command::new(&self.callvault);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CALLVAULT_LEDGER", ledger_url)
            .env("CALLVAULT_API_URL", self.sim.api_url())
            .env("CALLVAULT_APPID", &self.sim.config().appid)
            .env("CALLVAULT_ACCESSKEY", &self.sim.config().accesskey)
            .env("CALLVAULT_STORE", format!("s3://{bucket}/calls"))
            .env("CALLVAULT_PROGRESS", "off")
            .env("CALLVAULT_LOG", "warn")
            // The simulator serves its links on loopback, which downloads refuse by default.
            .env("CALLVAULT_ALLOW_DOWNLOAD_NETWORKS", "127.0.0.0/8")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in self.s3_env_on(server) {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `cmd` to its end, timing it and sampling its memory high-water mark.
    pub async fn run_child(&self, mut cmd: Command) -> anyhow::Result<Child> {
        let started = Instant::now();
        let mut child = cmd.spawn().context("starting callvault")?;
        let pid = child.id().context("the child's pid")?;
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        let read_out = tokio::spawn(read_all(stdout));
        let read_err = tokio::spawn(read_all(stderr));
        let mut peak = 0u64;
        let mut cpu = Duration::ZERO;
        let status = loop {
            if started.elapsed() > CHILD_LIMIT {
                child.kill().await?;
                bail!("callvault ran for more than {CHILD_LIMIT:?}: stopped");
            }
            if let Some(kib) = vm_hwm_kib(pid) {
                peak = peak.max(kib);
            }
            if let Some(used) = cpu_time(pid) {
                cpu = used;
            }
            tokio::select! {
                status = child.wait() => break status?,
                () = tokio::time::sleep(POLL) => {}
            }
        };
        let wall = started.elapsed();
        let stdout = read_out.await??;
        let stderr = read_err.await??;
        let exit_code = status.code().unwrap_or(-1);
        if !stderr.trim().is_empty() {
            eprintln!("    callvault stderr: {}", stderr.trim());
        }
        Ok(Child {
            wall,
            peak_rss_kib: peak,
            cpu,
            exit_code,
            stdout,
        })
    }

    /// `callvault run --json` at `concurrency` on s3s-fs; fails unless every record was
    /// archived.
    pub async fn callvault_run(
        &self,
        ledger_url: &str,
        bucket: &str,
        concurrency: usize,
        part_mib: usize,
        expected: usize,
    ) -> anyhow::Result<(Child, serde_json::Value)> {
        let settings = Some((concurrency, part_mib));
        self.callvault_run_on(Server::S3sFs, ledger_url, bucket, settings, expected)
            .await
    }

    /// `callvault run --json` on `server`, with `--concurrency` and `--part-size-mib` from
    /// `settings` (callvault's defaults when `None`); fails unless every record was archived.
    pub async fn callvault_run_on(
        &self,
        server: Server,
        ledger_url: &str,
        bucket: &str,
        settings: Option<(usize, usize)>,
        expected: usize,
    ) -> anyhow::Result<(Child, serde_json::Value)> {
        let mut args = vec!["run".to_owned(), "--json".to_owned()];
        if let Some((concurrency, part_mib)) = settings {
            args.extend(["--concurrency".into(), concurrency.to_string()]);
            args.extend(["--part-size-mib".into(), part_mib.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cmd = self.callvault_cmd_on(server, ledger_url, bucket, &args);
        let child = self.run_child(cmd).await?;
        let report: serde_json::Value = serde_json::from_str(child.stdout.trim())
            .with_context(|| format!("callvault run printed {:?}", child.stdout))?;
        if child.exit_code != 0 || report["archived"] != expected {
            bail!(
                "callvault run: exit {}, archived {} of {expected}: {report}",
                child.exit_code,
                report["archived"]
            );
        }
        Ok((child, report))
    }
}

async fn read_all(mut from: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut out = String::new();
    from.read_to_string(&mut out).await?;
    Ok(out)
}

/// `VmHWM` of a live process, in KiB; `None` once it has exited.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU time of a live process (fields 14 and 15 of /proc/<pid>/stat).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(
        ticks * 1000 / crate::machine::USER_HZ,
    ))
}
