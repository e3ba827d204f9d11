//! The measured section of BENCHMARKS.md: the machine, the commands, the tables and each
//! target with its verdict, computed from the figures (nothing typed in by hand).

use std::fmt::Write;
use std::time::Duration;

use crate::ledger_growth::Growth;
use crate::machine::Machine;
use crate::pg_ledger::Claiming;
use crate::processes::Processes;

pub const BEGIN: &str = "<!-- measured:begin (written by examples/bench; do not edit by hand) -->";
pub const END: &str = "<!-- measured:end -->";

/// One set of recordings moved by one tool.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The S3 server (`s3s-fs`, `garage`), or `none` for the download alone.
    pub server: &'static str,
    pub set: String,
    pub tool: &'static str,
    pub concurrency: usize,
    pub records: usize,
    pub bytes: u64,
    /// The median over the rounds (one value until [`Results::merge_rounds`]).
    pub wall: Duration,
    /// Every round's wall time.
    pub walls: Vec<Duration>,
    /// The highest over the rounds.
    pub peak_rss_kib: Option<u64>,
    /// 64 MiB + the upload buffers a callvault run can hold (`transfers::rss_limit_kib`).
    pub rss_limit_kib: Option<u64>,
    /// CPU time of every benchmark process (source, target, contender), summed over rounds.
    pub cpu: Duration,
    /// CPU time of the S3 server's own process (Garage), included in `cpu`.
    pub server_cpu: Option<Duration>,
    /// The busy share of all the machine's CPUs, averaged over rounds.
    pub busy: f64,
    /// CPU time of the callvault process alone, summed over rounds.
    pub own_cpu: Option<Duration>,
    /// Ledger commits callvault's pass made (its `ledger_commits`), summed over rounds.
    pub commits: Option<u64>,
    /// Records callvault archived, summed over rounds.
    pub archived: u64,
}

impl Transfer {
    pub fn per_second(&self) -> f64 {
        self.records as f64 / self.wall.as_secs_f64()
    }
    pub fn mb_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }
    /// CPU seconds (all benchmark processes) per GB moved.
    pub fn cpu_per_gb(&self) -> f64 {
        self.cpu.as_secs_f64() / self.gb_moved()
    }
    /// CPU seconds of the S3 server's process per GB moved (Garage).
    pub fn server_cpu_per_gb(&self) -> Option<f64> {
        self.server_cpu.map(|c| c.as_secs_f64() / self.gb_moved())
    }
    /// CPU milliseconds of the callvault process per recording.
    pub fn own_ms_per_record(&self) -> Option<f64> {
        self.own_cpu
            .map(|c| c.as_secs_f64() * 1e3 / (self.records * self.walls.len()).max(1) as f64)
    }
    /// The concurrency as shown: `default` for callvault at its defaults.
    pub fn concurrency_shown(&self) -> String {
        if self.concurrency == 0 {
            "default".into()
        } else {
            self.concurrency.to_string()
        }
    }
    /// CPU seconds of the callvault process per GB moved.
    pub fn own_cpu_per_gb(&self) -> Option<f64> {
        self.own_cpu.map(|c| c.as_secs_f64() / self.gb_moved())
    }
    /// Ledger commits per archived record.
    pub fn commits_per_record(&self) -> Option<f64> {
        self.commits.map(|c| c as f64 / self.archived.max(1) as f64)
    }
    fn gb_moved(&self) -> f64 {
        self.bytes as f64 * self.walls.len() as f64 / 1e9
    }
}

/// The token-invalidation run.
#[derive(Debug, Clone)]
pub struct Logins {
    pub concurrency: usize,
    pub records: usize,
    pub every: u32,
    pub invalidations: u64,
    /// Logins the simulator saw during the run (the first one included).
    pub logins: u64,
    pub wall: Duration,
}

impl Logins {
    pub fn per_invalidation(&self) -> f64 {
        self.logins.saturating_sub(1) as f64 / self.invalidations.max(1) as f64
    }
}

