//! Issue 19, point 6: inclusion and consistency proofs from a ledger whose Merkle log holds
//! a million leaves. The log is built as a pass builds it (`CompactRange::append`, the
//! nodes it completes stored with `add_log_nodes`), and each proof is timed the way the
//! ledger answers it: `merkle::needed` names the nodes, `log_nodes` reads them, `prove`
//! folds them. Every proof is checked against the log's root outside the timing.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use callvault::ledger::Ledger;
use callvault::proof::merkle::{self, CompactRange, Hash, Wanted};

use crate::ledger_growth::On;

/// Nodes written to the ledger in one call (one transaction).
const NODE_BATCH: usize = 20_000;

/// Proof times and sizes on one backend.
#[derive(Debug, Clone)]
pub struct LogProofs {
    pub backend: &'static str,
    pub leaves: u64,
    /// Nodes stored (leaves and the perfect subtrees they complete).
    pub nodes: u64,
    /// Building the log: appending every leaf and storing its nodes.
    pub build: Duration,
    pub inclusion: Timing,
    pub consistency: Timing,
    /// The log_nodes table (with its index) on disk, and how that was read.
    pub table_bytes: Option<u64>,
    pub table_how: String,
}

/// One kind of proof over many random choices.
#[derive(Debug, Clone, Default)]
pub struct Timing {
    /// Microseconds each, sorted.
    pub micros: Vec<f64>,
    /// The fewest and the most hashes a proof had.
    pub hashes: (usize, usize),
}

impl Timing {
    pub fn median(&self) -> f64 {
        self.quantile(0.5)
    }
    pub fn p99(&self) -> f64 {
        self.quantile(0.99)
    }
    fn quantile(&self, q: f64) -> f64 {
        let n = self.micros.len();
        if n == 0 {
            return 0.0;
        }
        let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
        self.micros[i]
    }
    fn add(&mut self, micros: f64, hashes: usize) {
        if self.micros.is_empty() {
            self.hashes = (hashes, hashes);
        }
        self.micros.push(micros);
        self.hashes = (self.hashes.0.min(hashes), self.hashes.1.max(hashes));
    }
}

/// Builds a log of `leaves` in a fresh ledger `on`, then times `samples` inclusion proofs
/// and `samples / 5` consistency proofs at random.
pub async fn measure(
    rig: &crate::rig::Rig,
    on: On<'_>,
    leaves: u64,
    samples: usize,
) -> anyhow::Result<LogProofs> {
    let database = format!("proof_log_{leaves}");
    let url = match on {
        On::Sqlite => {
            let url = format!("sqlite://{}", rig.dir.path().join(&database).display());
            rig.remove_ledger(&url);
            url
        }
        On::Postgres(pg) => pg.database(&database).await?,
    };
    let backend = match on {
        On::Sqlite => "SQLite",
        On::Postgres(_) => "PostgreSQL",
    };
    println!("proof log on {backend}: {leaves} leaves");
    let ledger = Ledger::open(&url).await?;
    let (range, nodes, build) = build_log(&ledger, leaves).await?;
    println!("  built in {:.1}s ({nodes} nodes)", build.as_secs_f64());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ leaves);
    let inclusion = inclusions(&ledger, &range, samples, &mut rng).await?;
    let consistency = consistencies(&ledger, &range, (samples / 5).max(1), &mut rng).await?;
    ledger.close().await;
    let (table_bytes, table_how) = table_size(on, &url).await;
    match on {
        On::Sqlite => rig.remove_ledger(&url),
        On::Postgres(pg) => pg.drop_database(&database).await?,
    }
    let p = LogProofs {
        backend,
        leaves,
        nodes,
        build,
        inclusion,
        consistency,
        table_bytes,
        table_how,
    };
    println!(
        "  inclusion: median {:.0} µs, p99 {:.0} µs, {}–{} hashes; consistency: median {:.0} µs, \
         p99 {:.0} µs, {}–{} hashes; log_nodes {}",
        p.inclusion.median(),
        p.inclusion.p99(),
        p.inclusion.hashes.0,
        p.inclusion.hashes.1,
        p.consistency.median(),
        p.consistency.p99(),
        p.consistency.hashes.0,
        p.consistency.hashes.1,
        p.table_bytes.map_or("size unknown".to_owned(), |b| format!(
            "{:.1} MB",
            b as f64 / 1e6
        ))
    );
    Ok(p)
}

