//! The ledger alone on PostgreSQL: how many records a second it hands out and settles with
//! no transfer in between, and how long a claim waits. Claimers (tokio tasks in this
//! process, all in one run, as the workers of one `callvault run --concurrency 64` are)
//! each loop claim (which starts the attempt in its commit) → settle it archived, over a ledger of a million
//! calls of history with a batch of due calls added, until the batch or the time is spent.
//! While they run, the server's wait events are sampled from `pg_stat_activity` every
//! 50 ms; afterwards `pg_stat_statements` says which statements the server's time went to.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use callvault::domain::{ArchivedObject, AttemptOutcome, RunId};
use callvault::ledger::{
    AttemptEnd, ClaimRequest, Ledger, LedgerOptions, MediaNote, RunRecord, Settlement, Slice,
};
use chrono::Utc;

use crate::machine::CpuMeter;
use crate::postgres::Postgres;

/// One measured variant (one claim size).
#[derive(Debug, Clone)]
pub struct Claiming {
    /// Calls of history in the ledger before the due batch was added.
    pub rows: usize,
    pub claimers: usize,
    /// Records per claim at most.
    pub limit: u32,
    /// Due calls added for this variant, and the time the claimers had for them.
    pub due: usize,
    pub time: Duration,
    /// Records claimed, begun and settled archived.
    pub records: u64,
    /// Claims that returned records.
    pub claims: u64,
    pub wall: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// CPU time of the PostgreSQL server during the variant.
    pub server_cpu: Duration,
    /// CPU time of this process (the claimers' client side) during the variant.
    pub client_cpu: Duration,
    /// The busy share of all the machine's CPUs, other tenants included.
    pub busy: f64,
    /// The statements the server spent most time in, most first.
    pub statements: Vec<Statement>,
    /// What the active backends were doing, from samples of `pg_stat_activity`: a wait
    /// event (`type:event`) or `CPU` (active, waiting on nothing), with the samples that
    /// found a backend so, most first; and the number of samples taken.
    pub waits: Vec<(String, i64)>,
    pub samples: u64,
}

/// One statement's share, from `pg_stat_statements`.
#[derive(Debug, Clone)]
pub struct Statement {
    pub calls: i64,
    /// Total execution time, ms.
    pub total_ms: f64,
    /// Mean execution time (waits for locks and for a CPU included).
    pub mean_ms: f64,
    /// Shared buffers read or hit per call.
    pub buffers: f64,
    /// The statement's first words.
    pub text: String,
}

impl Claiming {
    pub fn per_second(&self) -> f64 {
        self.records as f64 / self.wall.as_secs_f64()
    }

    /// Server CPU milliseconds per settled record.
    pub fn server_ms_per_record(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e3 / self.records.max(1) as f64
    }
}

/// What one claimer did.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    records: u64,
    lease_lost: u64,
}

/// Adds `due` due calls to the filled ledger at `url`, then runs `claimers` claimers taking
/// `limit` records a claim until nothing is due or `time` is up.
pub async fn measure(
    pg: &Postgres,
    url: &str,
    rows: usize,
    claimers: usize,
    limit: u32,
    due: usize,
    time: Duration,
) -> anyhow::Result<Claiming> {
    crate::pg_history::add_due(url, &format!("due{claimers}x{limit}"), due, Utc::now()).await?;
    let options = LedgerOptions {
        max_connections: u32::try_from(claimers)? + 4,
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open_with(url, &options).await?;
    let run = RunRecord {
        id: RunId::generate(),
        started_at: Utc::now(),
        host: "bench-host".into(),
        pid: std::process::id(),
        options: "{}".into(),
    };
    ledger.start_run(&run).await?;
    // Every connection open before the clock starts, as in a pass that has been running.
    let warm: Vec<_> = (0..claimers).map(|_| ledger.ping()).collect();
    for ping in futures::future::join_all(warm).await {
        ping?;
    }
    let stats = sqlx::PgPool::connect(url).await?;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&stats)
        .await?;
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&stats)
        .await?;

    let sampler = WaitSampler::start(url).await?;
    let server_before = pg.cpu();
    let meter = CpuMeter::start();
    let started = Instant::now();
    let deadline = started + time;
    let tasks: Vec<_> = (0..claimers)
        .map(|_| tokio::spawn(claimer(ledger.clone(), run.id.clone(), limit, deadline)))
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await??;
        all.latencies.extend(t.latencies);
        all.records += t.records;
        all.lease_lost += t.lease_lost;
    }
    let wall = started.elapsed();
    let (client_cpu, busy) = meter.stop();
    let server_cpu = pg.cpu().saturating_sub(server_before);
    let (waits, samples) = sampler.stop().await?;
    let statements = top_statements(&stats).await?;
    stats.close().await;
    ledger.close().await;
    if all.lease_lost > 0 {
        bail!("{} settlements found their lease lost", all.lease_lost);
    }
    check_settled_once(url, &run.id, all.records).await?;

    let mut latencies = all.latencies;
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i]
    };
    let c = Claiming {
        rows,
        claimers,
        limit,
        due,
        time,
        records: all.records,
        claims: latencies.len() as u64,
        wall,
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
        server_cpu,
        client_cpu,
        busy,
        statements,
        waits,
        samples,
    };
    println!(
        "  {:>2} claimers, limit {:>2}: {} records in {:.1}s = {:.0}/s; claim p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         server CPU {:.2} ms/record; busy {:.0}%",
        c.claimers,
        c.limit,
        c.records,
        c.wall.as_secs_f64(),
        c.per_second(),
        c.p50.as_secs_f64() * 1e3,
        c.p99.as_secs_f64() * 1e3,
        c.max.as_secs_f64() * 1e3,
        c.server_ms_per_record(),
        c.busy * 100.0
    );
    for st in &c.statements {
        println!(
            "    {:>8.0} ms = {:>7} × {:>6.2} ms, {:>5.0} buffers: {}",
            st.total_ms, st.calls, st.mean_ms, st.buffers, st.text
        );
    }
    let waits: Vec<String> = c.waits.iter().map(|(w, n)| format!("{w} {n}")).collect();
    println!("    waits in {} samples: {}", c.samples, waits.join(", "));
    Ok(c)
}

