//! Prometheus metrics of the archive, read from the ledger (so a batch job, a textfile
//! collector and `serve`'s `/metrics` all tell the same story): the last run's outcome counts,
//! bytes and duration, the last success, records per state and the oldest pending age, and
//! the syncs' figures; every one per provider account (label `account`), so that one
//! account's backlog or failing runs show, and alert, on their own.
//! Pushed to a Pushgateway or written for node-exporter's textfile collector after `run`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::accounts::AccountName;
use crate::ledger::{LastRun, Ledger, LedgerError, StatusReport, SyncFigures};

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The outcomes a run's summary counts, as its JSON names them.
const OUTCOMES: [&str; 6] = [
    "archived",
    "retry_later",
    "failed",
    "expired",
    "released",
    "lease_lost",
];

/// One account's figures, as its rows in the ledger give them.
#[derive(Debug, Clone)]
pub struct AccountFigures {
    pub account: AccountName,
    pub status: StatusReport,
    pub syncs: Option<SyncFigures>,
    /// The Merkle log's checkpoints (`None` where not read).
    pub proof: Option<crate::ledger::ProofFigures>,
}

impl AccountFigures {
    /// Reads `ledger`'s account's figures (the ledger handle scoped to it).
    pub async fn read(ledger: &Ledger, retention: chrono::Duration) -> Result<Self, LedgerError> {
        Ok(Self {
            account: ledger.account().clone(),
            status: ledger.status(Utc::now(), retention).await?,
            syncs: Some(ledger.sync_figures().await?),
            proof: Some(ledger.proof_figures().await?),
        })
    }
}

/// The gauges being filled, by name: each a family over the account and its own labels,
/// registered once all accounts are in.
#[derive(Default)]
struct Sheet {
    counts: BTreeMap<&'static str, (&'static str, Family<Labels, Gauge>)>,
    values: BTreeMap<&'static str, (&'static str, Family<Labels, FloatGauge>)>,
}

impl Sheet {
    fn count(&mut self, name: &'static str, help: &'static str, labels: Labels, n: i64) {
        let (_, family) = self
            .counts
            .entry(name)
            .or_insert_with(|| (help, Family::default()));
        family.get_or_create(&labels).set(n);
    }

    fn value(&mut self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        let (_, family) = self
            .values
            .entry(name)
            .or_insert_with(|| (help, Family::default()));
        family.get_or_create(&labels).set(v);
    }

    fn register(self, registry: &mut Registry) {
        for (name, (help, family)) in self.counts {
            registry.register(name, help, family);
        }
        for (name, (help, family)) in self.values {
            registry.register(name, help, family);
        }
    }
}