#[derive(Debug, Default)]
pub struct Results {
    pub transfers: Vec<Transfer>,
    pub growth: Vec<Growth>,
    pub logins: Option<Logins>,
    /// The ledger alone on PostgreSQL, one row per claim size.
    pub claiming: Vec<Claiming>,
    /// Several processes on one ledger (SQLite first, the baseline).
    pub processes: Vec<Processes>,
    /// CPU seconds per GB of SHA-256 alone (sha2, one thread, from memory) on this machine.
    pub sha256_cpu_per_gb: Option<f64>,
    /// `find` at each ledger size.
    pub search: Vec<crate::search::SearchLedger>,
    /// Many accounts in one run against one account.
    pub accounts: Option<crate::accounts::Fairness>,
    /// Issue 20: what each part checksum costs on each server, and whether it is checked.
    pub checksums: Option<crate::checksums::ChecksumBench>,
    /// Issue 19: what the log, time-stamps, proofs and export cost.
    pub proof: Option<crate::proof::ProofBench>,
    /// Issue 20: `callvault import` on each ledger.
    pub import: Option<crate::import::ImportBench>,
    pub notes: Vec<String>,
}

impl Results {
    /// Folds repeated measurements of the same (set, tool, concurrency) into one row with
    /// the median wall time and the highest peak RSS, in first-measured order.
    pub fn merge_rounds(&mut self) {
        let mut merged: Vec<Transfer> = Vec::new();
        for t in self.transfers.drain(..) {
            match merged.iter_mut().find(|m| {
                m.server == t.server
                    && m.set == t.set
                    && m.tool == t.tool
                    && m.concurrency == t.concurrency
            }) {
                Some(m) => {
                    let n = m.walls.len() as f64;
                    m.busy = (m.busy * n + t.busy) / (n + 1.0);
                    m.cpu += t.cpu;
                    m.server_cpu = m.server_cpu.zip(t.server_cpu).map(|(a, b)| a + b);
                    m.own_cpu = m.own_cpu.zip(t.own_cpu).map(|(a, b)| a + b);
                    m.commits = m.commits.zip(t.commits).map(|(a, b)| a + b);
                    m.archived += t.archived;
                    m.walls.extend(t.walls);
                    m.peak_rss_kib = m.peak_rss_kib.max(t.peak_rss_kib);
                }
                None => merged.push(t),
            }
        }
        for m in &mut merged {
            m.walls.sort();
            m.wall = m.walls[m.walls.len() / 2];
        }
        self.transfers = merged;
    }

    /// The row of `tool` on `set` against s3s-fs.
    pub fn find(&self, set: &str, tool: &str, concurrency: Option<usize>) -> Option<&Transfer> {
        self.find_on("s3s-fs", set, tool, concurrency)
    }

    /// The row of `tool` on `set` against `server`.
    pub fn find_on(
        &self,
        server: &str,
        set: &str,
        tool: &str,
        concurrency: Option<usize>,
    ) -> Option<&Transfer> {
        self.transfers.iter().find(|t| {
            t.server == server
                && t.set == set
                && t.tool == tool
                && concurrency.is_none_or(|c| t.concurrency == c)
        })
    }

    /// The fastest run of `tool` on `set` against s3s-fs, by recordings per second.
    pub fn best(&self, set: &str, tool: &str) -> Option<&Transfer> {
        self.best_on("s3s-fs", set, tool)
    }

    /// The fastest run of `tool` on `set` against `server`, by recordings per second.
    pub fn best_on(&self, server: &str, set: &str, tool: &str) -> Option<&Transfer> {
        self.transfers
            .iter()
            .filter(|t| t.server == server && t.set == set && t.tool == tool)
            .max_by(|a, b| a.per_second().total_cmp(&b.per_second()))
    }

