//! `export` and `export verify`: the command-line side of `crate::export`. Exit codes: 0
//! the bundle was written, 1 the archive could not prove or give out a call (a recording
//! changed, a manifest missing), 2 usage or configuration (no `--reason`, a place that is
//! not empty, a key file others can read).

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::scope::Scopes;
use super::{EXIT_CONFIG, EXIT_INCOMPLETE, EXIT_OK};
use crate::cli::{
    ArchiveStoreArgs, ExportArgs, ExportCommand, ExportSub, ExportVerifyArgs, LayoutArgs, LoadFile,
};
use crate::config::{CommonSettings, ConfigError};
use crate::export::{AccountSource, ExportRequest, export};
use crate::retrieve::Requester;

pub async fn run(common: &CommonSettings, command: &ExportCommand) -> anyhow::Result<u8> {
    match &command.verify {
        Some(ExportSub::Verify(args)) => verify(args).await,
        None => write(common, &command.args).await,
    }
}

/// `export verify`: a bundle checked with nothing else.
async fn verify(args: &ExportVerifyArgs) -> anyhow::Result<u8> {
    let code = super::export_verify::run(
        &args.bundle,
        args.tsa_roots.as_deref(),
        args.log_key.as_deref(),
        args.json,
    )
    .await?;
    Ok(u8::try_from(code).unwrap_or(EXIT_INCOMPLETE))
}

/// The call-choosing flags as given, for `bundle.json`.
fn selection(args: &ExportArgs) -> Value {
    let s = &args.select;
    let mut flags = Map::new();
    let mut put = |name: &str, v: Option<&String>| {
        if let Some(v) = v {
            flags.insert(name.to_owned(), v.clone().into());
        }
    };
    put("number", s.number.as_ref());
    put("extension", s.extension.as_ref());
    put("company", s.slice.company.company.as_ref());
    put("since", s.slice.times.since.as_ref());
    put("until", s.slice.times.until.as_ref());
    if !s.uuid.is_empty() {
        flags.insert("uuid".into(), json!(s.uuid));
    }
    if !args.accounts.account.is_empty() {
        flags.insert("account".into(), json!(args.accounts.account));
    }
    Value::Object(flags)
}

fn request(common: &CommonSettings, args: &ExportArgs) -> anyhow::Result<ExportRequest> {
    let reason = args
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ConfigError("--reason must say why the calls are handed over".into()))?;
    let out = args
        .out
        .clone()
        .ok_or_else(|| ConfigError("--out must name where the bundle goes".into()))?;
    let prover = super::args::prover(&args.proof)?;
    Ok(ExportRequest {
        out,
        who: Requester::at_cli(args.actor.clone(), Some(reason.to_owned())),
        reason: reason.to_owned(),
        selection: selection(args),
        query: args.select.query(common.tz)?,
        with_recordings: args.with_recordings,
        load_file_dat: args.load_file == Some(LoadFile::Dat),
        prover,
        tz: common.tz,
        retention: chrono::Duration::days(i64::from(args.retention_days)),
        now: Utc::now(),
    })
}

async fn write(common: &CommonSettings, args: &ExportArgs) -> anyhow::Result<u8> {
    let request = request(common, args)?;
    let layout = LayoutArgs {
        sidecar: true,
        no_sidecar: false,
        manifests: args.chain.clone(),
    };
    let store = ArchiveStoreArgs::for_objects(&args.store, Some(&layout), None);
    let scopes = Scopes::open(common, &args.accounts, Some(&store)).await?;
    let mut sources = Vec::new();
    for scope in &scopes.all {
        sources.push(AccountSource {
            name: scope.name().clone(),
            ledger: scope.ledger.clone(),
            store: scope.store()?,
        });
    }
    let done = export(&request, &sources).await;
    scopes.close().await;
    match done {
        Ok(report) if args.json => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(EXIT_OK)
        }
        Ok(report) => {
            println!(
                "exported {} call(s) of {} account(s) into {}: {} file(s), {} bytes, {} recording(s)",
                report.calls,
                report.accounts.len(),
                report.out.display(),
                report.files,
                report.bytes,
                report.recordings
            );
            for note in &report.notes {
                eprintln!("callvault: {note}");
            }
            Ok(EXIT_OK)
        }
        Err(e) => {
            eprintln!("callvault: {e}");
            Ok(if e.is_config() {
                EXIT_CONFIG
            } else {
                EXIT_INCOMPLETE
            })
        }
    }
}