fn labels(account: &AccountName, more: &[(&str, &str)]) -> Labels {
    std::iter::once(("account".to_owned(), account.to_string()))
        .chain(more.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
        .collect()
}

/// Adds every account's figures to `registry` (all gauges: a snapshot).
pub fn register_accounts(registry: &mut Registry, figures: &[AccountFigures]) {
    let mut sheet = Sheet::default();
    for f in figures {
        add_status(&mut sheet, &f.account, &f.status);
        if let Some(syncs) = &f.syncs {
            add_syncs(&mut sheet, &f.account, syncs);
        }
        if let Some(proof) = &f.proof {
            add_proof(&mut sheet, &f.account, proof);
        }
    }
    sheet.register(registry);
}

fn add_status(sheet: &mut Sheet, account: &AccountName, status: &StatusReport) {
    let plain = labels(account, &[]);
    for (state, n) in &status.counts {
        let by_state = labels(account, &[("state", state)]);
        sheet.count(
            "callvault_records",
            "Call records in the ledger, by state",
            by_state,
            *n,
        );
    }
    sheet.value(
        "callvault_oldest_pending_age_seconds",
        "Age of the oldest call still waiting to be archived (0 when none)",
        plain.clone(),
        status.oldest_pending_age_seconds.unwrap_or(0) as f64,
    );
    sheet.value(
        "callvault_at_risk_records",
        "Calls not archived whose recording the provider deletes within 14 days",
        plain.clone(),
        status.at_risk_within_14_days as f64,
    );
    sheet.value(
        "callvault_media_flagged_records",
        "Archived recordings whose duration disagrees with the call's billed seconds",
        plain.clone(),
        status.media_flagged as f64,
    );
    if let Some(t) = status.last_success_at {
        sheet.value(
            "callvault_last_success_timestamp_seconds",
            "When the last run that archived everything it claimed finished",
            plain,
            seconds(t),
        );
    }
    if let Some(run) = &status.last_run {
        add_last_run(sheet, account, run);
    }
}

/// The Merkle log: its size, checkpoints without a signature or a time-stamp, and how long
/// the oldest has waited for one (an authority down for long is worth an alert).
fn add_proof(sheet: &mut Sheet, account: &AccountName, proof: &crate::ledger::ProofFigures) {
    let plain = labels(account, &[]);
    sheet.value(
        "callvault_log_leaves",
        "Manifest lines in the account's Merkle log",
        plain.clone(),
        proof.leaves as f64,
    );
    sheet.value(
        "callvault_checkpoints",
        "Checkpoints of the Merkle log written beside the manifests",
        plain.clone(),
        proof.checkpoints as f64,
    );
    sheet.value(
        "callvault_checkpoints_unsigned",
        "Checkpoints written without a signing key",
        plain.clone(),
        proof.unsigned as f64,
    );
    sheet.value(
        "callvault_checkpoints_unstamped",
        "Checkpoints no time-stamping authority has dated yet",
        plain.clone(),
        proof.unstamped as f64,
    );
    let age = proof
        .oldest_unstamped_at
        .map_or(0.0, |t| (Utc::now() - t).num_seconds().max(0) as f64);
    sheet.value(
        "callvault_oldest_unstamped_checkpoint_age_seconds",
        "Age of the oldest checkpoint without a time-stamp token (0 when none)",
        plain.clone(),
        age,
    );
    sheet.value(
        "callvault_manifests_unlogged",
        "Written manifests not yet in the Merkle log",
        plain,
        proof.unlogged_manifests as f64,
    );
}

/// What the last run's row says: when it ended, its exit code, and its summary's counts.
fn add_last_run(sheet: &mut Sheet, account: &AccountName, run: &LastRun) {
    let plain = labels(account, &[]);
    if let Some(t) = run.finished_at.or(run.started_at) {
        sheet.value(
            "callvault_last_run_timestamp_seconds",
            "When the last run finished (or started, if it is still running)",
            plain.clone(),
            seconds(t),
        );
    }
    if let Some(code) = run.exit_code {
        sheet.value(
            "callvault_last_run_exit_code",
            "Exit code of the last run: 0 done, 1 incomplete, 2 configuration, 3 credentials",
            plain,
            code as f64,
        );
    }
    if let Some(summary) = &run.summary {
        add_run_summary(sheet, account, summary);
    }
}

/// The last run's summary: records per outcome, bytes, duration, logins (0 for what it
/// does not give).
fn add_run_summary(sheet: &mut Sheet, account: &AccountName, summary: &serde_json::Value) {
    let number = |field: &str| summary.get(field).and_then(|v| v.as_f64()).unwrap_or(0.0);
    for outcome in OUTCOMES {
        sheet.value(
            "callvault_last_run_records",
            "Records the last run settled, by outcome",
            labels(account, &[("outcome", outcome)]),
            number(outcome),
        );
    }
    for (name, help, field) in [
        (
            "callvault_last_run_bytes",
            "Bytes the last run archived",
            "bytes",
        ),
        (
            "callvault_last_run_duration_seconds",
            "How long the last run took",
            "duration_seconds",
        ),
        (
            "callvault_last_run_logins",
            "Provider logins during the last run",
            "logins",
        ),
    ] {
        sheet.value(name, help, labels(account, &[]), number(field));
    }
}

/// The syncs' figures: when the bill list was last read whole (alert on its age: a missed
/// sync), the calls found only by sync (a rise means callbacks are not arriving), and the
/// rows stored with unreadable fields.
fn add_syncs(sheet: &mut Sheet, account: &AccountName, syncs: &SyncFigures) {
    let plain = labels(account, &[]);
    if let Some(t) = syncs.last_success_at {
        sheet.value(
            "callvault_sync_last_success_timestamp_seconds",
            "When the last sync that read its whole window of the bill list finished",
            plain.clone(),
            seconds(t),
        );
    }
    sheet.value(
        "callvault_sync_found_records",
        "Calls known only from the provider's bill list: their callback never came",
        plain.clone(),
        syncs.found_by_sync as f64,
    );
    if let Some(last) = &syncs.last_sync {
        sheet.value(
            "callvault_last_sync_found_records",
            "Calls the last sync found that the ledger did not know",
            plain.clone(),
            last.progress.found as f64,
        );
    }
    sheet.value(
        "callvault_noted_records",
        "Calls stored with fields that could not be read",
        plain,
        syncs.noted as f64,
    );
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Every account's figures in Prometheus text format.
pub fn render(figures: &[AccountFigures]) -> String {
    let mut registry = Registry::default();
    register_accounts(&mut registry, figures);
    encode_text(&registry)
}

/// Encodes a registry. Only gauges and counters are used, whose OpenMetrics text is also
/// valid Prometheus 0.0.4 text (`# EOF` is a comment there).
pub fn encode_text(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, registry);
    text
}

/// Where a run's metrics go after it ends.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub pushgateway: Option<String>,
    pub file: Option<std::path::PathBuf>,
}

const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads each account's figures from its ledger handle (the run just ended is its last
/// run) and delivers them, all accounts in one text, to every target.
pub async fn publish(
    ledgers: &[&Ledger],
    retention: chrono::Duration,
    targets: &Targets,
) -> Result<(), MetricsError> {
    if targets.pushgateway.is_none() && targets.file.is_none() {
        return Ok(());
    }
    let mut figures = Vec::with_capacity(ledgers.len());
    for ledger in ledgers {
        figures.push(
            AccountFigures::read(ledger, retention)
                .await
                .map_err(|e| MetricsError::Ledger(e.to_string()))?,
        );
    }
    let text = render(&figures);
    if let Some(path) = &targets.file {
        write_textfile(path, &text)?;
    }
    if let Some(gateway) = &targets.pushgateway {
        push(gateway, text, PUSH_TIMEOUT).await?;
    }
    Ok(())
}

