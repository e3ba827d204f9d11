//! The run's figures as JSON (`--figures-json PATH`), for tools that compare two builds
//! (`bench/compare`). The markdown section is for people and rounds its numbers; this keeps
//! full precision and names the few figures a change is held to, so a script never has to
//! know the tables' layout. Only the parts that ran appear.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::DEFAULT_CONCURRENCY;
use crate::report::{CALLVAULT, Results};

/// The key figures' names, shared with `bench/compare`, which reads the same names from
/// the markdown of an older harness that lacks this option.
pub const SMALL_DEFAULT: &str = "small_recordings_per_s_c8";
/// Followed by the claim size: `pg_ledger_records_per_s_claim1`, `..._claim16`.
pub const PG_LEDGER_PREFIX: &str = "pg_ledger_records_per_s_claim";

/// Writes the figures of `results` to `path`.
pub fn write(path: &Path, quick: bool, rounds: usize, results: &Results) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&figures(quick, rounds, results))?;
    std::fs::write(path, text + "\n")?;
    Ok(())
}

fn figures(quick: bool, rounds: usize, r: &Results) -> Value {
    json!({
        "quick": quick,
        "rounds": rounds,
        "figures": key_figures(r),
        "transfers": r.transfers.iter().map(|t| json!({
            "server": t.server,
            "set": t.set,
            "tool": t.tool,
            "concurrency": t.concurrency,
            "records": t.records,
            "bytes": t.bytes,
            "seconds": secs(t.wall),
            "seconds_all_rounds": t.walls.iter().map(|w| secs(*w)).collect::<Vec<_>>(),
            "records_per_s": t.per_second(),
            "mb_per_s": t.mb_per_second(),
            "cpu_s_per_gb": t.cpu_per_gb(),
        })).collect::<Vec<_>>(),
        "pg_ledger": r.claiming.iter().map(|c| json!({
            "records_per_claim": c.limit,
            "claimers": c.claimers,
            "history_rows": c.rows,
            "records": c.records,
            "seconds": secs(c.wall),
            "records_per_s": c.per_second(),
            "claim_p50_ms": secs(c.p50) * 1e3,
            "claim_p99_ms": secs(c.p99) * 1e3,
            "server_cpu_ms_per_record": c.server_ms_per_record(),
        })).collect::<Vec<_>>(),
        "ledger_growth": r.growth.iter().map(|g| json!({
            "backend": g.backend,
            "rows": g.rows,
            "status_process_ms": secs(g.status_cli) * 1e3,
            "status_queries_ms": secs(g.status_query) * 1e3,
            "run_ms_per_record": secs(g.per_record()) * 1e3,
        })).collect::<Vec<_>>(),
        "processes": r.processes.iter().map(|p| json!({
            "backend": p.backend,
            "processes": p.processes,
            "concurrency_each": p.each,
            "seconds": secs(p.wall),
            "seconds_all_rounds": p.walls.iter().map(|w| secs(*w)).collect::<Vec<_>>(),
            "records_per_s": p.per_second(),
        })).collect::<Vec<_>>(),
    })
}

/// The figures issue 17 holds a ledger change to: small recordings a second by callvault at
/// its default concurrency (SQLite), and PostgreSQL claims+settlements a second by 64 claimers per claim size.
fn key_figures(r: &Results) -> Map<String, Value> {
    let mut key = Map::new();
    if let Some(t) = r.find("small", CALLVAULT, Some(DEFAULT_CONCURRENCY)) {
        key.insert(SMALL_DEFAULT.into(), json!(t.per_second()));
    }
    for c in r.claiming.iter().filter(|c| c.claimers == 64) {
        key.insert(
            format!("{PG_LEDGER_PREFIX}{}", c.limit),
            json!(c.per_second()),
        );
    }
    key
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
