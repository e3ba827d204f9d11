//! Issue 19, point 6: what proof costs. Three measurements in one run:
//! - the small-recordings pass with a signing key and the simulator's time-stamping
//!   authority against the same pass without them, interleaved (the log itself always
//!   runs, unsigned without a key; its own wall time comes from the run report's
//!   `proof.seconds`);
//! - inclusion and consistency proofs from a log of a million leaves (`proof_log.rs`);
//! - `callvault export --with-recordings` of 1,000 recordings, to a directory and to a
//!   `.tar`, against `callvault get` of the same calls.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::child::Child;
use crate::ledger_growth::On;
use crate::postgres::Postgres;
use crate::proof_log::LogProofs;
use crate::rig::Rig;
use crate::{DEFAULT_CONCURRENCY, PART_MIB};

/// The pass with key and time-stamps at most this much slower (median over the rounds).
const PASS_WITHIN: f64 = 0.02;

/// Counts of the proof part.
pub struct ProofPlan {
    /// Recordings and their size for the pass, and the rounds.
    pub small: (usize, u64),
    pub rounds: usize,
    /// Leaves of the big log, and inclusion proofs timed on it.
    pub leaves: u64,
    pub samples: usize,
    /// Recordings exported.
    pub export: usize,
}

#[derive(Debug, Clone)]
pub struct ProofBench {
    pub pass: PassCost,
    pub logs: Vec<LogProofs>,
    /// The export against `get`; why not, when this build cannot export.
    pub export: Result<ExportCost, String>,
}

/// The pass with and without a key and time-stamps.
#[derive(Debug, Clone, Default)]
pub struct PassCost {
    pub records: usize,
    pub size: u64,
    /// Each round's wall time and log step (`proof.seconds`): without, then with.
    pub plain: Vec<(Duration, f64)>,
    pub proved: Vec<(Duration, f64)>,
    /// Tokens the runs with the authority obtained, and checkpoints they signed.
    pub stamped: u64,
    pub signed: u64,
}

#[derive(Debug, Clone)]
pub struct ExportCost {
    pub recordings: usize,
    pub size: u64,
    pub dir: Vec<Duration>,
    pub tar: Vec<Duration>,
    pub get: Vec<Duration>,
    /// The `.tar` bundle's size.
    pub tar_bytes: u64,
}