/// After a run's (or a scheduled round's) passes: every account's figures, each labelled
/// with its account, to every target. The archive is what matters: a lost delivery is
/// logged, not fatal.
pub async fn publish_passes(passes: &[crate::archive::AccountPass], targets: &Targets) {
    let Some(first) = passes.first() else { return };
    let ledgers: Vec<&Ledger> = passes.iter().map(|p| &p.deps.ledger).collect();
    if let Err(e) = publish(&ledgers, first.opts.retention, targets).await {
        tracing::warn!(error = %e, "could not publish the passes' metrics");
    }
}

/// Why metrics could not be delivered. The run's own outcome stands; this is reported.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot write metrics to {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("reading the ledger for metrics: {0}")]
    Ledger(String),
    #[error("pushgateway {url}: {problem}")]
    Push { url: String, problem: String },
}

/// Writes `text` for node-exporter's textfile collector: to a temporary file beside `path`,
/// then renamed over it, so the collector never reads half a file.
pub fn write_textfile(path: &Path, text: &str) -> Result<(), MetricsError> {
    let err = |source| MetricsError::File {
        path: path.display().to_string(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// Replaces the `job="callvault"` group on a Pushgateway with `text`.
pub async fn push(gateway: &str, text: String, timeout: Duration) -> Result<(), MetricsError> {
    let base = url::Url::parse(gateway)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| MetricsError::Push {
            url: gateway.to_owned(),
            problem: "not an http(s) URL".into(),
        })?;
    let url = format!(
        "{}/metrics/job/callvault",
        base.as_str().trim_end_matches('/')
    );
    let perr = |problem: String| MetricsError::Push {
        url: url.clone(),
        problem,
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| perr(e.to_string()))?;
    let response = client
        .put(&url)
        .header("content-type", "text/plain; version=0.0.4")
        .body(text)
        .send()
        .await
        .map_err(|e| perr(crate::provider::describe_transport(e)))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(perr(format!(
            "answered {status}: {}",
            body.chars().take(200).collect::<String>()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LastRun;

    #[test]
    fn the_text_has_the_run_and_ledger_figures() {
        let status = StatusReport {
            counts: [("archived", 7), ("pending", 2)].into_iter().collect(),
            total: 9,
            oldest_pending_call: None,
            oldest_pending_age_seconds: Some(3600),
            at_risk_within_14_days: 1,
            media_flagged: 2,
            retention_days: 90,
            last_run: Some(LastRun {
                id: crate::domain::RunId::from("run-1"),
                started_at: None,
                finished_at: DateTime::from_timestamp(1_700_000_000, 0),
                status: crate::domain::RunStatus::Completed,
                exit_code: Some(0),
                summary: Some(
                    serde_json::json!({"archived": 7, "bytes": 1234, "duration_seconds": 2.5}),
                ),
            }),
            last_success_at: DateTime::from_timestamp(1_700_000_000, 0),
        };
        let acme = AccountName::parse("acme").unwrap();
        let quiet = StatusReport {
            counts: [("pending", 5)].into_iter().collect(),
            last_run: None,
            media_flagged: 0,
            ..status.clone()
        };
        let text = render(&[
            AccountFigures {
                account: acme,
                status,
                syncs: None,
                proof: None,
            },
            AccountFigures {
                account: AccountName::parse("beta").unwrap(),
                status: quiet,
                syncs: None,
                proof: None,
            },
        ]);
        for line in [
            "callvault_records{account=\"acme\",state=\"archived\"} 7",
            "callvault_records{account=\"acme\",state=\"pending\"} 2",
            "callvault_records{account=\"beta\",state=\"pending\"} 5",
            "callvault_media_flagged_records{account=\"acme\"} 2",
            "callvault_media_flagged_records{account=\"beta\"} 0",
            "callvault_oldest_pending_age_seconds{account=\"acme\"} 3600",
            "callvault_last_success_timestamp_seconds{account=\"acme\"} 1700000000",
            "callvault_last_run_records{account=\"acme\",outcome=\"archived\"} 7",
            "callvault_last_run_records{account=\"acme\",outcome=\"failed\"} 0",
            "callvault_last_run_bytes{account=\"acme\"} 1234",
            "callvault_last_run_duration_seconds{account=\"acme\"} 2.5",
            "callvault_last_run_exit_code{account=\"acme\"} 0",
            "# TYPE callvault_last_run_bytes gauge",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "{line} missing in\n{text}"
            );
        }
        // Each metric is declared once, whatever the number of accounts.
        assert_eq!(
            text.matches("# TYPE callvault_records ").count(),
            1,
            "{text}"
        );
        assert!(!text.contains("callvault_last_run_bytes{account=\"beta\"}"));
    }
}
