//! Issue 20: does `callvault import` keep up with a backfill (at least 10,000 records a
//! second on both ledgers, the search index kept current)? Writes N provider callbacks as
//! JSON lines (as the provider sends them: every fifth call unanswered, numbers sometimes as
//! strings, ids counting up), imports the file with the release binary into a fresh SQLite
//! ledger and a fresh PostgreSQL database, then checks that the ledger counts every record
//! and that searches by number and by agent find the calls they should, without indexing
//! anything left over.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use callvault::domain::RecordState;
use callvault::ledger::{CallQuery, Ledger, PhoneNumber};
use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::postgres::Postgres;
use crate::rig::Rig;

/// The target, records a second on each backend.
pub const TARGET_PER_SECOND: f64 = 10_000.0;

/// One import of the whole file into one fresh ledger.
#[derive(Debug, Clone)]
pub struct ImportRun {
    pub backend: &'static str,
    pub records: usize,
    pub bytes: u64,
    pub wall: Duration,
    /// callvault's CPU time (user + system).
    pub cpu: Duration,
    /// The PostgreSQL server's CPU time during the import (none on SQLite).
    pub server_cpu: Option<Duration>,
    pub peak_rss_kib: u64,
}

impl ImportRun {
    pub fn per_second(&self) -> f64 {
        self.records as f64 / self.wall.as_secs_f64()
    }
}

#[derive(Debug, Clone, Default)]
pub struct ImportBench {
    pub runs: Vec<ImportRun>,
}

impl ImportBench {
    pub fn targets(&self) -> Vec<(String, String, bool)> {
        self.runs
            .iter()
            .map(|r| {
                (
                    format!(
                        "`import` of {} callbacks on {}, search index current: ≥ 10,000 records/s",
                        r.records, r.backend
                    ),
                    format!(
                        "{:.0} records/s ({:.1} s, callvault CPU {:.1} s)",
                        r.per_second(),
                        r.wall.as_secs_f64(),
                        r.cpu.as_secs_f64()
                    ),
                    r.per_second() >= TARGET_PER_SECOND,
                )
            })
            .collect()
    }
}

/// The table of the import runs.
pub fn section(s: &mut String, bench: &ImportBench) {
    let _ = writeln!(
        s,
        "\n### Import\n\n`callvault import FILE` of provider callbacks (JSON lines) into a fresh \
         ledger, timed as a process; then every record counted and found by search.\n"
    );
    let _ = writeln!(
        s,
        "| ledger | records | MB | wall s | records/s | callvault CPU s | server CPU s | peak RSS MiB |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for r in &bench.runs {
        let server = r
            .server_cpu
            .map_or("–".to_owned(), |c| format!("{:.1}", c.as_secs_f64()));
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.1} | {:.0} | {:.1} | {server} | {:.0} |",
            r.backend,
            r.records,
            r.bytes as f64 / 1e6,
            r.wall.as_secs_f64(),
            r.per_second(),
            r.cpu.as_secs_f64(),
            r.peak_rss_kib as f64 / 1024.0
        );
    }
}

/// Imports `n` generated callbacks into a fresh SQLite ledger and a fresh PostgreSQL database.
pub async fn measure(rig: &Rig, pg: &Postgres, n: usize) -> anyhow::Result<ImportBench> {
    let file = rig.dir.path().join("callbacks.jsonl");
    let sample = write_callbacks(&file, n)?;
    let bytes = std::fs::metadata(&file)?.len();
    println!("import: {n} callbacks, {:.1} MB", bytes as f64 / 1e6);
    let sqlite_url = format!("sqlite://{}", rig.dir.path().join("import.db").display());
    rig.remove_ledger(&sqlite_url);
    let mut bench = ImportBench::default();
    let run = import_once(rig, None, "SQLite", &sqlite_url, &file, n, bytes).await?;
    check(&sqlite_url, n, &sample).await?;
    rig.remove_ledger(&sqlite_url);
    bench.runs.push(run);
    let pg_url = pg.database("import_bench").await?;
    let run = import_once(rig, Some(pg), "PostgreSQL", &pg_url, &file, n, bytes).await?;
    check(&pg_url, n, &sample).await?;
    pg.drop_database("import_bench").await?;
    bench.runs.push(run);
    let _ = std::fs::remove_file(&file);
    Ok(bench)
}

/// Runs `callvault import FILE` on `url` (migrated first, so the import alone is timed).
async fn import_once(
    rig: &Rig,
    pg: Option<&Postgres>,
    backend: &'static str,
    url: &str,
    file: &Path,
    n: usize,
    bytes: u64,
) -> anyhow::Result<ImportRun> {
    Ledger::open(url).await?.close().await;
    let file = file.display().to_string();
    let server_before = pg.map(Postgres::cpu);
    let child = rig
        .run_child(rig.callvault_cmd(url, "unused", &["import", &file]))
        .await?;
    let server_cpu = pg.zip(server_before).map(|(pg, before)| pg.cpu() - before);
    let expected = format!("imported: {n} new ({} without recording)", unanswered(n));
    if child.exit_code != 0 || !child.stdout.starts_with(&expected) {
        bail!(
            "callvault import on {backend}: exit {}, printed {:?}",
            child.exit_code,
            child.stdout
        );
    }
    let run = ImportRun {
        backend,
        records: n,
        bytes,
        wall: child.wall,
        cpu: child.cpu,
        server_cpu,
        peak_rss_kib: child.peak_rss_kib,
    };
    println!(
        "    {backend}: {:.1} s, {:.0} records/s",
        run.wall.as_secs_f64(),
        run.per_second()
    );
    Ok(run)
}

