//! `verify`, `failures` and `retry`: the commands compliance and operators use to check the
//! archive and to send failed records round again. Exit codes: 0 all good, 1 a mismatch
//! (or a named record not retried), 2 configuration.

use anyhow::Context;
use chrono::{FixedOffset, Utc};

use super::wiring::open_store;
use super::{EXIT_INCOMPLETE, EXIT_OK};
use crate::audit::{Sample, VerifyOptions, verify_chain, verify_objects};
use crate::cli::{FailuresArgs, RetryArgs, VerifyArgs};
use crate::config::ConfigError;
use crate::domain::CallUuid;
use crate::ledger::{Ledger, RetrySelection};
use crate::store::{S3Options, Store, StoreConfig, StoreError};

pub async fn verify(
    ledger: &Ledger,
    args: &VerifyArgs,
    tz: FixedOffset,
    s3: &S3Options,
) -> anyhow::Result<u8> {
    let store = open_store(&StoreConfig {
        retention: args.retention.policy()?,
        ..args.chain.apply(args.store.config(s3)?)
    })?;
    let sample = match &args.sample {
        Some(raw) => raw.parse::<Sample>().map_err(ConfigError)?,
        None => Sample::All,
    };
    let slice = args.slice.slice(tz)?;
    reachable(&store).await?;
    let id = format!(
        "verify-{}-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let scope = serde_json::json!({
        "store": store.description(),
        "manifests": args.manifests,
        "company": slice.company,
        "since": slice.since,
        "until": slice.until,
        "sample": args.sample,
    });
    ledger.start_verification(&id, &scope, Utc::now()).await?;
    let (checked, problems, mut summary) = if args.manifests {
        check_chain(ledger, &store, args).await?
    } else {
        let opts = VerifyOptions {
            slice,
            sample,
            concurrency: usize::from(args.concurrency),
        };
        check_objects(ledger, &store, &opts, args.json).await?
    };
    ledger
        .finish_verification(&id, checked, problems, &summary, Utc::now())
        .await?;
    let code = if problems > 0 {
        EXIT_INCOMPLETE
    } else {
        EXIT_OK
    };
    if args.json {
        summary["verification"] = id.into();
        summary["exit_code"] = code.into();
        println!("{summary}");
    }
    Ok(code)
}

/// What a check found: how much was checked, how many problems, and its report.
type Checked = (u64, u64, serde_json::Value);

/// `verify --manifests`: the chain in the store, then against the ledger.
async fn check_chain(ledger: &Ledger, store: &Store, args: &VerifyArgs) -> anyhow::Result<Checked> {
    let report = verify_chain(store, ledger, usize::from(args.concurrency))
        .await
        .context("checking the manifest chain")?;
    if !args.json {
        for problem in &report.problems {
            println!("{problem}");
        }
        for note in &report.notes {
            println!("note: {note}");
        }
        println!(
            "manifest chain: {} manifest(s) in the store, {} in the ledger, newest {}, {} entries checked ({} erased since), {} erasure(s) listed, {} problem(s); {} archived record(s) not yet in a manifest",
            report.manifests_in_store,
            report.manifests_in_ledger,
            report.newest.as_deref().unwrap_or("none"),
            report.entries_checked,
            report.entries_erased,
            report.erasures_listed,
            report.problems.len(),
            report.unlisted_archived
        );
    }
    let checked = report.manifests_in_store;
    let problems = report.problems.len() as u64;
    Ok((
        checked,
        problems,
        serde_json::json!({ "manifests": report }),
    ))
}

/// `verify`: the chosen objects read back and compared with the ledger.
async fn check_objects(
    ledger: &Ledger,
    store: &Store,
    opts: &VerifyOptions,
    json: bool,
) -> anyhow::Result<Checked> {
    let report = verify_objects(ledger, store, opts, |p| {
        if !json {
            println!("{p}");
        }
    })
    .await?;
    if !json {
        println!(
            "verified {} object(s), {} bytes read: {} ok, {} missing, {} changed, {} unreadable{}; {} call(s) erased (not read back: gone on purpose)",
            report.checked,
            report.bytes_read,
            report.ok,
            report.missing,
            report.changed,
            report.unreadable,
            if store.retention().is_some() {
                format!(
                    ", {} lock(s) short of the retention policy",
                    report.lock_short
                )
            } else {
                String::new()
            },
            report.erased
        );
    }
    let (checked, problems) = (report.checked, report.problem_count());
    Ok((checked, problems, serde_json::json!({ "objects": report })))
}

/// The store must answer before anything is judged missing; a refusal is configuration.
pub(super) async fn reachable(store: &Store) -> anyhow::Result<()> {
    match store.preflight().await {
        Ok(()) => Ok(()),
        Err(e @ StoreError::Refused { .. }) => Err(ConfigError(e.to_string()).into()),
        Err(e) => Err(anyhow::Error::new(e).context("the store cannot be read")),
    }
}

pub async fn failures(ledger: &Ledger, args: &FailuresArgs) -> anyhow::Result<u8> {
    let mut after: Option<CallUuid> = None;
    let mut total = 0u64;
    loop {
        let page = ledger
            .failures_page(args.error_code.as_deref(), after.as_ref(), 500)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.uuid.clone());
        for rec in &page {
            total += 1;
            if args.json {
                println!("{}", serde_json::to_string(rec)?);
            } else {
                println!(
                    "{:<8} {}  attempts {}  {}  {}",
                    rec.state,
                    rec.uuid,
                    rec.attempts,
                    rec.last_error_code.as_deref().unwrap_or("-"),
                    rec.last_error.as_deref().unwrap_or("")
                );
            }
        }
    }
    if !args.json {
        println!("{total} failed or expired record(s)");
    }
    Ok(EXIT_OK)
}

pub async fn retry(ledger: &Ledger, args: &RetryArgs) -> anyhow::Result<u8> {
    let uuids = args
        .uuid
        .iter()
        .map(|raw| {
            CallUuid::parse(raw).ok_or_else(|| ConfigError(format!("{raw:?} is not a call uuid")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let selection = if args.all {
        RetrySelection::All
    } else if let Some(code) = &args.error_code {
        RetrySelection::ErrorCode(code)
    } else {
        RetrySelection::Uuids(&uuids)
    };
    let outcome = ledger
        .retry_failed(selection, args.include_expired, Utc::now())
        .await?;
    for (uuid, state) in &outcome.skipped {
        match state {
            Some(state) => eprintln!("callvault: {uuid} is {state}; left alone"),
            None => eprintln!("callvault: {uuid} is not in the ledger"),
        }
    }
    println!(
        "{} record(s) back to pending, due now (attempt counts reset)",
        outcome.requeued
    );
    Ok(if outcome.skipped.is_empty() {
        EXIT_OK
    } else {
        EXIT_INCOMPLETE
    })
}
