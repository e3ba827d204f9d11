//! Does `callvault find` stay fast as the ledger grows? Fills a SQLite ledger with 10,000 and
//! 1,000,000 calls (one `INSERT … SELECT` over a recursive CTE, numbers, agents and
//! extensions spread as a call center's are), lets callvault index them for search (timed),
//! then times the searches a compliance officer runs: a number by its last five digits, an
//! agent, one day; in process (the ledger's query) and as the `callvault find` process.

use std::time::{Duration, Instant};

use anyhow::bail;
use callvault::ledger::{CallQuery, Ledger, PhoneNumber};
use chrono::{DateTime, TimeZone, Utc};

use crate::rig::Rig;

/// Each search is run this many times; the table shows the median.
pub const REPEATS: usize = 11;
/// The page every search asks for (`find`'s default).
pub const PAGE: u32 = 50;

/// One search at one ledger size.
#[derive(Debug, Clone)]
pub struct SearchTime {
    pub rows: usize,
    /// `number suffix`, `agent`, `one day`.
    pub search: &'static str,
    /// The `callvault find` arguments.
    pub args: Vec<String>,
    pub found: usize,
    /// Median of the ledger's query, in process.
    pub query: Duration,
    /// Median wall time of the `callvault find --json` process.
    pub cli: Duration,
}

/// One ledger size: how long filling and indexing took, and its searches.
#[derive(Debug, Clone)]
pub struct SearchLedger {
    pub rows: usize,
    pub db_mib: f64,
    pub fill: Duration,
    pub index: Duration,
    pub searches: Vec<SearchTime>,
}

/// The first call's start; calls follow every `STEP_SECONDS`, so 1,000,000 calls span about
/// 3 months, as a provider keeps them.
fn first_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}
const STEP_SECONDS: i64 = 8;

/// The callee of call `i` (deterministic, spread over ten digits), as the fill's SQL makes it.
fn callee(i: i64) -> String {
    format!("01{:010}", (i * 104_729 + 12_345) % 10_000_000_000)
}

