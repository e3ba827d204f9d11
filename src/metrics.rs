//! Prometheus metrics of the archive, read from the ledger (so a batch job, a textfile
//! collector and `serve`'s `/metrics` all tell the same story): the last run's outcome counts,
//! bytes and duration, the last success, records per state and the oldest pending age.
//! Pushed to a Pushgateway or written for node-exporter's textfile collector after `run`.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::ledger::{LastRun, StatusReport};

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

/// Adds the ledger's figures to `registry` (all gauges: a snapshot).
pub fn register_ledger(registry: &mut Registry, status: &StatusReport) {
    let states = Family::<Labels, Gauge>::default();
    for (state, n) in &status.counts {
        states
            .get_or_create(&vec![("state".into(), (*state).into())])
            .set(*n);
    }
    registry.register(
        "callvault_records",
        "Call records in the ledger, by state",
        states,
    );
    gauge(
        registry,
        "callvault_oldest_pending_age_seconds",
        "Age of the oldest call still waiting to be archived (0 when none)",
        status.oldest_pending_age_seconds.unwrap_or(0) as f64,
    );
    gauge(
        registry,
        "callvault_at_risk_records",
        "Calls not archived whose recording the provider deletes within 14 days",
        status.at_risk_within_14_days as f64,
    );
    gauge(
        registry,
        "callvault_media_flagged_records",
        "Archived recordings whose duration disagrees with the call's billed seconds",
        status.media_flagged as f64,
    );
    if let Some(t) = status.last_success_at {
        gauge(
            registry,
            "callvault_last_success_timestamp_seconds",
            "When the last run that archived everything it claimed finished",
            seconds(t),
        );
    }
    if let Some(run) = &status.last_run {
        register_last_run(registry, run);
    }
}

/// Adds what the last run's row says: when it ended, its exit code, and its summary's
/// counts.
fn register_last_run(registry: &mut Registry, run: &LastRun) {
    if let Some(t) = run.finished_at.or(run.started_at) {
        gauge(
            registry,
            "callvault_last_run_timestamp_seconds",
            "When the last run finished (or started, if it is still running)",
            seconds(t),
        );
    }
    if let Some(code) = run.exit_code {
        gauge(
            registry,
            "callvault_last_run_exit_code",
            "Exit code of the last run: 0 done, 1 incomplete, 2 configuration, 3 credentials",
            code as f64,
        );
    }
    if let Some(summary) = &run.summary {
        register_run_summary(registry, summary);
    }
}

/// Adds the last run's summary: records per outcome, bytes, duration, logins (0 for what
/// it does not give).
fn register_run_summary(registry: &mut Registry, summary: &serde_json::Value) {
    let number = |field: &str| summary.get(field).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let outcomes = Family::<Labels, FloatGauge>::default();
    for outcome in OUTCOMES {
        outcomes
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .set(number(outcome));
    }
    registry.register(
        "callvault_last_run_records",
        "Records the last run settled, by outcome",
        outcomes,
    );
    gauge(
        registry,
        "callvault_last_run_bytes",
        "Bytes the last run archived",
        number("bytes"),
    );
    gauge(
        registry,
        "callvault_last_run_duration_seconds",
        "How long the last run took",
        number("duration_seconds"),
    );
    gauge(
        registry,
        "callvault_last_run_logins",
        "Provider logins during the last run",
        number("logins"),
    );
}

/// Adds the syncs' figures: when the bill list was last read whole (alert on its age: a
/// missed sync), the calls found only by sync (a rise means callbacks are not arriving),
/// and the rows stored with unreadable fields.
pub fn register_syncs(registry: &mut Registry, syncs: &crate::ledger::SyncFigures) {
    if let Some(t) = syncs.last_success_at {
        gauge(
            registry,
            "callvault_sync_last_success_timestamp_seconds",
            "When the last sync that read its whole window of the bill list finished",
            seconds(t),
        );
    }
    gauge(
        registry,
        "callvault_sync_found_records",
        "Calls known only from the provider's bill list: their callback never came",
        syncs.found_by_sync as f64,
    );
    if let Some(last) = &syncs.last_sync {
        gauge(
            registry,
            "callvault_last_sync_found_records",
            "Calls the last sync found that the ledger did not know",
            last.progress.found as f64,
        );
    }
    gauge(
        registry,
        "callvault_noted_records",
        "Calls stored with fields that could not be read",
        syncs.noted as f64,
    );
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g = FloatGauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// The ledger's figures in Prometheus text format.
pub fn render(status: &StatusReport) -> String {
    let mut registry = Registry::default();
    register_ledger(&mut registry, status);
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

/// Reads the ledger's figures (the run just ended is its last run) and delivers them to
/// every target.
pub async fn publish(
    ledger: &crate::ledger::Ledger,
    retention: chrono::Duration,
    targets: &Targets,
) -> Result<(), MetricsError> {
    if targets.pushgateway.is_none() && targets.file.is_none() {
        return Ok(());
    }
    let status = ledger
        .status(Utc::now(), retention)
        .await
        .map_err(|e| MetricsError::Ledger(e.to_string()))?;
    let text = render(&status);
    if let Some(path) = &targets.file {
        write_textfile(path, &text)?;
    }
    if let Some(gateway) = &targets.pushgateway {
        push(gateway, text, PUSH_TIMEOUT).await?;
    }
    Ok(())
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
        let text = render(&status);
        for line in [
            "callvault_records{state=\"archived\"} 7",
            "callvault_records{state=\"pending\"} 2",
            "callvault_media_flagged_records 2",
            "callvault_oldest_pending_age_seconds 3600",
            "callvault_last_success_timestamp_seconds 1700000000",
            "callvault_last_run_records{outcome=\"archived\"} 7",
            "callvault_last_run_records{outcome=\"failed\"} 0",
            "callvault_last_run_bytes 1234",
            "callvault_last_run_duration_seconds 2.5",
            "callvault_last_run_exit_code 0",
            "# TYPE callvault_last_run_bytes gauge",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "{line} missing in\n{text}"
            );
        }
    }
}
