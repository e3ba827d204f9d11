//! `find`, `get`, `link` and `access-log`: the command-line side of `crate::retrieve`.
//! Turns flags into a query and a requester, prints the answer. Exit codes: 0 done, 1 a
//! call could not be given out (unknown, not archived, checksum mismatch), 2 usage or
//! configuration (a bad flag, a store that cannot sign links).

use std::io::Write;

use chrono::{DateTime, FixedOffset, Utc};

use super::groups::call_uuid;
use super::scope::{Scopes, with_account};
use super::{EXIT_CONFIG, EXIT_INCOMPLETE, EXIT_OK};
use crate::accounts::AccountName;
use crate::cli::{AccessLogArgs, ArchiveStoreArgs, FindArgs, GetArgs, LinkArgs, RequesterArgs};
use crate::config::{CommonSettings, ConfigError};
use crate::domain::RecordState;
use crate::ledger::{AccessAction, AccessQuery, CallCursor, CallQuery, CallSummary, LoggedAccess};
use crate::retrieve::{self, Requester, RetrieveError};
use crate::timefmt::{parse_bound, to_ledger};

fn requester(args: &RequesterArgs) -> Requester {
    Requester::at_cli(args.actor.clone(), args.reason.clone())
}

/// The search `find`'s flags describe: the chosen calls, narrowed by agent and state, one
/// page of them.
pub fn call_query(args: &FindArgs, tz: FixedOffset) -> Result<CallQuery, ConfigError> {
    let chosen = args.select.query(tz)?;
    let states = args
        .state
        .iter()
        .map(|s| {
            RecordState::parse(s.trim()).ok_or_else(|| {
                let known: Vec<&str> = RecordState::ALL.iter().map(|s| s.as_str()).collect();
                ConfigError(format!("--state {s:?}: use one of {}", known.join(", ")))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CallQuery {
        agent: args
            .agent
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned),
        states,
        limit: args.limit,
        after: args
            .after
            .as_deref()
            .map(|a| {
                CallCursor::parse(a).ok_or_else(|| {
                    ConfigError(format!("--after {a:?} is not a cursor printed by `find`"))
                })
            })
            .transpose()?,
        ..chosen
    })
}

/// `find`: each account's matching calls (one page of each), the account named on every
/// row. `--after` continues one account's list, so it needs that account named.
pub async fn find(common: &CommonSettings, args: &FindArgs) -> anyhow::Result<u8> {
    let tz = common.tz;
    let query = call_query(args, tz)?;
    let scopes = Scopes::open(common, &args.accounts, None).await?;
    if query.after.is_some() && scopes.several() {
        return Err(ConfigError(
            "--after continues one account's list: name that account with --account".into(),
        )
        .into());
    }
    let mut rows = Vec::new();
    for scope in &scopes.all {
        let found = retrieve::find(&scope.ledger, &query, &requester(&args.requester)).await?;
        if found.len() == query.page_size() as usize
            && let Some(last) = found.last()
        {
            eprintln!(
                "callvault: more calls of account {} may match: continue with --account {} --after {}",
                scope.name(),
                scope.name(),
                CallCursor::after(last)
            );
        }
        rows.extend(found.into_iter().map(|c| (scope.name().clone(), c)));
    }
    scopes.close().await;
    let mut out = std::io::stdout().lock();
    if args.json {
        for (account, call) in &rows {
            writeln!(out, "{}", with_account(call, account))?;
        }
    } else {
        print_table(&mut out, &rows, tz)?;
    }
    Ok(EXIT_OK)
}

fn print_table(
    out: &mut impl Write,
    calls: &[(AccountName, CallSummary)],
    tz: FixedOffset,
) -> std::io::Result<()> {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<[String; 10]> = calls
        .iter()
        .map(|(account, c)| {
            [
                account.to_string(),
                c.uuid.to_string(),
                c.call_start.map_or_else(
                    || "-".into(),
                    |t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string(),
                ),
                c.company.clone(),
                dash(
                    &c.parties
                        .display_number
                        .clone()
                        .or(c.parties.caller.clone()),
                ),
                dash(&c.parties.callee),
                dash(&c.parties.extension),
                dash(&c.parties.crmid.clone().or(c.parties.userid.clone())),
                c.billsec.map_or_else(|| "-".into(), |s| s.to_string()),
                c.state.to_string(),
            ]
        })
        .collect();
    let start = format!("START ({tz})");
    let header = [
        "ACCOUNT", "UUID", &start, "COMPANY", "FROM", "TO", "EXT", "AGENT", "SECS", "STATE",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    writeln!(out, "{} call(s)", rows.len())
}

/// `get`: each call's recording (and sidecar) from its account's store.
pub async fn get(common: &CommonSettings, args: &GetArgs) -> anyhow::Result<u8> {
    let store = ArchiveStoreArgs::for_objects(&args.store, None, None);
    let scopes = Scopes::open(common, &args.accounts, Some(&store)).await?;
    let uuids = args
        .uuids
        .iter()
        .map(|u| call_uuid(u))
        .collect::<Result<Vec<_>, _>>()?;
    let who = requester(&args.requester);
    let mut code = EXIT_OK;
    for (scope, uuids) in scopes.owners(&uuids).await? {
        let store = scope.store()?;
        let results =
            match retrieve::get_recordings(&scope.ledger, &store, &uuids, &args.output, &who).await
            {
                Ok(results) => results,
                Err(e) => {
                    code = code.max(report(&e));
                    continue;
                }
            };
        for result in results {
            match result {
                Ok(fetched) => println!(
                    "{}  {}  {} bytes  sha256 {}  (sidecar {})  account {}",
                    fetched.uuid,
                    fetched.path.display(),
                    fetched.size,
                    fetched.sha256,
                    fetched.sidecar.display(),
                    scope.name()
                ),
                Err(e) => code = code.max(report(&e)),
            }
        }
    }
    scopes.close().await;
    Ok(code)
}

/// Prints why a call could not be given out; its exit code.
fn report(e: &RetrieveError) -> u8 {
    eprintln!("callvault: {e}");
    if e.is_config() {
        EXIT_CONFIG
    } else {
        EXIT_INCOMPLETE
    }
}

/// `link`: a presigned link to the call's recording in its account's store.
pub async fn link(common: &CommonSettings, args: &LinkArgs) -> anyhow::Result<u8> {
    let store = ArchiveStoreArgs::for_objects(&args.store, None, None);
    let scopes = Scopes::open(common, &args.accounts, Some(&store)).await?;
    let uuid = call_uuid(&args.uuid)?;
    let owners = scopes.owners(std::slice::from_ref(&uuid)).await?;
    let (scope, _) = &owners[0];
    let store = scope.store()?;
    let linked = retrieve::link(
        &scope.ledger,
        &store,
        &uuid,
        args.expires,
        &requester(&args.requester),
    )
    .await;
    let code = match linked {
        Ok(link) if args.json => {
            println!("{}", with_account(&link, scope.name()));
            EXIT_OK
        }
        Ok(link) => {
            println!("{}", link.url);
            EXIT_OK
        }
        Err(e) => report(&e),
    };
    scopes.close().await;
    Ok(code)
}

/// `--since`: a duration ago (`24h`, `7d`), else a date or time.
fn since(raw: &str, tz: FixedOffset) -> Result<DateTime<Utc>, ConfigError> {
    if let Ok(ago) = humantime::parse_duration(raw.trim()) {
        let ago = chrono::Duration::from_std(ago)
            .map_err(|_| ConfigError(format!("--since {raw:?} is too long ago")))?;
        return Ok(Utc::now() - ago);
    }
    parse_bound(raw, tz, false).map_err(|e| ConfigError(format!("--since: {e}")))
}

/// `access-log`: each account's entries (oldest first, at most `--limit` of each), the
/// account named on every line. Reading them is logged first, in each account's log.
pub async fn access_log(common: &CommonSettings, args: &AccessLogArgs) -> anyhow::Result<u8> {
    let tz = common.tz;
    let query = AccessQuery {
        since: args.since.as_deref().map(|s| since(s, tz)).transpose()?,
        actor: args.actor.clone(),
        uuid: args.uuid.as_deref().map(call_uuid).transpose()?,
        after_id: None,
        limit: args.limit,
    };
    let reader = Requester::at_cli(std::env::var("CALLVAULT_ACTOR").ok(), None);
    let described = format!(
        "since={} actor={} uuid={}",
        query.since.map_or_else(|| "-".into(), to_ledger),
        query.actor.as_deref().unwrap_or("-"),
        query.uuid.as_ref().map_or("-", |u| u.as_str())
    );
    let scopes = Scopes::open(common, &args.accounts, None).await?;
    let mut out = std::io::stdout().lock();
    for scope in &scopes.all {
        // Reading who looked is itself a look: logged first, under the reader's name.
        let calls = query.uuid.iter().cloned().collect();
        scope
            .ledger
            .log_access(&reader.entry(AccessAction::ReadLog, Some(described.clone()), calls))
            .await?;
        let entries = scope.ledger.access_entries(&query).await?;
        for entry in &entries {
            if args.json {
                writeln!(out, "{}", with_account(entry, scope.name()))?;
            } else {
                writeln!(out, "{}  {}", scope.name(), human_entry(entry))?;
            }
        }
        if entries.len() == args.limit as usize {
            eprintln!(
                "callvault: the first {} entries of account {} shown (--limit)",
                args.limit,
                scope.name()
            );
        }
    }
    scopes.close().await;
    Ok(EXIT_OK)
}

fn human_entry(logged: &LoggedAccess) -> String {
    let e = &logged.entry;
    let calls: Vec<&str> = e.calls.iter().map(|c| c.as_str()).collect();
    let mut line = format!(
        "{}  {}  {}  {}  calls: {}",
        to_ledger(e.at),
        e.actor,
        e.action,
        e.source,
        if calls.is_empty() {
            "-".into()
        } else {
            calls.join(",")
        }
    );
    if let Some(reason) = &e.reason {
        line.push_str(&format!("  reason: {reason}"));
    }
    if let Some(query) = &e.query {
        line.push_str(&format!("  ({query})"));
    }
    line
}