/// The ledger holds every record in the state the callback gives it, and the search index
/// is current: searches by number and agent find the sampled calls, and nothing was left
/// for the search to index.
async fn check(url: &str, n: usize, sample: &[Value]) -> anyhow::Result<()> {
    let ledger = Ledger::open(url).await?;
    let status = ledger
        .status(Utc::now(), chrono::Duration::days(90))
        .await?;
    let pending = status.counts[RecordState::Pending.as_str()];
    let none = status.counts[RecordState::NoRecording.as_str()];
    if status.total != i64::try_from(n)? || none != i64::try_from(unanswered(n))? {
        bail!("the ledger counts {pending} pending, {none} without recording, of {n}");
    }
    let left = ledger.refresh_terms(u32::MAX).await?;
    if left != 0 {
        bail!("the import left {left} calls unindexed");
    }
    for callback in sample {
        let uuid = callback["uuid"].as_str().context("a uuid")?;
        let number = callback["destnumber"].as_str().context("a number")?;
        let suffix = PhoneNumber::parse(&number[number.len() - 7..]);
        let agent = callback["crmid"].as_str().map(str::to_owned);
        for query in [
            CallQuery {
                number: suffix,
                ..CallQuery::all(callvault::ledger::MAX_PAGE)
            },
            CallQuery {
                agent,
                uuids: vec![callvault::domain::CallUuid::parse(uuid).context("uuid")?],
                ..CallQuery::all(10)
            },
        ] {
            let found = ledger.find_calls(&query).await?;
            if !found.iter().any(|c| c.uuid.as_str() == uuid) {
                bail!("a search ({}) did not find {uuid}", query.describe());
            }
        }
    }
    ledger.close().await;
    Ok(())
}

/// Calls `0..n` with every fifth unanswered.
fn unanswered(n: usize) -> usize {
    n / 5
}

/// Writes `n` callbacks to `path`, one a line; returns a few of them to search for.
fn write_callbacks(path: &Path, n: usize) -> anyhow::Result<Vec<Value>> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut rng = StdRng::seed_from_u64(20);
    let end = Utc
        .with_ymd_and_hms(2026, 11, 30, 0, 0, 0)
        .single()
        .context("a date")?;
    let mut sample = Vec::new();
    for i in 0..n {
        let callback = callback(&mut rng, i, end);
        serde_json::to_writer(&mut out, &callback)?;
        out.write_all(b"\n")?;
        if i % (n / 5).max(1) == 7 {
            sample.push(callback);
        }
    }
    out.flush()?;
    Ok(sample)
}

/// Call `i`, as the provider's callback: a distinct uuid and id; every fifth unanswered
/// (no recording, no answer time); numbers and extensions as strings, ids and seconds as
/// numbers, except that every third callback sends its numbers as strings too, as the
/// provider does.
fn callback(rng: &mut StdRng, i: usize, end: DateTime<Utc>) -> Value {
    let uuid = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
    let answered = i % 5 != 4;
    let ring = rng.random_range(3..=25_i64);
    let billsec = if answered {
        rng.random_range(5..=900_i64)
    } else {
        0
    };
    let duration = ring + billsec;
    let start = end - chrono::Duration::seconds(rng.random_range(3_600..30 * 86_400));
    let tz = callvault::timefmt::default_provider_tz();
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string();
    let file = match answered {
        true => format!(
            "20000013-{}-{uuid}.wav",
            start.with_timezone(&tz).format("%Y%m%d")
        ),
        false => String::new(),
    };
    let sloppy = i.is_multiple_of(3);
    let number = |v: i64| match sloppy {
        true => json!(v.to_string()),
        false => json!(v),
    };
    json!({
        "callmethod": number(3),
        "starttime": local(start),
        "answertime": if answered { local(start + chrono::Duration::seconds(ring)) } else { String::new() },
        "endtime": local(start + chrono::Duration::seconds(duration)),
        "duration": number(duration),
        "billsec": number(billsec),
        "crmid": rng.random_range(2001..=2040).to_string(),
        "hangupdirection": number(if rng.random_bool(0.5) { 10040 } else { 10041 }),
        "chengshudu": "0",
        "hangupcause": number(if answered { 10001 } else { 10016 }),
        "memberid": rng.random_range(10_u64.pow(16)..10_u64.pow(17)).to_string(),
        "disnumber": format!("025{}", rng.random_range(60_000_000..70_000_000)),
        "destnumber": format!("01{}", rng.random_range(3_000_000_000_u64..9_000_000_000)),
        "downloadip": "120.76.152.137",
        "recordfilename": file,
        "companycode": number(20_000_013),
        "type": if rng.random_bool(0.7) { "callout" } else { "callin" },
        "id": number(i64::try_from(i).unwrap_or(i64::MAX) + 1),
        "extnumber": rng.random_range(7001..=7040).to_string(),
        "uuid": uuid.to_string(),
        "userkey": 1,
        "customuuid": format!("cust-{}", rng.random_range(1..=100_000)),
    })
}
