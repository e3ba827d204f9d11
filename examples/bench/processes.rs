//! Several `callvault run` processes on one ledger: the small recordings archived by 1, 2 or
//! 4 processes started together on one PostgreSQL ledger, against one process on SQLite, at
//! the same total concurrency. Every record must be archived, downloaded and settled once.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use callvault::ledger::Ledger;

use crate::ledger_growth::{On, POSTGRES, SQLITE};
use crate::machine::CpuMeter;
use crate::rig::{Rig, calls};

/// One variant, over the rounds.
#[derive(Debug, Clone)]
pub struct Processes {
    /// `SQLite` or `PostgreSQL`.
    pub backend: &'static str,
    pub processes: usize,
    /// Concurrency of each process.
    pub each: usize,
    pub records: usize,
    pub bytes: u64,
    /// The median over the rounds (one value until [`merge_rounds`]).
    pub wall: Duration,
    pub walls: Vec<Duration>,
    /// CPU of the benchmark process and the callvault processes, summed over rounds.
    pub cpu: Duration,
    /// CPU of the PostgreSQL server, summed over rounds.
    pub server_cpu: Option<Duration>,
    /// The busy share of all CPUs, averaged over rounds.
    pub busy: f64,
    /// The highest of any one process, over the rounds.
    pub peak_rss_kib: u64,
}

impl Processes {
    pub fn per_second(&self) -> f64 {
        self.records as f64 / self.wall.as_secs_f64()
    }

    /// CPU seconds (the benchmark, callvault and PostgreSQL) per GB moved.
    pub fn cpu_per_gb(&self) -> f64 {
        let gb = self.bytes as f64 * self.walls.len() as f64 / 1e9;
        (self.cpu + self.server_cpu.unwrap_or_default()).as_secs_f64() / gb
    }
}

/// `processes` × `callvault run --concurrency each`, started together on a fresh ledger (a
/// SQLite file, or a database on the harness's server) holding one pending call per name.
pub async fn measure(
    rig: &Rig,
    on: On<'_>,
    processes: usize,
    each: usize,
    names: &[String],
    size: u64,
) -> anyhow::Result<Processes> {
    let n = names.len();
    let (backend, url) = match on {
        On::Sqlite => (SQLITE, rig.ledger_with("processes", names, size).await?),
        On::Postgres(pg) => {
            let url = pg.database("processes").await?;
            let ledger = Ledger::open(&url).await?;
            ledger
                .import(&calls(names, size), chrono::Utc::now())
                .await?;
            ledger.close().await;
            (POSTGRES, url)
        }
    };
    let bucket = rig.bucket()?;
    let concurrency = each.to_string();
    let args = [
        "run",
        "--json",
        "--concurrency",
        &concurrency,
        "--part-size-mib",
        "8",
    ];
    let downloads_before = rig.sim.stats().downloads;
    let server_before = match on {
        On::Postgres(pg) => Some(pg.cpu()),
        On::Sqlite => None,
    };
    let meter = CpuMeter::start();
    let started = Instant::now();
    let children = futures::future::join_all(
        (0..processes).map(|_| rig.run_child(rig.callvault_cmd(&url, &bucket, &args))),
    )
    .await;
    let wall = started.elapsed();
    let (cpu, busy) = meter.stop();
    let server_cpu = match on {
        On::Postgres(pg) => server_before.map(|before| pg.cpu().saturating_sub(before)),
        On::Sqlite => None,
    };

    let mut archived = 0;
    let mut peak_rss_kib = 0;
    for child in children {
        let child = child?;
        let report: serde_json::Value = serde_json::from_str(child.stdout.trim())
            .with_context(|| format!("callvault run printed {:?}", child.stdout))?;
        if child.exit_code != 0 || report["lease_lost"] != 0 {
            bail!("callvault run: exit {}: {report}", child.exit_code);
        }
        archived += report["archived"].as_u64().unwrap_or(0);
        peak_rss_kib = peak_rss_kib.max(child.peak_rss_kib);
    }
    let downloads = rig.sim.stats().downloads - downloads_before;
    let ledger = Ledger::open(&url).await?;
    let status = ledger
        .status(chrono::Utc::now(), chrono::Duration::days(90))
        .await?;
    ledger.close().await;
    let (bytes, files) = rig.bucket_usage(&bucket);
    if archived != n as u64
        || downloads != n as u64
        || status.counts["archived"] != i64::try_from(n)?
        || files < n
        || bytes < n as u64 * size
    {
        bail!(
            "{processes} × {each} on {backend}: the runs archived {archived}, the simulator \
             served {downloads} downloads, the ledger counts {} archived, the bucket holds \
             {files} files; expected {n} of each",
            status.counts["archived"]
        );
    }
    rig.drop_bucket(&bucket)?;
    match on {
        On::Sqlite => rig.remove_ledger(&url),
        On::Postgres(pg) => pg.drop_database("processes").await?,
    }
    let p = Processes {
        backend,
        processes,
        each,
        records: n,
        bytes: n as u64 * size,
        wall,
        walls: vec![wall],
        cpu,
        server_cpu,
        busy,
        peak_rss_kib,
    };
    println!(
        "  {:<10} {} × {:<2} {:>7.2}s {:>7.1} rec/s  CPU {:>5.1} s/GB{}  busy {:>3.0}%",
        p.backend,
        p.processes,
        p.each,
        p.wall.as_secs_f64(),
        p.per_second(),
        p.cpu_per_gb(),
        p.server_cpu.map_or(String::new(), |c| format!(
            " (PostgreSQL {:.1} s)",
            c.as_secs_f64()
        )),
        p.busy * 100.0
    );
    Ok(p)
}

/// Folds the rounds of each variant into one row: the median wall time, CPU summed, the
/// highest peak RSS, in first-measured order.
pub fn merge_rounds(rows: Vec<Processes>) -> Vec<Processes> {
    let mut merged: Vec<Processes> = Vec::new();
    for p in rows {
        match merged
            .iter_mut()
            .find(|m| m.backend == p.backend && m.processes == p.processes)
        {
            Some(m) => {
                let n = m.walls.len() as f64;
                m.busy = (m.busy * n + p.busy) / (n + 1.0);
                m.cpu += p.cpu;
                m.server_cpu = m.server_cpu.zip(p.server_cpu).map(|(a, b)| a + b);
                m.walls.extend(p.walls);
                m.peak_rss_kib = m.peak_rss_kib.max(p.peak_rss_kib);
            }
            None => merged.push(p),
        }
    }
    for m in &mut merged {
        m.walls.sort();
        m.wall = m.walls[m.walls.len() / 2];
    }
    merged
}
