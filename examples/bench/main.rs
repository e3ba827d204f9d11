//! The benchmark behind BENCHMARKS.md (`bench/run` builds and runs it): the real callvault
//! binary against the provider simulator and an in-process S3 server on loopback, next to
//! the ceiling (the same bytes put from memory) and rclone `copyurl`, all in one process
//! run so that the ratios hold on a noisy machine; and the ledger on PostgreSQL (a server
//! the harness starts) alone, under several processes, and as it grows. Not a test: it
//! measures and reports.

mod accounts;
mod ceiling;
mod checksums;
mod child;
mod figures;
mod garage;
mod import;
mod ledger_growth;
mod machine;
mod pg_history;
mod pg_ledger;
mod postgres;
mod processes;
mod proof;
mod proof_log;
mod rclone;
mod report;
mod rig;
mod samework;
mod search;
mod source;
mod targets;
mod transfers;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;

use ledger_growth::On;
use postgres::Postgres;
use report::Results;
use rig::{Rig, Server};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
/// callvault's default part size.
pub const PART_MIB: usize = 8;
/// The concurrency the comparisons with earlier issues' targets (and rclone) run at: the
/// default before issue 20.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// `callvault run`'s default concurrency and memory budget (`--memory-budget-mib`) since
/// issue 20.
pub const CALLVAULT_DEFAULT_CONCURRENCY: usize = 64;
pub const MEMORY_BUDGET_MIB: u64 = 128;

#[derive(Debug, Parser)]
#[command(about = "callvault benchmarks (see BENCHMARKS.md)")]
struct Args {
    /// Smaller counts and sizes, to try the harness in a minute or two.
    #[arg(long)]
    quick: bool,
    /// Write the measured section into this markdown file (replacing an earlier one).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The callvault binary to measure.
    #[arg(long, default_value = "target/release/callvault")]
    callvault: PathBuf,
    /// Measure each transfer this many times (default: 3, or 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Leave rclone out (for trying changes; the targets against it are then not shown).
    #[arg(long)]
    no_rclone: bool,
    /// Measure the transfers against s3s-fs only (Garage is otherwise started when installed).
    #[arg(long)]
    no_garage: bool,
    /// Only these parts (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Part>,
    /// Also write the figures of the parts that ran as JSON to this file (for `bench/compare`).
    #[arg(long)]
    figures_json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Small,
    Large,
    /// The SQLite ledger's growth.
    Ledger,
    Logins,
    /// The ledger alone on PostgreSQL: claims and settlements by 64 claimers.
    PgLedger,
    /// The small set by 1, 2 and 4 processes on one PostgreSQL ledger, and one on SQLite.
    PgProcesses,
    /// The PostgreSQL ledger's growth.
    PgStatus,
    /// `callvault find` on SQLite ledgers of 10,000 and 1,000,000 calls.
    Search,
    /// Ten accounts of 200 small recordings in one run against one account of 2,000.
    Accounts,
    /// Issue 20: part checksums (CRC64NVME, CRC32C, SHA-256, none) on each server: cost,
    /// and whether the server refuses a wrong one.
    Checksums,
    /// Issue 19: the pass with a signed, time-stamped log against without; proofs from a
    /// log of 1,000,000 leaves (SQLite and PostgreSQL); export of 1,000 recordings vs `get`.
    Proof,
    /// Issue 20: `callvault import` of 100,000 callbacks on SQLite and on PostgreSQL.
    Import,
}

/// Counts and sizes of one mode.
struct Plan {
    small: (usize, u64),
    /// callvault and the store-only ceiling on the small set (callvault also at its defaults).
    small_concurrency: Vec<usize>,
    /// The same-work client's sweep on the small set.
    same_work_concurrency: Vec<usize>,
    large: (usize, u64),
    large_concurrency: Vec<usize>,
    ledger_rows: Vec<usize>,
    ledger_batch: usize,
    /// Transfers are measured this many times, interleaved; the tables show medians.
    rounds: usize,
    logins_concurrency: usize,
    invalidate_every: u32,
    /// Calls of history in the ledger the claimers work on.
    claim_rows: usize,
    /// (claimers, records per claim) measured, in order: 64 with 1 and with 16 records a
    /// claim, then 8, 16 and 32 with 1 (where claim latency turns).
    claim_variants: Vec<(usize, u32)>,
    /// Due calls added for each claim size, and the time the claimers have for them.
    claim_due: usize,
    claim_time: std::time::Duration,
    /// (processes, concurrency of each) on PostgreSQL; SQLite runs one process at the total.
    processes: Vec<(usize, usize)>,
    /// (accounts, recordings of each) in the run over many accounts.
    accounts: (usize, usize),
    /// Leaves of the log proofs are timed on, proofs timed, recordings exported.
    proof: (u64, usize, usize),
}

