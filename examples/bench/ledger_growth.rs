//! Does callvault slow down as the ledger grows? Fills a ledger with a realistic history
//! (bulk inserts in one transaction), then times `callvault status` and the per-record
//! cost of a run over the same small batch, at each size.

use std::time::{Duration, Instant};

use anyhow::bail;
use callvault::ledger::Ledger;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{QueryBuilder, Sqlite};

use crate::rig::{Rig, calls};

/// One ledger size's figures.
#[derive(Debug, Clone)]
pub struct Growth {
    pub rows: usize,
    pub db_mib: f64,
    /// Median wall time of the `callvault status --json` process.
    pub status_cli: Duration,
    /// Median time of the status queries alone, in process.
    pub status_query: Duration,
    pub batch: usize,
    /// Wall time of the `callvault run` over the batch.
    pub run_wall: Duration,
    pub peak_rss_kib: u64,
}

impl Growth {
    pub fn per_record(&self) -> Duration {
        self.run_wall / u32::try_from(self.batch.max(1)).unwrap_or(u32::MAX)
    }
}

/// `status` takes a few milliseconds, mostly process start: enough runs for a steady median.
pub const REPEATS: usize = 11;

/// Fills a fresh ledger with `rows` calls of history, then measures `status` and a run
/// over `batch` (recording names the simulator serves) at concurrency 8.
pub async fn measure(
    rig: &Rig,
    rows: usize,
    batch: &[String],
    size: u64,
) -> anyhow::Result<Growth> {
    let path = rig.dir.path().join(format!("growth-{rows}.db"));
    let url = format!("sqlite://{}", path.display());
    rig.remove_ledger(&url);
    let ledger = Ledger::open(&url).await?;
    let filled = Instant::now();
    fill(&url, rows, Utc::now()).await?;
    println!(
        "    filled {rows} rows in {:.1}s",
        filled.elapsed().as_secs_f64()
    );
    let db_mib = std::fs::metadata(&path)?.len() as f64 / (1024.0 * 1024.0);

    let mut query_times = Vec::new();
    for _ in 0..REPEATS {
        let t = Instant::now();
        let report = ledger
            .status(Utc::now(), chrono::Duration::days(90))
            .await?;
        query_times.push(t.elapsed());
        if usize::try_from(report.total)? != rows {
            bail!("status counted {} rows, not {rows}", report.total);
        }
    }
    let mut cli_times = Vec::new();
    for _ in 0..REPEATS {
        let child = rig
            .run_child(rig.callvault_cmd(&url, "unused", &["status", "--json"]))
            .await?;
        if child.exit_code != 0 {
            bail!("callvault status exited {}", child.exit_code);
        }
        cli_times.push(child.wall);
    }

    ledger.import(&calls(batch, size), Utc::now()).await?;
    ledger.close().await;
    let bucket = rig.bucket()?;
    let (child, _) = rig.callvault_run(&url, &bucket, 8, 8, batch.len()).await?;
    rig.drop_bucket(&bucket)?;
    rig.remove_ledger(&url);
    Ok(Growth {
        rows,
        db_mib,
        status_cli: median(cli_times),
        status_query: median(query_times),
        batch: batch.len(),
        run_wall: child.wall,
        peak_rss_kib: child.peak_rss_kib,
    })
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Rows per INSERT statement (20 parameters a row, well under SQLite's 32766).
const BATCH: usize = 500;

/// `rows` calls over the last 90 days, newest last: 78% archived, 20% unanswered
/// (no recording), 1% pending with a retry due in 6 hours, 0.5% failed, 0.5% expired, one
/// archived recording in a thousand flagged by the media check;
/// one attempt per call that had a recording, one run per 15 minutes of history, each with
/// the manifest that lists what it archived.
async fn fill(url: &str, rows: usize, now: DateTime<Utc>) -> anyhow::Result<()> {
    let options: SqliteConnectOptions = url.parse()?;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let mut tx = pool.begin().await?;
    let span = chrono::Duration::days(90);
    let runs = (rows / 116).max(10);
    let run_id = |i: usize| format!("run-history-{:06}", i % runs);
    for chunk in (0..runs).collect::<Vec<_>>().chunks(BATCH) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO runs (id, started_at, finished_at, status, host, pid, options, summary, exit_code) ",
        );
        q.push_values(chunk, |mut b, &i| {
            let at = ts(now - span + span * i32::try_from(i).unwrap_or(0) / runs as i32);
            b.push_bind(run_id(i))
                .push_bind(at.clone())
                .push_bind(at)
                .push_bind("completed")
                .push_bind("bench-host")
                .push_bind(1_i64)
                .push_bind("{}")
                .push_bind(r#"{"archived":100}"#)
                .push_bind(0_i64);
        });
        q.build().execute(&mut *tx).await?;
        // Each run wrote the manifest of what it archived (the chain the audit keeps).
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO manifests (seq, object_key, state, run_id, previous_key, previous_sha256,
                entries, sha256, size_bytes, created_at, written_at) ",
        );
        q.push_values(chunk, |mut b, &i| {
            let seq = i64::try_from(i).unwrap_or(0) + 1;
            let at = ts(now - span + span * i32::try_from(i).unwrap_or(0) / runs as i32);
            b.push_bind(seq)
                .push_bind(manifest_key(seq))
                .push_bind("written")
                .push_bind(run_id(i))
                .push_bind((seq > 1).then(|| manifest_key(seq - 1)))
                .push_bind((seq > 1).then(|| format!("{:064x}", seq - 1)))
                .push_bind(i64::try_from(rows / runs).unwrap_or(0))
                .push_bind(format!("{seq:064x}"))
                .push_bind(30_000_i64)
                .push_bind(at.clone())
                .push_bind(at);
        });
        q.build().execute(&mut *tx).await?;
    }
    let ids: Vec<usize> = (0..rows).collect();
    for chunk in ids.chunks(BATCH) {
        let rows_f = rows as f64;
        let start = |i: usize| {
            now - span
                + chrono::Duration::milliseconds(
                    (span.num_milliseconds() as f64 * i as f64 / rows_f) as i64,
                )
        };
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO calls (uuid, company_code, record_file, call_start, billsec, raw_json, state, attempts,
                next_attempt_at, object_key, size_bytes, sha256, content_type, etag, archived_at,
                manifest_seq, media_duration_ms, media_note, imported_at, updated_at) ",
        );
        q.push_values(chunk, |mut b, &i| {
            let call = start(i);
            let state = state_of(i);
            let uuid = uuid_of(i);
            let file = if state == "no_recording" {
                String::new()
            } else {
                format!("{}-{i}.wav", call.format("%Y%m%d%H%M%S"))
            };
            let archived = state == "archived";
            let later = if state == "pending" {
                ts(now + chrono::Duration::hours(6))
            } else {
                ts(call)
            };
            b.push_bind(uuid.clone())
                .push_bind("20000013")
                .push_bind(file.clone())
                .push_bind(ts(call))
                .push_bind(60_i64)
                .push_bind(raw_json(&uuid, &file, call))
                .push_bind(state)
                .push_bind(i64::from(state != "no_recording"))
                .push_bind(later)
                .push_bind(
                    archived.then(|| format!("20000013/{}/{uuid}.wav", call.format("%Y/%m/%d"))),
                )
                .push_bind(archived.then_some(960_044_i64))
                .push_bind(archived.then(|| format!("{:064x}", i)))
                .push_bind(archived.then_some("audio/wav"))
                .push_bind(archived.then(|| format!("\"{:032x}\"", i)))
                .push_bind(archived.then(|| ts(call + chrono::Duration::minutes(20))))
                .push_bind(archived.then(|| i64::try_from(i * runs / rows + 1).unwrap_or(1)))
                .push_bind(archived.then_some(60_000_i64))
                .push_bind(
                    (archived && i % 1000 == 7).then_some("duration 0:31 for 60 billed seconds"),
                )
                .push_bind(ts(call))
                .push_bind(ts(call));
        });
        q.build().execute(&mut *tx).await?;
        let attempted: Vec<usize> = chunk
            .iter()
            .copied()
            .filter(|&i| state_of(i) != "no_recording")
            .collect();
        if attempted.is_empty() {
            continue;
        }
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO attempts (call_uuid, run_id, started_at, finished_at, outcome, error_code, bytes) ",
        );
        q.push_values(attempted, |mut b, i| {
            let at = ts(start(i) + chrono::Duration::minutes(15));
            let ok = state_of(i) == "archived";
            b.push_bind(uuid_of(i))
                .push_bind(run_id(i))
                .push_bind(at.clone())
                .push_bind(at)
                .push_bind(if ok { "archived" } else { "retry_later" })
                .push_bind((!ok).then_some("download_timeout"))
                .push_bind(if ok { 960_044_i64 } else { 0 });
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    // Into the database file, as in a ledger that has lived a while (not all in the WAL).
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

fn state_of(i: usize) -> &'static str {
    match i % 200 {
        0..156 => "archived",
        156..196 => "no_recording",
        196 | 197 => "pending",
        198 => "failed",
        _ => "expired",
    }
}

fn uuid_of(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i >> 16, i)
}

fn ts(t: DateTime<Utc>) -> String {
    callvault::timefmt::to_ledger(t)
}

/// The callback as the provider sends it, about 330 bytes.
fn raw_json(uuid: &str, file: &str, start: DateTime<Utc>) -> String {
    let t = start.format("%Y-%m-%d %H:%M:%S").to_string();
    serde_json::json!({
        "uuid": uuid, "companycode": 20000013, "recordfilename": file, "starttime": t,
        "answertime": t, "endtime": t, "duration": 70, "billsec": 60, "type": "callout",
        "caller": "13800138000", "callee": "02158501234", "extension": "8001",
        "hangupcause": "NORMAL_CLEARING",
    })
    .to_string()
}

fn manifest_key(seq: i64) -> String {
    format!("manifests/{seq:010}.jsonl")
}
