//! The targets, each with its measured figure and whether it holds, computed from
//! the results.

use crate::ledger_growth::{POSTGRES, SQLITE};
use crate::report::{
    CALLVAULT, CALLVAULT_DEFAULTS, CEILING, CEILING_PARTS, RCLONE, Results, SAME_WORK,
};

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Each target of the issue, its measured figure and whether it holds.
pub fn targets(r: &Results) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    if let (Some((query, cli)), Some(small), Some(big)) = (
        crate::search::ratios(&r.search),
        r.search.first(),
        r.search.last(),
    ) {
        let slowest = big.searches.iter().map(|t| t.cli).max().unwrap_or_default();
        out.push((
            format!(
                "`find` at {} calls within 1.5× of {} calls, well under a second",
                big.rows, small.rows
            ),
            format!(
                "slowest ratio: query {query:.2}×, `find` process {cli:.2}×; slowest `find` {:.0} ms",
                slowest.as_secs_f64() * 1e3
            ),
            query.max(cli) <= 1.5 && slowest < std::time::Duration::from_millis(500),
        ));
    }
    out.extend(same_work(r));
    out.extend(large_vs_ceiling(r));
    if let (Some(cv), Some(c)) = (
        r.find("small", CALLVAULT, Some(8)),
        r.find("small", CEILING, Some(8)),
    ) {
        let ratio = cv.per_second() / c.per_second();
        out.push((
            "small, callvault at 8 vs the ceiling (recording + sidecar PUT) at 8: ≥ 80%".into(),
            format!(
                "{:.1} of {:.1} recordings/s = {:.0}%",
                cv.per_second(),
                c.per_second(),
                ratio * 100.0
            ),
            ratio >= 0.80,
        ));
    }
    if let Some(per) = r
        .find("small", CALLVAULT, Some(8))
        .and_then(|t| t.commits_per_record())
    {
        out.push((
            "small, ledger commits per archived record at 8 (counted): ≤ 1.0".into(),
            format!("{per:.3}"),
            per <= 1.0,
        ));
    }
    if let (Some(cv), Some(sha)) = (r.find("large", CALLVAULT, Some(8)), r.sha256_cpu_per_gb)
        && let Some(own) = cv.own_cpu_per_gb()
    {
        out.push((
            "large, callvault's own CPU per GB at 8: ≤ 2× SHA-256 alone".into(),
            format!("{own:.2} vs {sha:.2} s/GB = {:.2}×", own / sha),
            own <= 2.0 * sha,
        ));
    }
    for set in ["small", "large"] {
        let (Some(cv), Some(rc)) = (r.find(set, CALLVAULT, Some(8)), r.best(set, RCLONE)) else {
            continue;
        };
        let ratio = cv.per_second() / rc.per_second();
        let (want, ok, unit, a, b) = if set == "small" {
            (
                "≥ 3× rclone",
                ratio >= 3.0,
                "recordings/s",
                cv.per_second(),
                rc.per_second(),
            )
        } else {
            let (a, b) = (cv.mb_per_second(), rc.mb_per_second());
            ("no slower than rclone", ratio >= 1.0, "MB/s", a, b)
        };
        out.push((
            format!(
                "{set}, callvault at 8 vs rclone at {}: {want}",
                rc.concurrency
            ),
            format!("{a:.1} vs {b:.1} {unit} = {ratio:.2}×"),
            ok,
        ));
    }
    let over: Vec<String> = r
        .transfers
        .iter()
        .filter(|t| matches!((t.peak_rss_kib, t.rss_limit_kib), (Some(p), Some(l)) if p > l))
        .map(|t| format!("{} {} at {}", t.server, t.set, t.concurrency_shown()))
        .collect();
    let runs = r
        .transfers
        .iter()
        .filter(|t| t.peak_rss_kib.is_some())
        .count();
    if runs > 0 {
        out.push((
            "peak RSS ≤ 64 MiB + min(memory budget, concurrency × 2 parts) (`transfers::rss_limit_kib`), every callvault run".into(),
            if over.is_empty() {
                format!("all {runs} runs within")
            } else {
                format!("over in: {}", over.join(", "))
            },
            over.is_empty(),
        ));
    }
    if let (Some(a), Some(b)) = (
        r.find("large", CALLVAULT, Some(8)),
        r.find("large ×2", CALLVAULT, Some(8)),
    ) && let (Some(pa), Some(pb)) = (a.peak_rss_kib, b.peak_rss_kib)
    {
        let ratio = pb as f64 / pa as f64;
        out.push((
            "peak RSS the same when the recording size doubles (within 10%)".into(),
            format!("{:.1} → {:.1} MiB = {ratio:.2}×", mib(pa), mib(pb)),
            ratio <= 1.10,
        ));
    }
    for backend in [SQLITE, POSTGRES] {
        let growth: Vec<_> = r.growth.iter().filter(|g| g.backend == backend).collect();
        let (Some(first), Some(last)) = (growth.first(), growth.last()) else {
            continue;
        };
        if growth.len() < 2 {
            continue;
        }
        let status = last.status_cli.as_secs_f64() / first.status_cli.as_secs_f64();
        out.push((
            format!(
                "`status` at {} vs {} rows, {backend}: within 1.5×",
                last.rows, first.rows
            ),
            format!(
                "{:.1} vs {:.1} ms = {status:.2}×",
                last.status_cli.as_secs_f64() * 1e3,
                first.status_cli.as_secs_f64() * 1e3
            ),
            status <= 1.5,
        ));
        // Issue 20 holds SQLite's run cost to 1.2×; PostgreSQL's stays at 1.5×.
        let bound = if backend == SQLITE { 1.2 } else { 1.5 };
        let per = last.per_record().as_secs_f64() / first.per_record().as_secs_f64();
        out.push((
            format!(
                "run cost per record at {} vs {} rows, {backend}: within {bound}×",
                last.rows, first.rows
            ),
            format!(
                "{:.2} vs {:.2} ms = {per:.2}×",
                last.per_record().as_secs_f64() * 1e3,
                first.per_record().as_secs_f64() * 1e3
            ),
            per <= bound,
        ));
    }
    // Issue 20: 64 claimers take at least 3,000 records a second at 16 a claim, and answer
    // a claim of 1 within 50 ms at the 99th percentile (the other claimer counts show where
    // latency turns; no target of their own).
    for c in r.claiming.iter().filter(|c| c.claimers == 64) {
        if c.limit > 1 {
            let per = c.per_second();
            out.push((
                format!(
                    "the ledger alone on PostgreSQL ({} rows, {} claimers, {} per claim): ≥ 3,000 records/s",
                    c.rows, c.claimers, c.limit
                ),
                format!("{per:.0} records/s"),
                per >= 3000.0,
            ));
        } else {
            let p99 = c.p99.as_secs_f64() * 1e3;
            out.push((
                format!(
                    "the ledger alone on PostgreSQL ({} rows, {} claimers, 1 per claim): p99 claim latency < 50 ms",
                    c.rows, c.claimers
                ),
                format!("{p99:.1} ms (p50 {:.1} ms)", c.p50.as_secs_f64() * 1e3),
                p99 < 50.0,
            ));
        }
    }
    if let Some(l) = &r.logins {
        let per = l.per_invalidation();
        out.push((
            format!(
                "logins per token invalidation at concurrency {}: 1",
                l.concurrency
            ),
            format!(
                "{per:.2} ({} logins, {} invalidations)",
                l.logins, l.invalidations
            ),
            l.invalidations > 0 && l.logins == l.invalidations + 1,
        ));
    }
    if let Some(f) = &r.accounts {
        out.extend(f.targets());
    }
    if let Some(p) = &r.proof {
        out.extend(p.targets());
    }
    if let Some(i) = &r.import {
        out.extend(i.targets());
    }
    out
}

