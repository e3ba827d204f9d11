//! `hold`, `release`, `holds`, `erase` and `expire`: the commands a compliance team keeps
//! recordings with, and lets them go with. Exit codes: 0 done (or a dry run), 1 something
//! chosen could not be held, released or erased, 2 usage or configuration, or the store
//! refused a hold or a release.

use chrono::{FixedOffset, Utc};

use super::audit::reachable;
use super::scope::{Scope, Scopes, with_account};
use super::{EXIT_CONFIG, EXIT_INCOMPLETE, EXIT_OK};
use crate::cli::{
    AccountArgs, ArchiveStoreArgs, CallSelection, EraseArgs, ExpireArgs, HoldArgs, HoldsArgs,
    ReleaseArgs, RetentionStoreArgs,
};
use crate::config::{CommonSettings, ConfigError};
use crate::ledger::{HoldId, ObjectHold};
use crate::retention::{
    Actor, EraseMode, EraseReport, HoldReport, Refusal, ReleaseReport, Selection, erase,
    place_hold, release,
};
use crate::store::{RetainFor, Store};

/// A number `erase` takes: a whole one, not the last digits `find` accepts (erasing every
/// call ending in `1234` is not what anyone means).
const MIN_ERASE_DIGITS: usize = 7;

/// `--actor`, `CALLVAULT_ACTOR`, else the operating system's user.
fn actor(args: &RetentionStoreArgs) -> Result<Actor, ConfigError> {
    let name = args
        .actor
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    Actor::new(&name).ok_or_else(|| ConfigError(format!("--actor {name:?}: not a usable name")))
}

fn reason(raw: &str) -> Result<&str, ConfigError> {
    let r = raw.trim();
    if r.is_empty() {
        return Err(ConfigError(
            "--reason must say why (a case or request reference)".into(),
        ));
    }
    Ok(r)
}

/// The accounts the command may act on, each with its store laid out as `run` writes it.
async fn scopes(
    common: &CommonSettings,
    accounts: &AccountArgs,
    store: &RetentionStoreArgs,
) -> anyhow::Result<Scopes> {
    let settings = ArchiveStoreArgs::for_objects(&store.store, Some(&store.layout), None);
    Scopes::open(common, accounts, Some(&settings)).await
}

/// The store of one account the command acts on, answering; with several accounts, the
/// report's part for it is headed by its name.
async fn enter(scope: &Scope, several: bool, json: bool) -> anyhow::Result<Store> {
    if several && !json {
        println!("account {}:", scope.name());
    }
    let store = scope.store()?;
    reachable(&store).await?;
    Ok(store)
}

fn chosen(select: &CallSelection, tz: FixedOffset) -> Result<Selection, ConfigError> {
    let selection = Selection::new(select.query(tz)?);
    if selection.is_empty() {
        return Err(ConfigError(
            "choose the calls: --uuid, --company, --since/--until, --number or --extension".into(),
        ));
    }
    Ok(selection)
}

pub async fn hold(common: &CommonSettings, args: &HoldArgs) -> anyhow::Result<u8> {
    let selection = chosen(&args.select, common.tz)?;
    let reason = reason(&args.reason)?;
    let actor = actor(&args.store)?;
    let scopes = scopes(common, &args.accounts, &args.store).await?;
    let acting = scopes.acting(&selection.query.uuids).await?;
    let (mut code, mut placed) = (EXIT_OK, false);
    for scope in acting.iter().copied() {
        let store = enter(scope, acting.len() > 1, args.store.json).await?;
        let report = place_hold(
            &scope.ledger,
            &store,
            &selection,
            reason,
            &actor,
            Utc::now(),
        )
        .await?;
        print_hold(scope, &store, &report, args, &actor)?;
        placed |= report.hold.is_some();
        code = code.max(match &report.stopped {
            Some(refusal) => refused("hold", refusal),
            None if !report.problems.is_empty() => EXIT_INCOMPLETE,
            None => EXIT_OK,
        });
    }
    scopes.close().await;
    Ok(if placed {
        code
    } else {
        code.max(EXIT_INCOMPLETE)
    })
}