pub fn median(walls: &[Duration]) -> Duration {
    let mut sorted = walls.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn median_f(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

impl PassCost {
    pub fn walls(runs: &[(Duration, f64)]) -> Vec<Duration> {
        runs.iter().map(|r| r.0).collect()
    }

    /// With over without, of the medians.
    pub fn ratio(&self) -> f64 {
        median(&Self::walls(&self.proved)).as_secs_f64()
            / median(&Self::walls(&self.plain)).as_secs_f64()
    }

    /// The log step's median seconds, and its share of the median pass.
    pub fn log_share(runs: &[(Duration, f64)]) -> (f64, f64) {
        let step = median_f(&runs.iter().map(|r| r.1).collect::<Vec<_>>());
        (step, step / median(&Self::walls(runs)).as_secs_f64())
    }

    pub fn target(&self) -> (String, String, bool) {
        let ratio = self.ratio();
        let (step, share) = Self::log_share(&self.proved);
        (
            format!(
                "small recordings ({} × {} KiB, concurrency {DEFAULT_CONCURRENCY}) with signed, \
                 time-stamped checkpoints at most {:.0}% slower than without",
                self.records,
                self.size / 1024,
                PASS_WITHIN * 100.0
            ),
            format!(
                "{:.2} vs {:.2} s = {:+.1}% (the log step {step:.3} s, {:.2}% of the pass)",
                median(&Self::walls(&self.proved)).as_secs_f64(),
                median(&Self::walls(&self.plain)).as_secs_f64(),
                (ratio - 1.0) * 100.0,
                share * 100.0
            ),
            ratio <= 1.0 + PASS_WITHIN,
        )
    }
}

impl ProofBench {
    pub fn targets(&self) -> Vec<(String, String, bool)> {
        vec![self.pass.target()]
    }
}

/// The three measurements.
pub async fn measure(
    rig: &Rig,
    pg: Option<&Postgres>,
    plan: &ProofPlan,
) -> anyhow::Result<ProofBench> {
    let proving = Proving::prepare(rig).await?;
    let pass = pass_cost(rig, &proving, plan).await?;
    let (what, measured, ok) = pass.target();
    println!("  {}: {what}: {measured}", if ok { "PASS" } else { "FAIL" });
    let mut logs =
        vec![crate::proof_log::measure(rig, On::Sqlite, plan.leaves, plan.samples).await?];
    if let Some(pg) = pg {
        let on = On::Postgres(pg);
        logs.push(crate::proof_log::measure(rig, on, plan.leaves, plan.samples).await?);
    }
    let export = if export_available(rig).await? {
        Ok(export_cost(rig, &proving, plan).await?)
    } else {
        println!("  export: this build has no `callvault export`; not measured");
        Err("this build of callvault has no `export` command".to_owned())
    };
    Ok(ProofBench { pass, logs, export })
}

/// The operator's key and the simulator's authority, as a deployment names them.
struct Proving {
    key: PathBuf,
    roots: PathBuf,
    tsa_url: String,
}

impl Proving {
    async fn prepare(rig: &Rig) -> anyhow::Result<Self> {
        let key = rig.dir.path().join("proof-log.key");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("key.pub"));
        let path = key.to_str().context("a key path in UTF-8")?;
        let cmd = rig.callvault_cmd(
            "sqlite://unused.db",
            "unused",
            &["keys", "generate", "--out", path],
        );
        succeed(rig.run_child(cmd).await?, "callvault keys generate")?;
        let roots = rig.dir.path().join("tsa-root.pem");
        std::fs::write(&roots, rig.sim.tsa().root_pem())?;
        Ok(Self {
            key,
            roots,
            tsa_url: rig.sim.tsa_url(),
        })
    }

    fn sign_and_stamp(&self, cmd: &mut tokio::process::Command) {
        cmd.env("CALLVAULT_SIGNING_KEY_FILE", &self.key)
            .env("CALLVAULT_TSA_URL", &self.tsa_url)
            .env("CALLVAULT_TSA_TRUST", &self.roots);
    }
}

fn succeed(child: Child, what: &str) -> anyhow::Result<Child> {
    if child.exit_code != 0 {
        bail!("{what}: exit {}: {}", child.exit_code, child.stdout.trim());
    }
    Ok(child)
}

/// One `callvault run` of `names` in a fresh ledger and bucket, signing and stamping when
/// `proving` is given; its wall time and report. The ledger and bucket are left for the
/// caller.
async fn pass(
    rig: &Rig,
    label: &str,
    names: &[String],
    size: u64,
    proving: Option<&Proving>,
) -> anyhow::Result<(String, String, Child, serde_json::Value)> {
    let ledger = rig.ledger_with(label, names, size).await?;
    let bucket = rig.bucket()?;
    let (concurrency, part) = (DEFAULT_CONCURRENCY.to_string(), PART_MIB.to_string());
    let args = [
        "run",
        "--json",
        "--concurrency",
        &concurrency,
        "--part-size-mib",
        &part,
    ];
    let mut cmd = rig.callvault_cmd(&ledger, &bucket, &args);
    if let Some(p) = proving {
        p.sign_and_stamp(&mut cmd);
    }
    let child = succeed(rig.run_child(cmd).await?, "callvault run")?;
    let report: serde_json::Value = serde_json::from_str(child.stdout.trim())
        .with_context(|| format!("callvault run printed {:?}", child.stdout))?;
    let problems = &report["proof"]["problems"];
    if report["archived"] != names.len() || problems.as_array().is_some_and(|p| !p.is_empty()) {
        bail!(
            "callvault run: archived {} of {}: {report}",
            report["archived"],
            names.len()
        );
    }
    Ok((ledger, bucket, child, report))
}

/// The pass without, then with (the order turned each round), `plan.rounds` times.
async fn pass_cost(rig: &Rig, proving: &Proving, plan: &ProofPlan) -> anyhow::Result<PassCost> {
    let (n, size) = plan.small;
    let names = rig.recordings("proof", n, size);
    let mut cost = PassCost {
        records: n,
        size,
        ..PassCost::default()
    };
    for round in 0..plan.rounds {
        println!("proof: the pass with and without, round {}", round + 1);
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with in order {
            let (ledger, bucket, child, report) =
                pass(rig, "proof-pass", &names, size, with.then_some(proving)).await?;
            let step = report["proof"]["seconds"].as_f64().unwrap_or(f64::NAN);
            let logged = report["proof"]["logged"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            println!(
                "  {:<28} {:>7.2}s  log step {step:.3}s, {} checkpoint(s), {} token(s)",
                if with {
                    "with key and time-stamps"
                } else {
                    "without"
                },
                child.wall.as_secs_f64(),
                logged.len(),
                report["proof"]["stamped"].as_u64().unwrap_or(0)
            );
            if with {
                cost.stamped += report["proof"]["stamped"].as_u64().unwrap_or(0);
                cost.signed += logged.iter().filter(|l| l["signed"] == true).count() as u64;
                cost.proved.push((child.wall, step));
            } else {
                cost.plain.push((child.wall, step));
            }
            rig.drop_bucket(&bucket)?;
            rig.remove_ledger(&ledger);
        }
    }
    if cost.stamped == 0 || cost.signed == 0 {
        bail!(
            "the runs with a key and an authority signed {} and stamped {} checkpoints",
            cost.signed,
            cost.stamped
        );
    }
    Ok(cost)
}

async fn export_available(rig: &Rig) -> anyhow::Result<bool> {
    let cmd = rig.callvault_cmd("sqlite://unused.db", "unused", &["export", "--help"]);
    Ok(rig.run_child(cmd).await?.exit_code == 0)
}

/// `plan.export` recordings archived once (signed and stamped), then exported to a
/// directory, to a `.tar`, and copied out by `get`, in turned order each round.
async fn export_cost(rig: &Rig, proving: &Proving, plan: &ProofPlan) -> anyhow::Result<ExportCost> {
    let size = plan.small.1;
    let names = rig.recordings("export", plan.export, size);
    let (ledger, bucket, _, _) = pass(rig, "proof-export", &names, size, Some(proving)).await?;
    let uuids = archived_uuids(&ledger).await?;
    let mut cost = ExportCost {
        recordings: names.len(),
        size,
        dir: Vec::new(),
        tar: Vec::new(),
        get: Vec::new(),
        tar_bytes: 0,
    };
    for round in 0..plan.rounds {
        println!("proof: export against get, round {}", round + 1);
        for step in 0..3 {
            match (step + round) % 3 {
                0 => cost.dir.push(
                    export(rig, proving, &ledger, &bucket, "bundle", names.len())
                        .await?
                        .0,
                ),
                1 => {
                    let (wall, bytes) =
                        export(rig, proving, &ledger, &bucket, "bundle.tar", names.len()).await?;
                    cost.tar.push(wall);
                    cost.tar_bytes = bytes;
                }
                _ => cost.get.push(get(rig, &ledger, &bucket, &uuids).await?),
            }
        }
    }
    rig.drop_bucket(&bucket)?;
    rig.remove_ledger(&ledger);
    Ok(cost)
}

async fn archived_uuids(url: &str) -> anyhow::Result<Vec<String>> {
    let pool = sqlx::SqlitePool::connect(url).await?;
    let uuids =
        sqlx::query_scalar("SELECT uuid FROM calls WHERE archived_at IS NOT NULL ORDER BY uuid")
            .fetch_all(&pool)
            .await?;
    pool.close().await;
    Ok(uuids)
}

/// One export into `name` in the rig's directory (removed afterwards); its wall time and
/// the bundle's bytes.
async fn export(
    rig: &Rig,
    proving: &Proving,
    ledger: &str,
    bucket: &str,
    name: &str,
    expected: usize,
) -> anyhow::Result<(Duration, u64)> {
    let out = rig.dir.path().join(name);
    remove(&out);
    let path = out.to_str().context("a bundle path in UTF-8")?;
    let args = [
        "export",
        "--out",
        path,
        "--reason",
        "benchmark",
        "--with-recordings",
        "--since",
        "2000-01-01",
        "--json",
    ];
    let mut cmd = rig.callvault_cmd(ledger, bucket, &args);
    cmd.env("CALLVAULT_SIGNING_KEY_FILE", &proving.key);
    let child = succeed(rig.run_child(cmd).await?, "callvault export")?;
    let report: serde_json::Value = serde_json::from_str(child.stdout.trim())
        .with_context(|| format!("callvault export printed {:?}", child.stdout))?;
    if report["recordings"] != expected {
        bail!(
            "callvault export: {} recordings of {expected}: {report}",
            report["recordings"]
        );
    }
    let bytes = disk_bytes(&out);
    println!(
        "  export to {name:<11} {:>7.2}s  {:.1} MB",
        child.wall.as_secs_f64(),
        bytes as f64 / 1e6
    );
    remove(&out);
    Ok((child.wall, bytes))
}

/// `callvault get` of every call into a new directory (removed afterwards).
async fn get(rig: &Rig, ledger: &str, bucket: &str, uuids: &[String]) -> anyhow::Result<Duration> {
    let out = rig.dir.path().join("got");
    remove(&out);
    let path = out.to_str().context("a directory path in UTF-8")?;
    let mut args = vec!["get", "--output", path, "--reason", "benchmark"];
    args.extend(uuids.iter().map(String::as_str));
    let child = succeed(
        rig.run_child(rig.callvault_cmd(ledger, bucket, &args))
            .await?,
        "callvault get",
    )?;
    // Each recording comes with its metadata beside it.
    let recordings = std::fs::read_dir(&out)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wav"))
        .count();
    if recordings != uuids.len() {
        bail!(
            "callvault get wrote {recordings} recordings for {} calls",
            uuids.len()
        );
    }
    println!("  get                {:>7.2}s", child.wall.as_secs_f64());
    remove(&out);
    Ok(child.wall)
}

fn remove(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
    let _ = std::fs::remove_file(path);
}

fn disk_bytes(path: &Path) -> u64 {
    if path.is_file() {
        return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| disk_bytes(&e.path()))
        .sum()
}

fn secs(walls: &[Duration]) -> String {
    let all: Vec<String> = walls
        .iter()
        .map(|w| format!("{:.2}", w.as_secs_f64()))
        .collect();
    all.join(" ")
}

/// The section of BENCHMARKS.md.
pub fn section(s: &mut String, p: &ProofBench) {
    pass_section(s, &p.pass);
    logs_section(s, &p.logs);
    let _ = writeln!(s, "\n### Export against get\n");
    match &p.export {
        Ok(e) => export_section(s, e),
        Err(why) => {
            let _ = writeln!(s, "Not measured: {why}.");
        }
    }
}

fn pass_section(s: &mut String, c: &PassCost) {
    let _ = writeln!(
        s,
        "\n### The log and time-stamps on the small-recordings pass\n"
    );
    let _ = writeln!(
        s,
        "{} recordings of {} KiB archived by `callvault run` at concurrency {DEFAULT_CONCURRENCY}, \
         each round once with a signing key and the simulator's time-stamping authority \
         (`CALLVAULT_SIGNING_KEY_FILE`, `CALLVAULT_TSA_URL`, `CALLVAULT_TSA_TRUST`) and once \
         without (the log still runs, unsigned and unstamped), the order turned each round. \
         The log step is the run report's `proof.seconds`: reading the manifest back, appending \
         its lines, storing the nodes, writing (and signing) the checkpoint, stamping it.\n",
        c.records,
        c.size / 1024
    );
    let _ = writeln!(
        s,
        "| run | seconds (median) | all rounds | log step (median) | share of the pass |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---:|");
    for (label, runs) in [
        ("without key and TSA", &c.plain),
        ("with key and TSA", &c.proved),
    ] {
        let walls = PassCost::walls(runs);
        let (step, share) = PassCost::log_share(runs);
        let _ = writeln!(
            s,
            "| {label} | {:.2} | {} | {step:.3} s | {:.2}% |",
            median(&walls).as_secs_f64(),
            secs(&walls),
            share * 100.0
        );
    }
    let by_round: Vec<String> = c
        .proved
        .iter()
        .zip(&c.plain)
        .map(|(w, wo)| format!("{:.3}", w.0.as_secs_f64() / wo.0.as_secs_f64()))
        .collect();
    let _ = writeln!(
        s,
        "\nWith over without: **{:.3}** of the medians (by round: {}); {} checkpoints signed, \
         {} tokens obtained.",
        c.ratio(),
        by_round.join(" "),
        c.signed,
        c.stamped
    );
}

fn logs_section(s: &mut String, logs: &[LogProofs]) {
    let Some(first) = logs.first() else { return };
    let _ = writeln!(s, "\n### Proofs from a log of {} leaves\n", first.leaves);
    let _ = writeln!(
        s,
        "The log built as a pass builds it (`CompactRange::append`, its nodes stored with \
         `add_log_nodes` in batches of 20,000), then {} inclusion proofs of random leaves and {} \
         consistency proofs from random sizes to the whole, each timed as the ledger answers it \
         (`merkle::needed` → `log_nodes` → `merkle::prove`) and checked against the root \
         outside the timing. A hash is 32 bytes.\n",
        first.inclusion.micros.len(),
        first.consistency.micros.len()
    );
    let _ = writeln!(
        s,
        "| ledger | build | nodes | inclusion median / p99 | inclusion size | consistency median / p99 | consistency size | log_nodes on disk |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|---:|---|---:|");
    for l in logs {
        let size =
            |h: (usize, usize)| format!("{}–{} hashes ({}–{} bytes)", h.0, h.1, h.0 * 32, h.1 * 32);
        let _ = writeln!(
            s,
            "| {} | {:.1} s | {} | {:.0} / {:.0} µs | {} | {:.0} / {:.0} µs | {} | {} |",
            l.backend,
            l.build.as_secs_f64(),
            l.nodes,
            l.inclusion.median(),
            l.inclusion.p99(),
            size(l.inclusion.hashes),
            l.consistency.median(),
            l.consistency.p99(),
            size(l.consistency.hashes),
            l.table_bytes.map_or_else(
                || l.table_how.clone(),
                |b| format!(
                    "{:.1} MB ({:.0} bytes a leaf)",
                    b as f64 / 1e6,
                    b as f64 / l.leaves as f64
                )
            )
        );
    }
    let hows: Vec<String> = logs
        .iter()
        .map(|l| format!("{}: {}", l.backend, l.table_how))
        .collect();
    let _ = writeln!(s, "\nOn disk: {}.", hows.join("; "));
}

fn export_section(s: &mut String, e: &ExportCost) {
    let _ = writeln!(
        s,
        "{} recordings of {} KiB, archived once (signed, time-stamped), then each round \
         `callvault export --with-recordings` to a directory and to a `.tar`, and `callvault \
         get` of the same calls into a directory, the order turned each round. The `.tar` \
         bundle is {:.1} MB.\n",
        e.recordings,
        e.size / 1024,
        e.tar_bytes as f64 / 1e6
    );
    let _ = writeln!(
        s,
        "| command | seconds (median) | all rounds | recordings/s | against get |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---:|");
    let get = median(&e.get).as_secs_f64();
    for (label, walls) in [
        ("export to a directory", &e.dir),
        ("export to a .tar", &e.tar),
        ("get into a directory", &e.get),
    ] {
        let m = median(walls).as_secs_f64();
        let _ = writeln!(
            s,
            "| {label} | {m:.2} | {} | {:.1} | {:.2}× |",
            secs(walls),
            e.recordings as f64 / m,
            m / get
        );
    }
}