impl Plan {
    fn new(quick: bool) -> Self {
        Self {
            small: (if quick { 300 } else { 2_000 }, 128 * KIB),
            small_concurrency: vec![8, 32],
            same_work_concurrency: vec![8, 16, 32, 64, 128],
            large: (4, if quick { 48 * MIB } else { 512 * MIB }),
            large_concurrency: vec![2, 8],
            ledger_rows: if quick {
                vec![10_000, 100_000]
            } else {
                vec![10_000, 1_000_000]
            },
            ledger_batch: if quick { 200 } else { 500 },
            rounds: if quick { 1 } else { 3 },
            logins_concurrency: 64,
            invalidate_every: 25,
            claim_rows: if quick { 100_000 } else { 1_000_000 },
            claim_variants: vec![(64, 1), (64, 16), (8, 1), (16, 1), (32, 1)],
            claim_due: if quick { 5_000 } else { 50_000 },
            claim_time: std::time::Duration::from_secs(if quick { 5 } else { 20 }),
            processes: vec![(1, 16), (2, 8), (4, 4)],
            accounts: (10, if quick { 30 } else { 200 }),
            proof: if quick {
                (100_000, 200, 100)
            } else {
                (1_000_000, 1_000, 1_000)
            },
        }
    }
}

impl Plan {
    fn proof(&self) -> proof::ProofPlan {
        let (leaves, samples, export) = self.proof;
        proof::ProofPlan {
            small: self.small,
            rounds: self.rounds,
            leaves,
            samples,
            export,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wants = |p: Part| args.only.is_empty() || args.only.contains(&p);
    let callvault = std::fs::canonicalize(&args.callvault).with_context(|| {
        format!(
            "{} not found: build it with `cargo build --release`",
            args.callvault.display()
        )
    })?;
    let rclone_version = rclone::version().await;
    if (wants(Part::Small) || wants(Part::Large))
        && !args.no_rclone
        && !rclone_version.starts_with("rclone v")
    {
        bail!("{rclone_version}: install it (`apt-get install -y rclone`; bench/run does)");
    }
    let mut machine = machine::Machine::describe(rclone_version).await;
    println!(
        "{} cores, {}, {}",
        machine.nproc, machine.mem_total, machine.cpu_model
    );
    let mut plan = Plan::new(args.quick);
    plan.rounds = args.rounds.unwrap_or(plan.rounds).max(1);
    let with_garage = !args.no_garage
        && [Part::Small, Part::Large, Part::Checksums]
            .into_iter()
            .any(wants);
    let rig = Rig::start(callvault, with_garage).await?;
    if let Some(g) = &rig.garage {
        machine.garage = Some(g.version.clone());
    }
    let mut results = Results::default();
    let pg = if [
        Part::PgLedger,
        Part::PgProcesses,
        Part::PgStatus,
        Part::Proof,
        Part::Import,
    ]
    .into_iter()
    .any(wants)
    {
        let pg = Postgres::start().await?;
        println!("{}", pg.version);
        machine.postgres = Some(pg.version.clone());
        Some(pg)
    } else {
        None
    };

    if wants(Part::Small) {
        small_set(&rig, &plan, !args.no_rclone, &mut results).await?;
    }
    if wants(Part::Large) {
        large_set(&rig, &plan, !args.no_rclone, &mut results).await?;
    }
    results.merge_rounds();
    if wants(Part::Checksums) {
        results.checksums = Some(checksum_costs(&rig, &plan).await?);
    }

    if wants(Part::Ledger) {
        let batches = growth_batches(&rig, &plan);
        for &rows in &plan.ledger_rows {
            println!("ledger growth: {rows} rows");
            let g = ledger_growth::measure(&rig, On::Sqlite, rows, &batches, plan.small.1);
            let g = g.await?;
            results.growth.push(g);
        }
    }

    if wants(Part::Search) {
        results.search = search::measure(&rig, &plan.ledger_rows).await?;
    }

    if let Some(pg) = &pg {
        postgres_parts(&rig, pg, &plan, &wants, &mut results).await?;
    }

    if wants(Part::Accounts) {
        let (accounts, each) = plan.accounts;
        let f = accounts::measure(&rig, accounts, each, plan.small.1, plan.rounds);
        results.accounts = Some(f.await?);
    }

    if wants(Part::Proof) {
        results.proof = Some(proof::measure(&rig, pg.as_ref(), &plan.proof()).await?);
    }

    if let Some(pg) = pg.as_ref().filter(|_| wants(Part::Import)) {
        let n = if args.quick { 20_000 } else { 100_000 };
        results.import = Some(import::measure(&rig, pg, n).await?);
    }

    if wants(Part::Logins) {
        results.logins = Some(logins(&rig, &plan).await?);
    }

    let command = command_line(&args);
    let section = report::markdown(&machine, &command, &machine::load(), &results);
    println!("\n{section}");
    if let Some(out) = &args.out {
        report::write_into(out, &section)?;
        println!("written to {}", out.display());
    }
    if let Some(path) = &args.figures_json {
        figures::write(path, args.quick, plan.rounds, &results)?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// How the run was asked for, as `bench/run` takes it.
fn command_line(args: &Args) -> String {
    let mut command = String::from("bench/run");
    if args.quick {
        command.push_str(" --quick");
    }
    if !args.only.is_empty() {
        let parts: Vec<String> = args
            .only
            .iter()
            .filter_map(|p| clap::ValueEnum::to_possible_value(p).map(|v| v.get_name().to_owned()))
            .collect();
        command.push_str(&format!(" --only {}", parts.join(",")));
    }
    if let Some(rounds) = args.rounds {
        command.push_str(&format!(" --rounds {rounds}"));
    }
    command
}

/// The small recordings on every server: callvault (at its defaults and at each
/// concurrency), the store-only ceiling, the same-work client swept over its concurrencies,
/// rclone once; the source alone once; `plan.rounds` rounds, interleaved.
async fn small_set(
    rig: &Rig,
    plan: &Plan,
    rclone: bool,
    results: &mut Results,
) -> anyhow::Result<()> {
    let (n, size) = plan.small;
    let names = rig.recordings("small", n, size);
    let contents = ceiling::contents(&names, size).await?;
    results
        .notes
        .push(format!("`small` is {n} × {} KiB.", size / KIB));
    warm_up(rig, &contents).await?;
    for round in 0..plan.rounds {
        println!("small, round {}", round + 1);
        for server in rig.servers() {
            small_on(rig, plan, server, (&names, &contents), results).await?;
            if round == 0 && rclone {
                let t = transfers::rclone(rig, server, "small", &names, size, DEFAULT_CONCURRENCY);
                results.transfers.push(t.await?);
            }
        }
        let t = transfers::download_only(rig, "small", &names, size, DEFAULT_CONCURRENCY);
        results.transfers.push(t.await?);
    }
    Ok(())
}

/// One round of the small set against one server.
async fn small_on(
    rig: &Rig,
    plan: &Plan,
    server: Server,
    (names, contents): (&[String], &[(String, bytes::Bytes)]),
    results: &mut Results,
) -> anyhow::Result<()> {
    let size = plan.small.1;
    let t = transfers::callvault(rig, server, "small", names, size, None).await?;
    results.transfers.push(t);
    for &c in &plan.small_concurrency {
        let t = transfers::callvault(rig, server, "small", names, size, Some(c)).await?;
        results.transfers.push(t);
        let t = transfers::ceiling(rig, server, "small", contents, c, 1).await?;
        results.transfers.push(t);
    }
    for &c in &plan.same_work_concurrency {
        let t = transfers::same_work(rig, server, "small", names, size, c).await?;
        results.transfers.push(t);
    }
    Ok(())
}

/// Puts the set once, unmeasured, into each server that keeps a block once by its hash
/// (Garage), so that no measured run is the only one to write the blocks.
async fn warm_up(rig: &Rig, contents: &[(String, bytes::Bytes)]) -> anyhow::Result<()> {
    if !rig.servers().contains(&Server::Garage) {
        return Ok(());
    }
    let up = ceiling::Upload {
        concurrency: 8,
        part_size: PART_MIB * MIB as usize,
        parts_in_flight: 1,
    };
    let bucket = rig.bucket_on(Server::Garage).await?;
    ceiling::upload(rig, Server::Garage, &bucket, contents, &up).await?;
    rig.drop_bucket_on(Server::Garage, &bucket).await
}

/// The large recordings on every server: callvault at its defaults and at each concurrency,
/// the ceiling at each number of transfers callvault had at once, rclone; the source alone
/// once a round; then callvault on twice the size (s3s-fs).
async fn large_set(
    rig: &Rig,
    plan: &Plan,
    rclone: bool,
    results: &mut Results,
) -> anyhow::Result<()> {
    let (n, size) = plan.large;
    let names = rig.recordings("large", n, size);
    let contents = ceiling::contents(&names, size).await?;
    results.sha256_cpu_per_gb = Some(sha256_cpu_per_gb(&contents));
    warm_up(rig, &contents).await?;
    for round in 0..plan.rounds {
        println!("large, round {}", round + 1);
        for server in rig.servers() {
            large_on(rig, plan, server, (&names, &contents), results).await?;
            if rclone {
                let t = transfers::rclone(rig, server, "large", &names, size, n).await?;
                results.transfers.push(t);
            }
        }
        let t = transfers::download_only(rig, "large", &names, size, n).await?;
        results.transfers.push(t);
    }
    drop(contents);
    let doubled = rig.recordings("large2", n, size * 2);
    let set = "large ×2";
    let c = Some(DEFAULT_CONCURRENCY);
    let t = transfers::callvault(rig, Server::S3sFs, set, &doubled, size * 2, c).await?;
    results.transfers.push(t);
    results.notes.push(format!(
        "`large` is {n} × {} MiB, `large ×2` is {n} × {} MiB.",
        size / MIB,
        size * 2 / MIB
    ));
    Ok(())
}

/// One round of the large set against one server.
async fn large_on(
    rig: &Rig,
    plan: &Plan,
    server: Server,
    (names, contents): (&[String], &[(String, bytes::Bytes)]),
    results: &mut Results,
) -> anyhow::Result<()> {
    let (n, size) = plan.large;
    let t = transfers::callvault(rig, server, "large", names, size, None).await?;
    results.transfers.push(t);
    for &c in &plan.large_concurrency {
        let t = transfers::callvault(rig, server, "large", names, size, Some(c)).await?;
        results.transfers.push(t);
    }
    // The ceiling at each number of transfers callvault had at once.
    let mut active: Vec<usize> = plan.large_concurrency.iter().map(|&c| c.min(n)).collect();
    active.push(DEFAULT_CONCURRENCY.min(n));
    active.sort_unstable();
    active.dedup();
    for &c in &active {
        for parts in [1, 4] {
            let t = transfers::ceiling(rig, server, "large", contents, c, parts).await?;
            results.transfers.push(t);
        }
    }
    Ok(())
}

/// Part checksums on each server: the small set as single PUTs at 32, the large set as
/// multipart uploads at one transfer per recording.
async fn checksum_costs(rig: &Rig, plan: &Plan) -> anyhow::Result<checksums::ChecksumBench> {
    let (n, size) = plan.small;
    let small = ceiling::contents(&rig.recordings("small", n, size), size).await?;
    let (n, size) = plan.large;
    let large = ceiling::contents(&rig.recordings("large", n, size), size).await?;
    warm_up(rig, &small).await?;
    warm_up(rig, &large).await?;
    let sets = checksums::Sets {
        small: (&small, 32),
        large: (&large, n),
        part_size: PART_MIB * MIB as usize,
        rounds: plan.rounds,
    };
    checksums::measure(rig, &sets).await
}

/// The batches a growth measurement archives, one run each, after its history.
fn growth_batches(rig: &Rig, plan: &Plan) -> Vec<Vec<String>> {
    (0..ledger_growth::RUNS)
        .map(|r| rig.recordings(&format!("batch{r}"), plan.ledger_batch, plan.small.1))
        .collect()
}

/// The PostgreSQL parts: the ledger's growth, the ledger alone under 64 claimers, and the
/// small set by several processes on one ledger (against one on SQLite).
async fn postgres_parts(
    rig: &Rig,
    pg: &Postgres,
    plan: &Plan,
    wants: &impl Fn(Part) -> bool,
    results: &mut Results,
) -> anyhow::Result<()> {
    // The claim benchmark reuses the PostgreSQL ledger the growth measurement filled.
    let mut filled_pg = None;
    if wants(Part::PgStatus) {
        let batches = growth_batches(rig, plan);
        for &rows in &plan.ledger_rows {
            println!("ledger growth on PostgreSQL: {rows} rows");
            let on = On::Postgres(pg);
            let g = ledger_growth::measure(rig, on, rows, &batches, plan.small.1).await?;
            results.growth.push(g);
            if rows == plan.claim_rows {
                filled_pg = Some(pg.url(&ledger_growth::pg_database(rows)));
            } else {
                pg.drop_database(&ledger_growth::pg_database(rows)).await?;
            }
        }
    }

    if wants(Part::PgLedger) {
        let rows = plan.claim_rows;
        println!(
            "the ledger alone on PostgreSQL: {rows} rows, claimers × records a claim: {:?}",
            plan.claim_variants
        );
        let url = match filled_pg.take() {
            Some(url) => url,
            None => {
                let url = pg.database(&ledger_growth::pg_database(rows)).await?;
                callvault::ledger::Ledger::open(&url).await?.close().await;
                pg_history::fill(&url, rows, chrono::Utc::now()).await?;
                url
            }
        };
        for &(claimers, limit) in &plan.claim_variants {
            let c = pg_ledger::measure(
                pg,
                &url,
                rows,
                claimers,
                limit,
                plan.claim_due,
                plan.claim_time,
            );
            results.claiming.push(c.await?);
        }
    }
    pg.drop_database(&ledger_growth::pg_database(plan.claim_rows))
        .await?;

    if wants(Part::PgProcesses) {
        let (n, size) = plan.small;
        let names = rig.recordings("processes", n, size);
        let total = plan.processes.first().map_or(16, |&(p, c)| p * c);
        let mut rows = Vec::new();
        for round in 0..plan.rounds {
            println!("processes on one ledger, round {}", round + 1);
            let p = processes::measure(rig, On::Sqlite, 1, total, &names, size).await?;
            rows.push(p);
            for &(count, each) in &plan.processes {
                let on = On::Postgres(pg);
                let p = processes::measure(rig, on, count, each, &names, size).await?;
                rows.push(p);
            }
        }
        results.processes = processes::merge_rounds(rows);
    }
    Ok(())
}

/// CPU seconds per GB of SHA-256 alone: the large recordings hashed from memory on one
/// thread with sha2 (callvault's hasher), this process's CPU time measured around it.
fn sha256_cpu_per_gb(contents: &[(String, bytes::Bytes)]) -> f64 {
    use sha2::Digest;
    let meter = machine::CpuMeter::start();
    let mut bytes = 0u64;
    let mut digests = Vec::with_capacity(contents.len());
    for (_, body) in contents {
        digests.push(sha2::Sha256::digest(body));
        bytes += body.len() as u64;
    }
    let (cpu, _) = meter.stop();
    std::hint::black_box(digests);
    let per_gb = cpu.as_secs_f64() / (bytes as f64 / 1e9);
    println!(
        "  SHA-256 alone: {per_gb:.2} CPU s/GB over {} MB",
        bytes / 1_000_000
    );
    per_gb
}

/// The small set at high concurrency with the token invalidated every few link requests.
async fn logins(rig: &Rig, plan: &Plan) -> anyhow::Result<report::Logins> {
    let (n, size) = plan.small;
    let names = rig.recordings("logins", n, size);
    let ledger = rig.ledger_with("logins", &names, size).await?;
    let bucket = rig.bucket()?;
    rig.sim
        .set_faults(|f| f.invalidate_tokens_every = Some(plan.invalidate_every));
    let before = rig.sim.stats();
    let run = rig
        .callvault_run(&ledger, &bucket, plan.logins_concurrency, PART_MIB, n)
        .await;
    let after = rig.sim.stats();
    rig.sim.set_faults(|f| f.invalidate_tokens_every = None);
    let (child, _) = run?;
    rig.drop_bucket(&bucket)?;
    rig.remove_ledger(&ledger);
    let l = report::Logins {
        concurrency: plan.logins_concurrency,
        records: n,
        every: plan.invalidate_every,
        invalidations: after.invalidations - before.invalidations,
        logins: after.logins - before.logins,
        wall: child.wall,
    };
    println!(
        "  logins: {} invalidations, {} logins in {:.1}s",
        l.invalidations,
        l.logins,
        l.wall.as_secs_f64()
    );
    Ok(l)
}