    /// The servers the transfers ran against, in first-measured order.
    pub fn servers(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for t in &self.transfers {
            if t.server != "none" && !out.contains(&t.server) {
                out.push(t.server);
            }
        }
        out
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

pub fn markdown(machine: &Machine, command: &str, load_after: &str, r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(s, "Measured {} with `{command}`.\n", machine.date);
    let _ = writeln!(s, "| machine | |\n|---|---|");
    let _ = writeln!(s, "| `nproc` | {} |", machine.nproc);
    let _ = writeln!(s, "| memory | {} |", machine.mem_total);
    let _ = writeln!(s, "| CPU | {} |", machine.cpu_model);
    let _ = writeln!(s, "| kernel | {} |", machine.kernel);
    let _ = writeln!(s, "| rustc | {} |", machine.rustc);
    let _ = writeln!(s, "| rclone | {} |", machine.rclone);
    let _ = writeln!(s, "| SQLite (bundled by sqlx) | {} |", machine.sqlite);
    if let Some(garage) = &machine.garage {
        let _ = writeln!(s, "| Garage (`cargo install garage`) | {garage} |");
    }
    if let Some(postgres) = &machine.postgres {
        let _ = writeln!(s, "| PostgreSQL (Debian) | {postgres} |");
    }
    let _ = writeln!(
        s,
        "| load average before / after | {} / {load_after} |\n",
        machine.load_before
    );

    if !r.transfers.is_empty() {
        throughput(&mut s, r);
    }
    if let Some(b) = &r.checksums {
        crate::checksums::section(&mut s, b);
    }
    ledger_sections(&mut s, r);
    crate::search::section(&mut s, &r.search);
    if let Some(f) = &r.accounts {
        crate::accounts::section(&mut s, f);
    }
    if let Some(p) = &r.proof {
        crate::proof::section(&mut s, p);
    }
    if let Some(i) = &r.import {
        crate::import::section(&mut s, i);
    }
    if let Some(l) = &r.logins {
        let _ = writeln!(s, "\n### Logins per token invalidation\n");
        let _ = writeln!(
            s,
            "{} small recordings at concurrency {}, the simulator invalidating every token on \
             every {}th link request: {} invalidations, {} logins (the first one included) in \
             {:.1} s: **{:.2} logins per invalidation**.",
            l.records,
            l.concurrency,
            l.every,
            l.invalidations,
            l.logins,
            l.wall.as_secs_f64(),
            l.per_invalidation()
        );
    }

    let summary = summary(r);
    if !summary.is_empty() {
        let _ = writeln!(
            s,
            "\n### Default and best concurrency\n\n{}",
            summary.join("\n")
        );
    }

    let _ = writeln!(s, "\n### Targets\n");
    let _ = writeln!(s, "| target | measured | verdict |\n|---|---|---|");
    for (target, measured, ok) in crate::targets::targets(r) {
        let _ = writeln!(s, "| {target} | {measured} | {} |", verdict(ok));
    }
    for note in &r.notes {
        let _ = writeln!(s, "\n{note}");
    }
    let _ = writeln!(s, "{END}");
    s
}

/// Per server and set: callvault at its default settings and at its best concurrency.
fn summary(r: &Results) -> Vec<String> {
    let mut summary = Vec::new();
    for server in r.servers() {
        for set in ["small", "large"] {
            let (Some(default), Some(best)) = (
                r.find_on(server, set, CALLVAULT_DEFAULTS, None),
                r.best_on(server, set, CALLVAULT),
            ) else {
                continue;
            };
            summary.push(format!(
                "- {server}, {set}: callvault at its default settings {:.1} recordings/s, \
                 {:.1} MB/s; at its best concurrency ({}) {:.1} recordings/s, {:.1} MB/s.",
                default.per_second(),
                default.mb_per_second(),
                best.concurrency,
                best.per_second(),
                best.mb_per_second()
            ));
        }
    }
    summary
}

/// The transfers: one row per server, set, tool and concurrency.
fn throughput(s: &mut String, r: &Results) {
    let _ = writeln!(s, "### Throughput\n");
    let _ = writeln!(
        s,
        "Every transfer against both S3 servers: s3s-fs (in the benchmark's process) and \
         Garage (a single node in its own process, LMDB metadata, default block size and \
         compression; the set is put once unmeasured first, so every measured run finds its \
         blocks stored: Garage keeps a block once by its hash). MB = 10^6 bytes. CPU s/GB: \
         CPU time of every process involved (the simulator and s3s-fs, which share the \
         benchmark process, Garage's process, plus callvault, the ceiling's or the same-work \
         client or the rclone processes) per GB moved; machine busy: the share of both CPUs in \
         use, other tenants included. Peak RSS is the callvault process's `VmHWM`; its limit \
         is 64 MiB + the upload buffers it can hold: min(memory budget ({} MiB), \
         min(concurrency, recordings) × 2 parts of 8 MiB), the default concurrency being {}.\n",
        crate::MEMORY_BUDGET_MIB,
        crate::CALLVAULT_DEFAULT_CONCURRENCY
    );
    let _ = writeln!(
        s,
        "| server | recordings | tool | concurrency | count | MB | seconds (median) | all rounds | recordings/s | MB/s | CPU s/GB | of which callvault | of which Garage | callvault CPU ms/recording | machine busy | peak RSS MiB | RSS limit MiB |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for t in &r.transfers {
        let rss = t
            .peak_rss_kib
            .map_or("".into(), |k| format!("{:.1}", mib(k)));
        let limit = t
            .rss_limit_kib
            .map_or("".into(), |k| format!("{:.0}", mib(k)));
        let own = t.own_cpu_per_gb().map_or("".into(), |c| format!("{c:.1}"));
        let garage = t
            .server_cpu_per_gb()
            .map_or("".into(), |c| format!("{c:.1}"));
        let per = t
            .own_ms_per_record()
            .map_or("".into(), |c| format!("{c:.2}"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {} | {:.1} | {:.1} | {:.1} | {own} | {garage} | {per} | {:.0}% | {rss} | {limit} |",
            t.server,
            t.set,
            t.tool,
            t.concurrency_shown(),
            t.records,
            t.bytes as f64 / 1e6,
            t.wall.as_secs_f64(),
            t.walls
                .iter()
                .map(|w| format!("{:.2}", w.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" "),
            t.per_second(),
            t.mb_per_second(),
            t.cpu_per_gb(),
            t.busy * 100.0
        );
    }
}

/// The ledger's own sections: growth on each backend, the ledger alone on PostgreSQL, and
/// several processes on one ledger.
fn ledger_sections(s: &mut String, r: &Results) {
    if !r.growth.is_empty() {
        let _ = writeln!(s, "\n### Ledger growth\n");
        let _ = writeln!(
            s,
            "Each ledger is filled with history (78% archived, 20% unanswered, 1% pending with \
             a retry due later, 0.5% failed, 0.5% expired; 0.1% of the archived recordings \
             flagged by the media check; one attempt per recording, one run \
             and one manifest per 15 minutes, each manifest in the Merkle log with a signed, \
             time-stamped checkpoint), then `callvault status --json` runs {} times (median), then \
             {} runs each archive a new batch of small recordings at concurrency 8 (run s: the \
             median run). Ledger MiB: the SQLite file, or the PostgreSQL database \
             (`pg_database_size`).\n",
            crate::ledger_growth::REPEATS,
            crate::ledger_growth::RUNS
        );
        let _ = writeln!(
            s,
            "| ledger | rows | ledger MiB | `status` process ms | status queries ms | run batch | run s | ms per record | peak RSS MiB |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for g in &r.growth {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {:.1} | {:.2} | {} | {:.2} | {:.2} | {:.1} |",
                g.backend,
                g.rows,
                g.db_mib,
                g.status_cli.as_secs_f64() * 1e3,
                g.status_query.as_secs_f64() * 1e3,
                g.batch,
                g.run_wall.as_secs_f64(),
                g.per_record().as_secs_f64() * 1e3,
                mib(g.peak_rss_kib)
            );
        }
    }

    if let Some(first) = r.claiming.first() {
        let _ = writeln!(s, "\n### The ledger alone on PostgreSQL\n");
        let _ = writeln!(
            s,
            "A ledger of {} calls of history (the mix above) with {} due calls added for each \
             variant; N claimers (tasks of one process, all in one run, N + 4 pooled \
             connections) each loop claim (which starts the attempt in its commit) → settle it \
             archived (with its media note), until the due calls or {} s are spent. A record is \
             one claim's share plus one commit. Claim \
             latency: from asking to having the records (a claim that lost to another \
             transaction is run again inside the ledger, as for the pass). Server CPU: the \
             PostgreSQL processes; client CPU: the claimers' process.\n",
            first.rows,
            first.due,
            first.time.as_secs()
        );
        let _ = writeln!(
            s,
            "| records per claim | claimers | records | seconds | records/s | claims | claim p50 ms | claim p99 ms | claim max ms | server CPU ms/record | client CPU ms/record | machine busy |"
        );
        let _ = writeln!(
            s,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for c in &r.claiming {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.0}% |",
                c.limit,
                c.claimers,
                c.records,
                c.wall.as_secs_f64(),
                c.per_second(),
                c.claims,
                c.p50.as_secs_f64() * 1e3,
                c.p99.as_secs_f64() * 1e3,
                c.max.as_secs_f64() * 1e3,
                c.server_ms_per_record(),
                c.client_cpu.as_secs_f64() * 1e3 / c.records.max(1) as f64,
                c.busy * 100.0
            );
        }
    }

    for c in r.claiming.iter().filter(|c| c.claimers == 64) {
        server_time(s, c);
    }

    if let Some(first) = r.processes.first() {
        let _ = writeln!(s, "\n### Several processes on one ledger\n");
        let _ = writeln!(
            s,
            "The small set ({} × {} KiB) by `callvault run` processes started together on one \
             fresh ledger, at the same total concurrency; medians over {} rounds, interleaved. \
             Every record archived once: the runs' summaries, the simulator's downloads and \
             the ledger's count agree. CPU s/GB: the benchmark process (simulator, S3 \
             server), the callvault processes and the PostgreSQL server, per GB moved.\n",
            first.records,
            first.bytes / first.records.max(1) as u64 / crate::KIB,
            first.walls.len()
        );
        let _ = writeln!(
            s,
            "| ledger | processes × concurrency | seconds (median) | all rounds | recordings/s | vs one process on SQLite | CPU s/GB | of which PostgreSQL | machine busy | peak RSS MiB (one process) |"
        );
        let _ = writeln!(s, "|---|---|---:|---|---:|---:|---:|---:|---:|---:|");
        let sqlite = r
            .processes
            .iter()
            .find(|p| p.backend == crate::ledger_growth::SQLITE);
        for p in &r.processes {
            let ratio = sqlite.map_or(String::new(), |b| {
                format!("{:.2}×", p.per_second() / b.per_second())
            });
            let server = p.server_cpu.map_or(String::new(), |c| {
                format!(
                    "{:.1}",
                    c.as_secs_f64() / (p.bytes as f64 * p.walls.len() as f64 / 1e9)
                )
            });
            let _ = writeln!(
                s,
                "| {} | {} × {} | {:.2} | {} | {:.1} | {ratio} | {:.1} | {server} | {:.0}% | {:.1} |",
                p.backend,
                p.processes,
                p.each,
                p.wall.as_secs_f64(),
                p.walls
                    .iter()
                    .map(|w| format!("{:.2}", w.as_secs_f64()))
                    .collect::<Vec<_>>()
                    .join(" "),
                p.per_second(),
                p.cpu_per_gb(),
                p.busy * 100.0,
                mib(p.peak_rss_kib)
            );
        }
    }
}

pub const CALLVAULT: &str = "callvault";
pub const CALLVAULT_DEFAULTS: &str = "callvault, default settings";
pub const SAME_WORK: &str = "same-work client (link, download, 2 PUTs)";
pub const CEILING: &str = "ceiling: object_store from memory";
pub const CEILING_PARTS: &str = "ceiling: object_store from memory, 4 parts in flight";
pub const RCLONE: &str = "rclone copyurl";
pub const DOWNLOAD: &str = "download only (fresh link, bytes discarded)";

/// Writes `section` into `path`, replacing an earlier measured section when there is one.
pub fn write_into(path: &std::path::Path, section: &str) -> std::io::Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let updated = match (existing.find(BEGIN), existing.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!(
                "{}{}{}",
                &existing[..b],
                section.trim_end(),
                &existing[e + END.len()..]
            )
        }
        _ if existing.is_empty() => format!("# Benchmarks\n\n{section}"),
        _ => format!("{}\n{section}", existing.trim_end()),
    };
    std::fs::write(path, updated)
}