/// The six statements of this database the server spent most time in since the reset.
async fn top_statements(pool: &sqlx::PgPool) -> anyhow::Result<Vec<Statement>> {
    let rows: Vec<(i64, f64, f64, f64, String)> = sqlx::query_as(
        "SELECT calls, total_exec_time, mean_exec_time,
                (shared_blks_hit + shared_blks_read)::float8 / greatest(calls, 1),
                left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
         FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         ORDER BY total_exec_time DESC LIMIT 6",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(calls, total_ms, mean_ms, buffers, text)| Statement {
            calls,
            total_ms,
            mean_ms,
            buffers,
            text,
        })
        .collect())
}

/// How often each wait event (or `CPU`) was seen, most seen first, and in how many samples.
type Waits = (Vec<(String, i64)>, u64);

/// Samples what the other backends of the server are doing while the claimers run.
struct WaitSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<Waits>>,
}

impl WaitSampler {
    async fn start(url: &str) -> anyhow::Result<Self> {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut seen: std::collections::BTreeMap<String, i64> = Default::default();
            let mut samples = 0;
            loop {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*)
                     FROM pg_stat_activity
                     WHERE state = 'active' AND pid <> pg_backend_pid() GROUP BY 1",
                )
                .fetch_all(&mut conn)
                .await?;
                samples += 1;
                for (wait, n) in rows {
                    *seen.entry(wait).or_default() += n;
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            let mut waits: Vec<(String, i64)> = seen.into_iter().collect();
            waits.sort_by_key(|w| std::cmp::Reverse(w.1));
            Ok((waits, samples))
        });
        Ok(Self { stop, task })
    }

    /// The histogram, most first, and the number of samples.
    async fn stop(self) -> anyhow::Result<(Vec<(String, i64)>, u64)> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// One claimer: claim as the pass does (a claim that lost a race is run again inside the
/// ledger), then settle every record claimed.
async fn claimer(
    ledger: Ledger,
    run: RunId,
    limit: u32,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let slice = Slice::default();
    while Instant::now() < deadline {
        let asked = Instant::now();
        let now = Utc::now();
        let request = ClaimRequest {
            owner: &run,
            slice: &slice,
            due_by: now,
            now,
            lease_until: now + chrono::Duration::minutes(5),
            limit,
        };
        let claims = ledger.claim(&request).await.context("claiming")?;
        if claims.is_empty() {
            break;
        }
        tally.latencies.push(asked.elapsed());
        for claim in claims {
            let uuid = &claim.record.uuid;
            let now = Utc::now();
            // The claim started the attempt in its own commit.
            let id = claim.attempt;
            let object = ArchivedObject {
                key: format!("20000013/bench/{}.wav", uuid.as_str()),
                size: 128 * 1024,
                sha256: format!("{:064x}", tally.records),
                content_type: Some("audio/wav".into()),
                etag: Some(format!("\"{:032x}\"", tally.records)),
                version: None,
                archived_at: now,
            };
            let end = AttemptEnd {
                id,
                outcome: AttemptOutcome::Archived,
                error_code: None,
                message: None,
                bytes: object.size,
            };
            let settled = ledger
                .settle(
                    uuid,
                    &run,
                    &Settlement::Archived(&object, &MediaNote::default()),
                    Some(&end),
                    Utc::now(),
                )
                .await?;
            if settled {
                tally.records += 1;
            } else {
                tally.lease_lost += 1;
            }
        }
    }
    Ok(tally)
}

/// Fails unless the run holds exactly `records` attempts, one per call, each archived on an
/// archived call, and the kept state counts still equal a full count.
async fn check_settled_once(url: &str, run: &RunId, records: u64) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(url).await?;
    let (attempts, calls, archived): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT a.call_uuid),
                count(*) FILTER (WHERE a.outcome = 'archived' AND c.state = 'archived')
         FROM attempts a JOIN calls c ON c.uuid = a.call_uuid WHERE a.run_id = $1",
    )
    .bind(run.to_string())
    .fetch_one(&pool)
    .await?;
    let want = i64::try_from(records)?;
    if (attempts, calls, archived) != (want, want, want) {
        bail!(
            "{records} records settled, but the run has {attempts} attempts on {calls} calls, \
             {archived} archived"
        );
    }
    crate::pg_history::check_counts(&pool).await?;
    pool.close().await;
    Ok(())
}
