//! Many accounts in one run (issue 18): ten provider accounts of 200 small recordings each,
//! archived by one `callvault run` over all of them (one ledger, one bucket, keys below
//! `{account}/`), against one account of 2,000 in the same rounds. Two targets: the same
//! throughput within 10%, and no account served first while the others wait, read from the
//! ledger: every account's last recording archived after 80% of the run's time.

use std::fmt::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use callvault::accounts::AccountName;
use callvault::ledger::Ledger;
use callvault::simulator::{AccountConfig, ProviderAccount};
use callvault::timefmt::from_ledger;

use crate::rig::{Rig, calls};
use crate::{DEFAULT_CONCURRENCY, PART_MIB};

/// Throughput of the accounts' run within this share of the one account's.
const THROUGHPUT_WITHIN: f64 = 0.10;
/// Every account's last recording archived after this share of the run's time.
const LAST_AFTER: f64 = 0.80;

/// The two configurations, over the rounds.
#[derive(Debug, Clone)]
pub struct Fairness {
    pub accounts: usize,
    pub per_account: usize,
    pub size: u64,
    /// Each round's wall time of the run over all accounts …
    pub many: Vec<Duration>,
    /// … and of the one account's run of as many recordings.
    pub one: Vec<Duration>,
    /// Per round: each account's last archived recording as a share of the run's time.
    pub last: Vec<Vec<(String, f64)>>,
}