fn print_hold(
    scope: &Scope,
    store: &Store,
    report: &HoldReport,
    args: &HoldArgs,
    actor: &Actor,
) -> anyhow::Result<()> {
    let reason = args.reason.trim();
    if args.store.json {
        println!("{}", with_account(report, scope.name()));
        return Ok(());
    }
    for (uuid, problem) in &report.problems {
        println!("bucket hold not set  {uuid}  {problem}");
    }
    match &report.hold {
        None => println!("no call matches: no hold placed"),
        Some(id) => {
            println!(
                "hold {id} placed by {actor} on {} call(s) of account {} ({reason}): S3 legal hold set on {}, not archived yet {}, failed {}",
                report.calls.len(),
                scope.name(),
                report.count(ObjectHold::Set),
                report.count(ObjectHold::NotArchived),
                report.count(ObjectHold::Failed),
            );
            let unsupported = report.count(ObjectHold::Unsupported);
            if unsupported > 0 {
                println!(
                    "the store {} has no Object Lock: the bucket-level hold could not be set on {unsupported} call(s); \
                     the ledger hold applies (callvault will not erase them), but anyone with the bucket's credentials could",
                    store.description()
                );
            }
        }
    }
    Ok(())
}

/// A store's refusal stopped `hold` or `release`: said on stderr, exit 2 (fix the store's
/// credentials or policy, then run it again; what was done is recorded, nothing else).
fn refused(command: &str, refusal: &Refusal) -> u8 {
    eprintln!(
        "callvault: {command} {refusal}; the calls from there on are not recorded: fix the store's \
         permissions (s3:PutObjectLegalHold) and run {command} again"
    );
    EXIT_CONFIG
}

pub async fn release_cmd(common: &CommonSettings, args: &ReleaseArgs) -> anyhow::Result<u8> {
    let selection = chosen(&args.select, common.tz)?;
    let reason = reason(&args.reason)?;
    let actor = actor(&args.store)?;
    let hold = args
        .hold
        .as_deref()
        .map(|h| {
            HoldId::parse(h).ok_or_else(|| ConfigError(format!("--hold {h:?}: not a hold id")))
        })
        .transpose()?;
    let scopes = scopes(common, &args.accounts, &args.store).await?;
    let acting = scopes.acting(&selection.query.uuids).await?;
    let (mut code, mut released) = (EXIT_OK, 0);
    for scope in acting.iter().copied() {
        let store = enter(scope, acting.len() > 1, args.store.json).await?;
        let report = release(
            &scope.ledger,
            &store,
            &selection,
            hold.as_ref(),
            reason,
            &actor,
            Utc::now(),
        )
        .await?;
        print_release(scope, &report, args.store.json, reason, &actor);
        released += report.released.len();
        code = code.max(match &report.stopped {
            Some(refusal) => refused("release", refusal),
            None if !report.problems.is_empty() => EXIT_INCOMPLETE,
            None => EXIT_OK,
        });
    }
    scopes.close().await;
    Ok(if released > 0 {
        code
    } else {
        code.max(EXIT_INCOMPLETE)
    })
}

fn print_release(scope: &Scope, report: &ReleaseReport, json: bool, reason: &str, actor: &Actor) {
    if json {
        println!("{}", with_account(report, scope.name()));
        return;
    }
    for (uuid, hold) in &report.released {
        println!("released  {uuid}  from {hold}");
    }
    for uuid in &report.still_held {
        println!("still held  {uuid}  by another hold: its bucket hold stays");
    }
    for (uuid, problem) in &report.problems {
        println!("bucket hold not cleared  {uuid}  {problem} (still held; run release again)");
    }
    println!(
        "{} release(s) by {actor} in account {} ({reason}); S3 legal hold cleared on {} call(s); {} chosen call(s) were on no hold",
        report.released.len(),
        scope.name(),
        report.objects_cleared,
        report.not_held
    );
}