/// Appends `leaves` manifest-like lines, storing the nodes in batches.
async fn build_log(ledger: &Ledger, leaves: u64) -> anyhow::Result<(CompactRange, u64, Duration)> {
    let started = Instant::now();
    let mut range = CompactRange::empty();
    let mut batch = Vec::with_capacity(NODE_BATCH + 64);
    let mut nodes = 0u64;
    for i in 0..leaves {
        batch.extend(range.append(merkle::leaf_hash(leaf_line(i).as_bytes())));
        if batch.len() >= NODE_BATCH || i + 1 == leaves {
            nodes += batch.len() as u64;
            ledger.add_log_nodes(&std::mem::take(&mut batch)).await?;
        }
    }
    Ok((range, nodes, started.elapsed()))
}

fn leaf_line(i: u64) -> String {
    format!(
        "{{\"uuid\":\"bench-{i:012}\",\"key\":\"calls/20000013/2026/12/07/bench-{i:012}.wav\",\
         \"size\":131072,\"sha256\":\"{i:064x}\"}}"
    )
}

/// One proof timed: the nodes named, read and folded.
async fn timed(ledger: &Ledger, wanted: Wanted) -> anyhow::Result<(Vec<Hash>, f64)> {
    let started = Instant::now();
    let ids = merkle::needed(wanted)?;
    let nodes = ledger.log_nodes(&ids).await?;
    let proof = merkle::prove(wanted, &nodes)?;
    Ok((proof, started.elapsed().as_secs_f64() * 1e6))
}

async fn inclusions(
    ledger: &Ledger,
    range: &CompactRange,
    samples: usize,
    rng: &mut Rng,
) -> anyhow::Result<Timing> {
    let (size, root) = (range.size(), range.root());
    let mut t = Timing::default();
    for _ in 0..samples {
        let index = rng.below(size);
        let (proof, micros) = timed(ledger, Wanted::Inclusion { index, size }).await?;
        let leaf = merkle::leaf_hash(leaf_line(index).as_bytes());
        merkle::verify_inclusion(&leaf, index, size, &proof, &root)
            .with_context(|| format!("the inclusion proof of leaf {index}"))?;
        t.add(micros, proof.len());
    }
    t.micros.sort_by(f64::total_cmp);
    Ok(t)
}

async fn consistencies(
    ledger: &Ledger,
    range: &CompactRange,
    samples: usize,
    rng: &mut Rng,
) -> anyhow::Result<Timing> {
    let (new, new_root) = (range.size(), range.root());
    let mut t = Timing::default();
    for _ in 0..samples {
        let old = 1 + rng.below(new - 1);
        let (proof, micros) = timed(ledger, Wanted::Consistency { old, new }).await?;
        let (old_root, _) = timed(ledger, Wanted::Root { size: old }).await?;
        let Some(old_root) = old_root.first() else {
            bail!("no root for a tree of {old}");
        };
        merkle::verify_consistency(old, new, old_root, &new_root, &proof)
            .with_context(|| format!("the consistency proof from {old} to {new}"))?;
        t.add(micros, proof.len());
    }
    t.micros.sort_by(f64::total_cmp);
    Ok(t)
}

/// The log_nodes table and its indexes on disk: SQLite's `dbstat`, PostgreSQL's
/// `pg_total_relation_size`.
async fn table_size(on: On<'_>, url: &str) -> (Option<u64>, String) {
    let read = async {
        match on {
            On::Sqlite => {
                let pool = sqlx::SqlitePool::connect(url).await?;
                let bytes: i64 = sqlx::query_scalar(
                    "SELECT SUM(d.pgsize) FROM dbstat d JOIN sqlite_master m ON m.name = d.name \
                     WHERE m.tbl_name = 'log_nodes'",
                )
                .fetch_one(&pool)
                .await?;
                pool.close().await;
                anyhow::Ok((bytes, "SQLite `dbstat`: the table's and its indexes' pages"))
            }
            On::Postgres(_) => {
                let pool = sqlx::PgPool::connect(url).await?;
                let bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('log_nodes')")
                    .fetch_one(&pool)
                    .await?;
                pool.close().await;
                Ok((bytes, "`pg_total_relation_size`: heap, indexes and TOAST"))
            }
        }
    };
    match read.await {
        Ok((bytes, how)) => (u64::try_from(bytes).ok(), how.to_owned()),
        Err(e) => (None, format!("not read: {e}")),
    }
}

/// A small deterministic generator (xorshift64*), so every run proves the same leaves.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}
