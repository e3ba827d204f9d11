//! `verify`, `failures` and `retry`: the commands compliance and operators use to check the
//! archive and to send failed records round again. Exit codes: 0 all good, 1 a mismatch
//! (or a named record not retried), 2 configuration.

use anyhow::Context;
use chrono::{FixedOffset, Utc};

use super::scope::{Scope, Scopes, with_account};
use super::{EXIT_INCOMPLETE, EXIT_OK};
use crate::audit::{Sample, VerifyOptions, verify_chain, verify_objects};
use crate::cli::{ArchiveStoreArgs, FailuresArgs, LayoutArgs, RetryArgs, VerifyArgs};
use crate::config::{CommonSettings, ConfigError};
use crate::domain::CallUuid;
use crate::ledger::{Ledger, RetrySelection};
use crate::store::{Store, StoreError};

/// `verify`: each account's objects (or manifest chain) in its own store, each recorded as
/// a verification of that account. The exit code is the worst account's.
pub async fn verify(common: &CommonSettings, args: &VerifyArgs) -> anyhow::Result<u8> {
    let layout = LayoutArgs {
        sidecar: true,
        no_sidecar: false,
        manifests: args.chain.clone(),
    };
    let settings = ArchiveStoreArgs::for_objects(&args.store, Some(&layout), Some(&args.retention));
    let scopes = Scopes::open(common, &args.accounts, Some(&settings)).await?;
    let mut code = EXIT_OK;
    for scope in &scopes.all {
        if scopes.several() && !args.json {
            println!("account {}:", scope.name());
        }
        code = code.max(verify_account(scope, args, common.tz).await?);
    }
    scopes.close().await;
    Ok(code)
}

async fn verify_account(scope: &Scope, args: &VerifyArgs, tz: FixedOffset) -> anyhow::Result<u8> {
    let (ledger, store) = (&scope.ledger, scope.store()?);
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
    let described = serde_json::json!({
        "store": store.description(),
        "manifests": args.manifests,
        "company": slice.company,
        "since": slice.since,
        "until": slice.until,
        "sample": args.sample,
    });
    ledger
        .start_verification(&id, &described, Utc::now())
        .await?;
    let (checked, problems, summary) = if args.manifests {
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
        let mut summary = with_account(&summary, scope.name());
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
    let log = crate::proof::check::check_log(ledger, store)
        .await
        .context("checking the Merkle log")?;
    if !args.json {
        for problem in &log.problems {
            println!("{problem}");
        }
        for note in &log.notes {
            println!("note: {note}");
        }
        println!(
            "merkle log: {} line(s), {} checkpoint(s) checked ({} signed, {} unsigned), {} problem(s)",
            log.leaves,
            log.checkpoints_checked,
            log.signed,
            log.unsigned,
            log.problems.len()
        );
    }
    let checked = report.manifests_in_store;
    let problems = (report.problems.len() + log.problems.len()) as u64;
    Ok((
        checked,
        problems,
        serde_json::json!({ "manifests": report, "log": log }),
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

/// `failures`: each account's failed and expired records, the account named on each line.
pub async fn failures(common: &CommonSettings, args: &FailuresArgs) -> anyhow::Result<u8> {
    let scopes = Scopes::open(common, &args.accounts, None).await?;
    let mut total = 0u64;
    for scope in &scopes.all {
        total += account_failures(scope, args).await?;
    }
    scopes.close().await;
    if !args.json {
        println!("{total} failed or expired record(s)");
    }
    Ok(EXIT_OK)
}

async fn account_failures(scope: &Scope, args: &FailuresArgs) -> anyhow::Result<u64> {
    let ledger = &scope.ledger;
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
                println!("{}", with_account(rec, scope.name()));
            } else {
                println!(
                    "{:<8} {:<12} {}  attempts {}  {}  {}",
                    rec.state,
                    scope.name().as_str(),
                    rec.uuid,
                    rec.attempts,
                    rec.last_error_code.as_deref().unwrap_or("-"),
                    rec.last_error.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(total)
}

/// `retry`: named records go back in the account that holds each (a uuid in several
/// accounts is refused); `--all` and `--error-code` act in every account chosen.
pub async fn retry(common: &CommonSettings, args: &RetryArgs) -> anyhow::Result<u8> {
    let scopes = Scopes::open(common, &args.accounts, None).await?;
    let uuids = args
        .uuid
        .iter()
        .map(|raw| {
            CallUuid::parse(raw).ok_or_else(|| ConfigError(format!("{raw:?} is not a call uuid")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut skipped = false;
    if uuids.is_empty() {
        for scope in &scopes.all {
            skipped |= retry_in(scope, args, &[]).await?;
        }
    } else {
        for (scope, owned) in scopes.owners(&uuids).await? {
            skipped |= retry_in(scope, args, &owned).await?;
        }
    }
    scopes.close().await;
    Ok(if skipped { EXIT_INCOMPLETE } else { EXIT_OK })
}

/// One account's retry; whether a named record was left alone.
async fn retry_in(scope: &Scope, args: &RetryArgs, uuids: &[CallUuid]) -> anyhow::Result<bool> {
    let selection = if args.all {
        RetrySelection::All
    } else if let Some(code) = &args.error_code {
        RetrySelection::ErrorCode(code)
    } else {
        RetrySelection::Uuids(uuids)
    };
    let outcome = scope
        .ledger
        .retry_failed(selection, args.include_expired, Utc::now())
        .await?;
    for (uuid, state) in &outcome.skipped {
        match state {
            Some(state) => eprintln!("callvault: {uuid} is {state}; left alone"),
            None => eprintln!("callvault: {uuid} is not in the ledger"),
        }
    }
    println!(
        "{} record(s) of account {} back to pending, due now (attempt counts reset)",
        outcome.requeued,
        scope.name()
    );
    Ok(!outcome.skipped.is_empty())
}