/// Fills `url` (a migrated, empty SQLite ledger) with `rows` archived calls in one statement.
async fn fill(url: &str, rows: usize) -> anyhow::Result<()> {
    let pool = sqlx::SqlitePool::connect(url).await?;
    let start = first_start().timestamp();
    sqlx::query(
        "WITH RECURSIVE n (i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $1)
         INSERT INTO calls (account, uuid, company_code, record_file, call_start, billsec, raw_json,
                            state, attempts, next_attempt_at, object_key, size_bytes, sha256,
                            archived_at, imported_at, updated_at)
         SELECT 'default', uuid, '20000013', file, t, 60,
                json_object('uuid', uuid, 'companycode', 20000013, 'recordfilename', file,
                            'starttime', strftime('%Y-%m-%d %H:%M:%S', $2 + i * $3 + 28800, 'unixepoch'),
                            'billsec', 60, 'type', 'callout',
                            'disnumber', printf('025%08d', (i * 7919) % 100000000),
                            'destnumber', printf('01%010d', (i * 104729 + 12345) % 10000000000),
                            'crmid', printf('%d', 2001 + i % 20),
                            'extnumber', printf('%d', 7001 + (i / 7) % 20)),
                'archived', 1, t, '20000013/' || file, 960044, printf('%064x', i), t, t, t
         FROM (SELECT i, printf('%08x-0000-4000-8000-%012x', i >> 16, i) AS uuid,
                      printf('20000013-%d.wav', i) AS file,
                      strftime('%Y-%m-%dT%H:%M:%fZ', $2 + i * $3, 'unixepoch') AS t
               FROM n)",
    )
    .bind(i64::try_from(rows)?)
    .bind(start)
    .bind(STEP_SECONDS)
    .execute(&pool)
    .await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The searches, each as a query and as `find` arguments: the same at every size, so that
/// the first page is compared with the first page.
fn searches() -> Vec<(&'static str, CallQuery, Vec<String>)> {
    // A number that is in the ledger at every size: call 4242's callee, last five digits.
    let number = callee(4242);
    let suffix = number[number.len() - 5..].to_owned();
    let longer = number[number.len() - 7..].to_owned();
    // A day in the middle of the smaller ledger (10,000 calls span about 22 hours from the
    // first start; the whole day is inside the bigger one too).
    let day_from = first_start() + chrono::Duration::hours(6);
    let day_to = day_from + chrono::Duration::hours(12);
    let tz = callvault::timefmt::default_provider_tz();
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string();
    vec![
        (
            "number, last 5 digits",
            CallQuery {
                number: PhoneNumber::parse(&suffix),
                ..CallQuery::all(PAGE)
            },
            vec!["--number".into(), suffix],
        ),
        (
            "number, last 7 digits",
            CallQuery {
                number: PhoneNumber::parse(&longer),
                ..CallQuery::all(PAGE)
            },
            vec!["--number".into(), longer],
        ),
        (
            "agent",
            CallQuery {
                agent: Some("2007".into()),
                ..CallQuery::all(PAGE)
            },
            vec!["--agent".into(), "2007".into()],
        ),
        (
            "12 hours",
            CallQuery {
                since: Some(day_from),
                until: Some(day_to),
                ..CallQuery::all(PAGE)
            },
            vec![
                "--since".into(),
                local(day_from),
                "--until".into(),
                local(day_to),
            ],
        ),
        (
            "agent in 12 hours",
            CallQuery {
                agent: Some("2007".into()),
                since: Some(day_from),
                until: Some(day_to),
                ..CallQuery::all(PAGE)
            },
            vec![
                "--agent".into(),
                "2007".into(),
                "--since".into(),
                local(day_from),
                "--until".into(),
                local(day_to),
            ],
        ),
    ]
}

/// A filled and indexed ledger, open.
struct Filled {
    rows: usize,
    url: String,
    path: std::path::PathBuf,
    ledger: Ledger,
    fill: Duration,
    index: Duration,
}

async fn prepare(rig: &Rig, rows: usize) -> anyhow::Result<Filled> {
    let path = rig.dir.path().join(format!("search-{rows}.db"));
    let url = format!("sqlite://{}", path.display());
    rig.remove_ledger(&url);
    Ledger::open(&url).await?.close().await;
    let filled = Instant::now();
    fill(&url, rows).await?;
    let fill_time = filled.elapsed();
    let ledger = Ledger::open(&url).await?;
    let indexed = Instant::now();
    let n = ledger.refresh_terms(20_000).await?;
    let index_time = indexed.elapsed();
    if usize::try_from(n)? != rows {
        bail!("indexed {n} calls, not {rows}");
    }
    println!(
        "    {rows} calls: filled in {:.1}s, indexed for search in {:.1}s",
        fill_time.as_secs_f64(),
        index_time.as_secs_f64()
    );
    Ok(Filled {
        rows,
        url,
        path,
        ledger,
        fill: fill_time,
        index: index_time,
    })
}

/// One search's samples on one ledger: calls found, query times, `find` process times.
type Samples = (usize, Vec<Duration>, Vec<Duration>);

/// Fills a ledger of each size, then runs every search on each, the sizes interleaved
/// round by round (so a busy moment of the machine falls on both), `REPEATS` rounds.
pub async fn measure(rig: &Rig, sizes: &[usize]) -> anyhow::Result<Vec<SearchLedger>> {
    let mut filled = Vec::new();
    for &rows in sizes {
        println!("search: filling {rows} calls");
        filled.push(prepare(rig, rows).await?);
    }
    let searches = searches();
    let mut times: Vec<Vec<Samples>> = filled
        .iter()
        .map(|_| {
            searches
                .iter()
                .map(|_| (0, Vec::new(), Vec::new()))
                .collect()
        })
        .collect();
    for round in 0..REPEATS {
        println!("search: round {}", round + 1);
        for (l, f) in filled.iter().enumerate() {
            for (q, (name, query, args)) in searches.iter().enumerate() {
                let t = Instant::now();
                let found = f.ledger.find_calls(query).await?.len();
                let query_time = t.elapsed();
                if found == 0 {
                    bail!("the search {name} found nothing in {} calls", f.rows);
                }
                let mut cli_args = vec!["find", "--json", "--actor", "bench"];
                cli_args.extend(args.iter().map(String::as_str));
                let child = rig
                    .run_child(rig.callvault_cmd(&f.url, "unused", &cli_args))
                    .await?;
                if child.exit_code != 0 {
                    bail!("callvault find exited {}", child.exit_code);
                }
                if child.stdout.lines().count() != found {
                    bail!("callvault find printed other calls than the query found");
                }
                let slot = &mut times[l][q];
                slot.0 = found;
                slot.1.push(query_time);
                slot.2.push(child.wall);
            }
        }
    }
    let mut out = Vec::new();
    for (f, per_search) in filled.into_iter().zip(times) {
        let mut timed = Vec::new();
        for ((name, _, args), (found, query, cli)) in searches.iter().zip(per_search) {
            let s = SearchTime {
                rows: f.rows,
                search: name,
                args: args.clone(),
                found,
                query: median(query),
                cli: median(cli),
            };
            println!(
                "    {} calls, {name}: {found} found, query {:.2} ms, `find` process {:.1} ms",
                f.rows,
                s.query.as_secs_f64() * 1e3,
                s.cli.as_secs_f64() * 1e3
            );
            timed.push(s);
        }
        f.ledger.close().await;
        let db_mib = std::fs::metadata(&f.path)?.len() as f64 / (1024.0 * 1024.0);
        rig.remove_ledger(&f.url);
        out.push(SearchLedger {
            rows: f.rows,
            db_mib,
            fill: f.fill,
            index: f.index,
            searches: timed,
        });
    }
    Ok(out)
}

/// The slowest ratio of a search's time at the biggest size to its time at the smallest
/// (in-process query, `find` process), over the searches that answer with as many calls at
/// both sizes: the same work asked of a bigger ledger. (A suffix that 20 calls end with in
/// the big ledger and one in the small asks for 20 times the rows; it is shown, not
/// compared.)
pub fn ratios(ledgers: &[SearchLedger]) -> Option<(f64, f64)> {
    let (small, big) = (ledgers.first()?, ledgers.last()?);
    if small.rows == big.rows {
        return None;
    }
    let mut worst = (0.0_f64, 0.0_f64);
    for b in &big.searches {
        let s = small.searches.iter().find(|s| s.search == b.search)?;
        if s.found != b.found {
            continue;
        }
        worst.0 = worst.0.max(b.query.as_secs_f64() / s.query.as_secs_f64());
        worst.1 = worst.1.max(b.cli.as_secs_f64() / s.cli.as_secs_f64());
    }
    Some(worst)
}

/// The search section of the report.
pub fn section(s: &mut String, ledgers: &[SearchLedger]) {
    use std::fmt::Write;
    if ledgers.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n### Search\n");
    let _ = writeln!(
        s,
        "A SQLite ledger filled with archived calls (one every 8 s; callee numbers spread over \
         ten digits, 20 agents, 20 extensions), indexed for search by callvault, then each \
         search asks for the first page ({PAGE} calls, sorted by call start), {REPEATS} times \
         (median): in process (`find_calls`) and as the `callvault find --json` process \
         (which also appends to the access log).\n"
    );
    let _ = writeln!(
        s,
        "| calls | ledger MiB | fill s | index s |\n|---:|---:|---:|---:|"
    );
    for l in ledgers {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.1} | {:.1} |",
            l.rows,
            l.db_mib,
            l.fill.as_secs_f64(),
            l.index.as_secs_f64()
        );
    }
    let _ = writeln!(
        s,
        "\n| search | `find` arguments | calls | found | query ms | `find` process ms |\n|---|---|---:|---:|---:|---:|"
    );
    for l in ledgers {
        for t in &l.searches {
            let _ = writeln!(
                s,
                "| {} | `{}` | {} | {} | {:.2} | {:.1} |",
                t.search,
                t.args.join(" "),
                t.rows,
                t.found,
                t.query.as_secs_f64() * 1e3,
                t.cli.as_secs_f64() * 1e3
            );
        }
    }
    if let (Some((query, cli)), Some(small), Some(big)) =
        (ratios(ledgers), ledgers.first(), ledgers.last())
    {
        let _ = writeln!(
            s,
            "\nSlowest ratio {} / {} calls, over the searches that found as many calls at both \
             sizes: query {query:.2}×, `find` process {cli:.2}×.",
            big.rows, small.rows
        );
    }
}