/// Where the server's time went in one variant of the ledger alone on PostgreSQL.
fn server_time(s: &mut String, c: &Claiming) {
    let _ = writeln!(
        s,
        "\nWhere the server's time went with {} claimers, {} record(s) per claim \
         (`pg_stat_statements` by total time, triggers' statements included; mean times \
         include waiting for a CPU and for locks):\n",
        c.claimers, c.limit
    );
    let _ = writeln!(
        s,
        "| statement | calls | total ms | mean ms | buffers per call |\n|---|---:|---:|---:|---:|"
    );
    for st in &c.statements {
        let _ = writeln!(
            s,
            "| `{}…` | {} | {:.0} | {:.2} | {:.0} |",
            st.text.replace('|', "\\|"),
            st.calls,
            st.total_ms,
            st.mean_ms,
            st.buffers
        );
    }
    let total: i64 = c.waits.iter().map(|(_, n)| n).sum();
    let waits: Vec<String> = c
        .waits
        .iter()
        .take(8)
        .map(|(w, n)| format!("{w} {:.0}%", *n as f64 * 100.0 / total.max(1) as f64))
        .collect();
    let _ = writeln!(
        s,
        "\nActive backends in {} samples of `pg_stat_activity` (every 50 ms; `CPU`: active, \
         waiting on nothing; {:.1} active on average): {}.",
        c.samples,
        total as f64 / c.samples.max(1) as f64,
        waits.join(", ")
    );
}