fn median(walls: &[Duration]) -> Duration {
    let mut sorted = walls.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

impl Fairness {
    fn records(&self) -> usize {
        self.accounts * self.per_account
    }

    /// Recordings a second, median over the rounds: (all accounts, one account).
    pub fn per_second(&self) -> (f64, f64) {
        let n = self.records() as f64;
        (
            n / median(&self.many).as_secs_f64(),
            n / median(&self.one).as_secs_f64(),
        )
    }

    /// The accounts' throughput over the one account's.
    pub fn ratio(&self) -> f64 {
        let (many, one) = self.per_second();
        many / one
    }

    /// The earliest any account's last recording was archived, as a share of its run's
    /// time, over every round.
    pub fn earliest_last(&self) -> Option<(String, f64)> {
        self.last
            .iter()
            .flatten()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .cloned()
    }

    /// The two targets: (what, measured, holds).
    pub fn targets(&self) -> Vec<(String, String, bool)> {
        let (many, one) = self.per_second();
        let ratio = self.ratio();
        let mut out = vec![(
            format!(
                "{} accounts × {} small recordings in one run vs one account of {}: \
                 throughput within {:.0}%",
                self.accounts,
                self.per_account,
                self.records(),
                THROUGHPUT_WITHIN * 100.0
            ),
            format!("{many:.1} vs {one:.1} recordings/s = {:.0}%", ratio * 100.0),
            (ratio - 1.0).abs() <= THROUGHPUT_WITHIN,
        )];
        if let Some((account, at)) = self.earliest_last() {
            out.push((
                format!(
                    "every account's last recording archived after {:.0}% of the run's time",
                    LAST_AFTER * 100.0
                ),
                format!("earliest: {account}'s at {:.1}%", at * 100.0),
                at >= LAST_AFTER,
            ));
        }
        out
    }
}

/// Measures both configurations `rounds` times, interleaved.
pub async fn measure(
    rig: &Rig,
    accounts: usize,
    per_account: usize,
    size: u64,
    rounds: usize,
) -> anyhow::Result<Fairness> {
    let served = serve_accounts(rig, accounts, per_account, size)?;
    let one = rig.recordings("fair-one", accounts * per_account, size);
    let mut fairness = Fairness {
        accounts,
        per_account,
        size,
        many: Vec::new(),
        one: Vec::new(),
        last: Vec::new(),
    };
    for round in 0..rounds {
        println!("accounts, round {}", round + 1);
        let (wall, last) = run_many(rig, &served, size).await?;
        fairness.many.push(wall);
        fairness.last.push(last);
        fairness.one.push(run_one(rig, &one, size).await?);
    }
    for (what, measured, ok) in fairness.targets() {
        println!("  {}: {what}: {measured}", if ok { "PASS" } else { "FAIL" });
    }
    Ok(fairness)
}

/// One provider account of the simulator per bench account, each with its recordings.
struct Served {
    name: AccountName,
    provider: ProviderAccount,
    names: Vec<String>,
}

fn serve_accounts(
    rig: &Rig,
    accounts: usize,
    per_account: usize,
    size: u64,
) -> anyhow::Result<Vec<Served>> {
    (0..accounts)
        .map(|i| {
            let name = AccountName::parse(&format!("acct-{i:02}"))?;
            let provider = rig
                .sim
                .add_account(AccountConfig {
                    appid: format!("bench-{name}"),
                    accesskey: format!("bench-{name}-key"),
                    company_code: format!("{}", 30_000_000 + i),
                })
                .context("a bench account served twice")?;
            let names = (0..per_account)
                .map(|j| {
                    let file = format!("{name}-{j:05}.wav");
                    provider.add_recording(&file, size);
                    file
                })
                .collect();
            Ok(Served {
                name,
                provider,
                names,
            })
        })
        .collect()
}

/// The one account's run: the small set's own measurement, at the default concurrency.
async fn run_one(rig: &Rig, names: &[String], size: u64) -> anyhow::Result<Duration> {
    let ledger = rig.ledger_with("fair-one", names, size).await?;
    let bucket = rig.bucket()?;
    let (child, _) = rig
        .callvault_run(&ledger, &bucket, DEFAULT_CONCURRENCY, PART_MIB, names.len())
        .await?;
    println!(
        "  one account:  {} recordings in {:.2}s",
        names.len(),
        child.wall.as_secs_f64()
    );
    rig.drop_bucket(&bucket)?;
    rig.remove_ledger(&ledger);
    Ok(child.wall)
}

/// The run over every account at the default concurrency; its wall time and each
/// account's last archived recording as a share of the run's time.
async fn run_many(
    rig: &Rig,
    served: &[Served],
    size: u64,
) -> anyhow::Result<(Duration, Vec<(String, f64)>)> {
    let ledger = ledger_of(rig, served, size).await?;
    let settings = settings_file(rig, served)?;
    let bucket = rig.bucket()?;
    let concurrency = DEFAULT_CONCURRENCY.to_string();
    let part = PART_MIB.to_string();
    let mut cmd = rig.callvault_cmd(
        &ledger,
        &bucket,
        &[
            "run",
            "--json",
            "--concurrency",
            &concurrency,
            "--part-size-mib",
            &part,
        ],
    );
    cmd.env("CALLVAULT_CONFIG", &settings);
    for s in served {
        cmd.env(key_variable(&s.name), s.provider.accesskey());
    }
    let child = rig.run_child(cmd).await?;
    check_report(&child, served)?;
    let last = last_archived(&ledger).await?;
    println!(
        "  {} accounts: {} recordings in {:.2}s; last recordings at {}",
        served.len(),
        served.iter().map(|s| s.names.len()).sum::<usize>(),
        child.wall.as_secs_f64(),
        last.iter()
            .map(|(a, at)| format!("{a} {:.0}%", at * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    rig.drop_bucket(&bucket)?;
    rig.remove_ledger(&ledger);
    Ok((child.wall, last))
}

/// One ledger holding each account's calls, pending.
async fn ledger_of(rig: &Rig, served: &[Served], size: u64) -> anyhow::Result<String> {
    let path = rig.dir.path().join("fair-many.db");
    let url = format!("sqlite://{}", path.display());
    rig.remove_ledger(&url);
    let ledger = Ledger::open(&url).await?;
    for s in served {
        ledger
            .scoped(&s.name)
            .import(&calls(&s.names, size), chrono::Utc::now())
            .await?;
    }
    ledger.close().await;
    Ok(url)
}

fn key_variable(name: &AccountName) -> String {
    format!(
        "BENCH_{}_ACCESSKEY",
        name.as_str().replace('-', "_").to_uppercase()
    )
}

/// The accounts as an operator declares them: one bucket (the rig's `CALLVAULT_STORE`),
/// keys below each account's name, each account's key in a variable of its own.
fn settings_file(rig: &Rig, served: &[Served]) -> anyhow::Result<std::path::PathBuf> {
    let mut text =
        String::from("key-template = \"{account}/{companycode}/{yyyy}/{mm}/{dd}/{uuid}{ext}\"\n");
    for s in served {
        let _ = write!(
            text,
            "\n[accounts.{}]\nappid = \"{}\"\naccesskey-env = \"{}\"\n",
            s.name,
            s.provider.appid(),
            key_variable(&s.name)
        );
    }
    let path = rig.dir.path().join("fair-accounts.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Fails unless the run archived every account's recordings.
fn check_report(child: &crate::child::Child, served: &[Served]) -> anyhow::Result<()> {
    let report: serde_json::Value = serde_json::from_str(child.stdout.trim())
        .with_context(|| format!("callvault run printed {:?}", child.stdout))?;
    let accounts = report["accounts"].as_array().cloned().unwrap_or_default();
    let all = served.iter().all(|s| {
        accounts
            .iter()
            .any(|a| a["account"] == s.name.as_str() && a["archived"] == s.names.len())
    });
    if child.exit_code != 0 || !all {
        bail!(
            "callvault run over {} accounts: exit {}: {report}",
            served.len(),
            child.exit_code
        );
    }
    Ok(())
}

/// Each account's last archived recording, as a share of the run's time (from the first
/// account's pass starting to the last one's end), from the ledger's rows.
async fn last_archived(url: &str) -> anyhow::Result<Vec<(String, f64)>> {
    let pool = sqlx::SqlitePool::connect(url).await?;
    let (start, end): (String, String) =
        sqlx::query_as("SELECT MIN(started_at), MAX(finished_at) FROM runs")
            .fetch_one(&pool)
            .await?;
    let lasts: Vec<(String, String)> = sqlx::query_as(
        "SELECT account, MAX(archived_at) FROM calls WHERE archived_at IS NOT NULL \
         GROUP BY account ORDER BY account",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    let time = |s: &str| from_ledger(s).with_context(|| format!("a ledger time {s:?}"));
    let (start, end) = (time(&start)?, time(&end)?);
    let span = (end - start).as_seconds_f64();
    lasts
        .into_iter()
        .map(|(account, last)| Ok((account, (time(&last)? - start).as_seconds_f64() / span)))
        .collect()
}

/// The section of BENCHMARKS.md.
pub fn section(s: &mut String, f: &Fairness) {
    let (many, one) = f.per_second();
    let _ = writeln!(s, "\n### Many accounts in one run\n");
    let _ = writeln!(
        s,
        "{} accounts × {} recordings of {} KiB archived by one `callvault run` (one ledger, \
         one bucket, keys below `{{account}}/`, each account its own provider login), against \
         one account of {} in the same rounds, both at concurrency {}. The share of the run's \
         time is from the first account's pass starting to the last one's end, read from the \
         ledger (`runs`, `calls.archived_at`).\n",
        f.accounts,
        f.per_account,
        f.size / 1024,
        f.records(),
        DEFAULT_CONCURRENCY
    );
    let _ = writeln!(s, "| run | seconds (median) | all rounds | recordings/s |");
    let _ = writeln!(s, "|---|---:|---|---:|");
    for (label, walls, rate) in [
        (format!("{} accounts", f.accounts), &f.many, many),
        ("one account".to_owned(), &f.one, one),
    ] {
        let all: Vec<String> = walls
            .iter()
            .map(|w| format!("{:.2}", w.as_secs_f64()))
            .collect();
        let _ = writeln!(
            s,
            "| {label} | {:.2} | {} | {rate:.1} |",
            median(walls).as_secs_f64(),
            all.join(" ")
        );
    }
    for (round, last) in f.last.iter().enumerate() {
        let shares: Vec<String> = last
            .iter()
            .map(|(a, at)| format!("{a} {:.1}%", at * 100.0))
            .collect();
        let _ = writeln!(
            s,
            "\nRound {}: each account's last recording at {}.",
            round + 1,
            shares.join(", ")
        );
    }
}