/// `holds`: every account's holds, each naming its account.
pub async fn holds(common: &CommonSettings, args: &HoldsArgs) -> anyhow::Result<u8> {
    let scopes = Scopes::open(common, &args.accounts, None).await?;
    let mut holds = Vec::new();
    for scope in &scopes.all {
        for hold in scope.ledger.holds(args.all).await? {
            holds.push((scope.name().clone(), hold));
        }
    }
    scopes.close().await;
    if args.json {
        let named: Vec<_> = holds.iter().map(|(a, h)| with_account(h, a)).collect();
        println!("{}", serde_json::Value::Array(named));
        return Ok(EXIT_OK);
    }
    if holds.is_empty() {
        println!("no {}hold", if args.all { "" } else { "active " });
        return Ok(EXIT_OK);
    }
    println!(
        "{:<12} {:<32} {:<20} {:<16} {:>6} {:>8} {:>11}  reason",
        "account", "hold", "placed at", "placed by", "calls", "released", "ledger only"
    );
    for (account, h) in &holds {
        println!(
            "{:<12} {:<32} {:<20} {:<16} {:>6} {:>8} {:>11}  {}",
            account.as_str(),
            h.id.as_str(),
            h.placed_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            h.placed_by,
            h.calls_held,
            h.calls_released,
            h.ledger_only,
            h.reason
        );
    }
    Ok(EXIT_OK)
}

pub async fn erase_cmd(common: &CommonSettings, args: &EraseArgs) -> anyhow::Result<u8> {
    let selection = chosen(&args.select, common.tz)?;
    if let Some(n) = &selection.query.number
        && n.as_str().len() < MIN_ERASE_DIGITS
    {
        return Err(ConfigError(format!(
            "--number {}: erase asks for a whole number ({MIN_ERASE_DIGITS} digits or more), not its last digits",
            n.as_str()
        ))
        .into());
    }
    let mode = EraseMode::Chosen {
        reason: reason(&args.reason)?.to_owned(),
    };
    let actor = actor(&args.store)?;
    let scopes = scopes(common, &args.accounts, &args.store).await?;
    let acting = scopes.acting(&selection.query.uuids).await?;
    let (mut kept, mut erased) = (0, 0);
    for scope in acting.iter().copied() {
        let store = enter(scope, acting.len() > 1, args.store.json).await?;
        let report = erase(
            &scope.ledger,
            &store,
            &selection,
            &mode,
            &actor,
            args.yes,
            Utc::now(),
        )
        .await?;
        print_erasure(scope, &report, args.store.json)?;
        (kept, erased) = (kept + report.kept.len(), erased + report.erased.len());
    }
    scopes.close().await;
    Ok(if kept == 0 && erased > 0 {
        EXIT_OK
    } else {
        EXIT_INCOMPLETE
    })
}

pub async fn expire(common: &CommonSettings, args: &ExpireArgs) -> anyhow::Result<u8> {
    let older_than: RetainFor = args
        .older_than
        .parse()
        .map_err(|e: String| ConfigError(format!("--older-than: {e}")))?;
    let actor = actor(&args.store)?;
    let now = Utc::now();
    let selection = Selection::expiring(older_than, now, args.company.company())
        .ok_or_else(|| ConfigError(format!("--older-than {older_than}: too long")))?;
    let scopes = scopes(common, &args.accounts, &args.store).await?;
    let acting = scopes.acting(&selection.query.uuids).await?;
    let mut failures = 0;
    for scope in acting.iter().copied() {
        let store = enter(scope, acting.len() > 1, args.store.json).await?;
        let mode = EraseMode::Expire { older_than };
        let report = erase(
            &scope.ledger,
            &store,
            &selection,
            &mode,
            &actor,
            args.yes,
            now,
        )
        .await?;
        print_erasure(scope, &report, args.store.json)?;
        failures += report.store_failures();
    }
    scopes.close().await;
    Ok(if failures == 0 {
        EXIT_OK
    } else {
        EXIT_INCOMPLETE
    })
}

fn print_erasure(scope: &Scope, report: &EraseReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", with_account(report, scope.name()));
        return Ok(());
    }
    let (verb, done) = if report.dry_run {
        ("would erase", "would be erased")
    } else {
        ("erased", "erased")
    };
    for e in &report.erased {
        println!("{verb:<12} {}  {}  {} bytes", e.uuid, e.key, e.size);
    }
    for k in &report.kept {
        println!("cannot erase {}  {}", k.uuid, k.why);
    }
    println!(
        "{} call(s) of account {} {done}, {} cannot go{}{}",
        report.erased.len(),
        scope.name(),
        report.kept.len(),
        if report.not_due > 0 {
            format!(", {} not yet past retention", report.not_due)
        } else {
            String::new()
        },
        if report.dry_run {
            " (dry run: nothing deleted; add --yes to erase)"
        } else {
            ""
        }
    );
    Ok(())
}