/// Per server: callvault at its default settings against the same-work client at its
/// best concurrency (≥ 85%), and callvault's own CPU per small recording (≤ 0.6 ms).
fn same_work(r: &Results) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for server in r.servers() {
        let (Some(cv), Some(limit)) = (
            r.find_on(server, "small", CALLVAULT_DEFAULTS, None),
            r.best_on(server, "small", SAME_WORK),
        ) else {
            continue;
        };
        let ratio = cv.per_second() / limit.per_second();
        out.push((
            format!(
                "{server}, small, callvault at its default settings vs the same-work limit at \
                 its best concurrency ({}): ≥ 85%",
                limit.concurrency
            ),
            format!(
                "{:.1} of {:.1} recordings/s = {:.0}%",
                cv.per_second(),
                limit.per_second(),
                ratio * 100.0
            ),
            ratio >= 0.85,
        ));
        if let Some(ms) = cv.own_ms_per_record() {
            out.push((
                format!(
                    "{server}, small, callvault's own CPU per recording at its defaults: ≤ 0.6 ms"
                ),
                format!("{ms:.2} ms"),
                ms <= 0.6,
            ));
        }
    }
    out
}

/// Per server: callvault on the large sets (at its defaults and at each concurrency) against
/// the ceiling at the same number of transfers (≥ 85%).
fn large_vs_ceiling(r: &Results) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for cv in r
        .transfers
        .iter()
        .filter(|t| t.set.starts_with("large") && [CALLVAULT, CALLVAULT_DEFAULTS].contains(&t.tool))
    {
        let active = if cv.tool == CALLVAULT {
            cv.concurrency
        } else {
            crate::DEFAULT_CONCURRENCY
        };
        let ceiling = r
            .transfers
            .iter()
            .filter(|t| t.server == cv.server && t.set == cv.set)
            .filter(|t| t.tool == CEILING || t.tool == CEILING_PARTS)
            .filter(|t| t.concurrency == active.min(cv.records))
            .max_by(|a, b| a.mb_per_second().total_cmp(&b.mb_per_second()));
        if let Some(c) = ceiling {
            let ratio = cv.mb_per_second() / c.mb_per_second();
            out.push((
                format!(
                    "{}, {}, callvault at {} vs the ceiling at {} transfers: ≥ 85%",
                    cv.server,
                    cv.set,
                    cv.concurrency_shown(),
                    c.concurrency
                ),
                format!(
                    "{:.1} of {:.1} MB/s = {:.0}% (CPU per GB: {:.1} vs {:.1} s = {:.0}%)",
                    cv.mb_per_second(),
                    c.mb_per_second(),
                    ratio * 100.0,
                    cv.cpu_per_gb(),
                    c.cpu_per_gb(),
                    c.cpu_per_gb() / cv.cpu_per_gb() * 100.0
                ),
                ratio >= 0.85,
            ));
        }
    }
    out
}
