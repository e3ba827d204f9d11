//! `hold`, `release`, `holds`, `erase` and `expire`: the commands a compliance team keeps
//! recordings with, and lets them go with. Exit codes: 0 done (or a dry run), 1 something
//! chosen could not be held, released or erased, 2 usage or configuration, or the store
//! refused a hold or a release.

use chrono::{FixedOffset, Utc};

use super::audit::reachable;
use super::wiring::open_store;
use super::{EXIT_CONFIG, EXIT_INCOMPLETE, EXIT_OK};
use crate::cli::{
    CallSelection, EraseArgs, ExpireArgs, HoldArgs, HoldsArgs, ReleaseArgs, RetentionStoreArgs,
};
use crate::config::ConfigError;
use crate::ledger::{CallQuery, HoldId, Ledger, ObjectHold};
use crate::retention::{
    Actor, EraseMode, EraseReport, Refusal, Selection, erase, place_hold, release, retention_cutoff,
};
use crate::store::{RetainFor, S3Options, Store};

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

/// The store the calls' objects are in, laid out as `run` writes it, answering.
async fn store(args: &RetentionStoreArgs, s3: &S3Options) -> anyhow::Result<Store> {
    let store = open_store(&args.layout.apply(args.store.config(s3)?))?;
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

pub async fn hold(
    ledger: &Ledger,
    args: &HoldArgs,
    tz: FixedOffset,
    s3: &S3Options,
) -> anyhow::Result<u8> {
    let selection = chosen(&args.select, tz)?;
    let reason = reason(&args.reason)?;
    let actor = actor(&args.store)?;
    let store = store(&args.store, s3).await?;
    let report = place_hold(ledger, &store, &selection, reason, &actor, Utc::now()).await?;
    if args.store.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for (uuid, problem) in &report.problems {
            println!("bucket hold not set  {uuid}  {problem}");
        }
        match &report.hold {
            None => println!("no call matches: no hold placed"),
            Some(id) => {
                println!(
                    "hold {id} placed by {actor} on {} call(s) ({reason}): S3 legal hold set on {}, not archived yet {}, failed {}",
                    report.calls.len(),
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
    }
    if let Some(refusal) = &report.stopped {
        return Ok(refused("hold", refusal));
    }
    Ok(if report.hold.is_none() || !report.problems.is_empty() {
        EXIT_INCOMPLETE
    } else {
        EXIT_OK
    })
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

pub async fn release_cmd(
    ledger: &Ledger,
    args: &ReleaseArgs,
    tz: FixedOffset,
    s3: &S3Options,
) -> anyhow::Result<u8> {
    let selection = chosen(&args.select, tz)?;
    let reason = reason(&args.reason)?;
    let actor = actor(&args.store)?;
    let hold = args
        .hold
        .as_deref()
        .map(|h| {
            HoldId::parse(h).ok_or_else(|| ConfigError(format!("--hold {h:?}: not a hold id")))
        })
        .transpose()?;
    let store = store(&args.store, s3).await?;
    let report = release(
        ledger,
        &store,
        &selection,
        hold.as_ref(),
        reason,
        &actor,
        Utc::now(),
    )
    .await?;
    if args.store.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
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
            "{} release(s) by {actor} ({reason}); S3 legal hold cleared on {} call(s); {} chosen call(s) were on no hold",
            report.released.len(),
            report.objects_cleared,
            report.not_held
        );
    }
    if let Some(refusal) = &report.stopped {
        return Ok(refused("release", refusal));
    }
    Ok(
        if report.problems.is_empty() && !report.released.is_empty() {
            EXIT_OK
        } else {
            EXIT_INCOMPLETE
        },
    )
}

pub async fn holds(ledger: &Ledger, args: &HoldsArgs) -> anyhow::Result<u8> {
    let holds = ledger.holds(args.all).await?;
    if args.json {
        println!("{}", serde_json::to_string(&holds)?);
        return Ok(EXIT_OK);
    }
    if holds.is_empty() {
        println!("no {}hold", if args.all { "" } else { "active " });
        return Ok(EXIT_OK);
    }
    println!(
        "{:<32} {:<20} {:<16} {:>6} {:>8} {:>11}  reason",
        "hold", "placed at", "placed by", "calls", "released", "ledger only"
    );
    for h in &holds {
        println!(
            "{:<32} {:<20} {:<16} {:>6} {:>8} {:>11}  {}",
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

pub async fn erase_cmd(
    ledger: &Ledger,
    args: &EraseArgs,
    tz: FixedOffset,
    s3: &S3Options,
) -> anyhow::Result<u8> {
    let selection = chosen(&args.select, tz)?;
    if let Some(n) = &selection.query.number
        && n.as_str().len() < MIN_ERASE_DIGITS
    {
        return Err(ConfigError(format!(
            "--number {}: erase asks for a whole number ({MIN_ERASE_DIGITS} digits or more), not its last digits",
            n.as_str()
        ))
        .into());
    }
    let reason = reason(&args.reason)?.to_owned();
    let actor = actor(&args.store)?;
    let store = store(&args.store, s3).await?;
    let report = erase(
        ledger,
        &store,
        &selection,
        &EraseMode::Chosen { reason },
        &actor,
        args.yes,
        Utc::now(),
    )
    .await?;
    print_erasure(&report, args.store.json)?;
    Ok(if report.kept.is_empty() && !report.erased.is_empty() {
        EXIT_OK
    } else {
        EXIT_INCOMPLETE
    })
}

pub async fn expire(ledger: &Ledger, args: &ExpireArgs, s3: &S3Options) -> anyhow::Result<u8> {
    let older_than: RetainFor = args
        .older_than
        .parse()
        .map_err(|e: String| ConfigError(format!("--older-than: {e}")))?;
    let actor = actor(&args.store)?;
    let now = Utc::now();
    let cutoff = retention_cutoff(older_than, now)
        .ok_or_else(|| ConfigError(format!("--older-than {older_than}: too long")))?;
    // The ledger chooses by start with a day to spare; each call is then checked exactly.
    let selection = Selection::new(CallQuery {
        company: args.company.company(),
        until: Some(cutoff + chrono::Duration::days(1)),
        ..CallQuery::default()
    });
    let store = store(&args.store, s3).await?;
    let report = erase(
        ledger,
        &store,
        &selection,
        &EraseMode::Expire { older_than },
        &actor,
        args.yes,
        now,
    )
    .await?;
    print_erasure(&report, args.store.json)?;
    Ok(if report.store_failures() == 0 {
        EXIT_OK
    } else {
        EXIT_INCOMPLETE
    })
}

fn print_erasure(report: &EraseReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
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
        "{} call(s) {done}, {} cannot go{}{}",
        report.erased.len(),
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
