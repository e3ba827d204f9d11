//! Progress of long imports and runs on standard error: an indicatif bar on a terminal,
//! periodic log lines (records, bytes, rate, ETA) in logs and pipes.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::archive::{ProgressSink, RecordOutcome};
use crate::cli::{LogFormat, ProgressMode};

/// What the bar's position counts; the other measure is shown beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A run: records settled, out of those due; bytes beside.
    Records,
    /// An import: bytes read, out of the file's size; records beside.
    Bytes,
}

/// A progress meter. Dropping it (or `finish`) stops its ticker.
pub struct Meter {
    bar: ProgressBar,
    unit: Unit,
    label: &'static str,
    /// The measure that is not the position.
    other: AtomicU64,
    started: Instant,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

const BAR_REFRESH: Duration = Duration::from_millis(250);

impl Meter {
    /// A meter for the chosen mode; `None` when progress is off.
    pub fn start(
        mode: ProgressMode,
        log_format: LogFormat,
        interval: Duration,
        label: &'static str,
        unit: Unit,
    ) -> Option<Arc<Meter>> {
        let bar_wanted = match mode {
            ProgressMode::Off => return None,
            ProgressMode::Bar => true,
            ProgressMode::Lines => false,
            ProgressMode::Auto => std::io::stderr().is_terminal() && log_format == LogFormat::Human,
        };
        let bar = if bar_wanted {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let template = match unit {
                Unit::Records => {
                    "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} records · {msg} · ETA {eta}"
                }
                Unit::Bytes => {
                    "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} · {msg} · ETA {eta}"
                }
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_prefix(label);
            bar
        } else {
            ProgressBar::hidden()
        };
        let mut meter = Meter {
            bar,
            unit,
            label,
            other: AtomicU64::new(0),
            started: Instant::now(),
            ticker: None,
        };
        let period = if bar_wanted {
            BAR_REFRESH
        } else {
            interval.max(Duration::from_secs(1))
        };
        let meter_arc = Arc::new_cyclic(|weak: &std::sync::Weak<Meter>| {
            let weak = weak.clone();
            meter.ticker = Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(meter) = weak.upgrade() else { return };
                    if bar_wanted {
                        meter.bar.set_message(meter.beside());
                    } else {
                        meter.log_line();
                    }
                }
            }));
            meter
        });
        Some(meter_arc)
    }

    pub fn set_total(&self, total: u64) {
        self.bar.set_length(total);
    }

    /// Records (for an import) or bytes (for a run): the measure beside the bar.
    pub fn add_other(&self, n: u64) {
        self.other.fetch_add(n, Ordering::Relaxed);
    }

    pub fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn rates(&self) -> (u64, u64, f64) {
        let (records, bytes) = match self.unit {
            Unit::Records => (self.bar.position(), self.other.load(Ordering::Relaxed)),
            Unit::Bytes => (self.other.load(Ordering::Relaxed), self.bar.position()),
        };
        (
            records,
            bytes,
            self.started.elapsed().as_secs_f64().max(0.001),
        )
    }

    fn beside(&self) -> String {
        let (records, bytes, secs) = self.rates();
        match self.unit {
            Unit::Records => format!(
                "{} · {}/s",
                HumanBytes(bytes),
                HumanBytes((bytes as f64 / secs) as u64)
            ),
            Unit::Bytes => format!("{records} records · {:.0} records/s", records as f64 / secs),
        }
    }

    fn log_line(&self) {
        let (records, bytes, secs) = self.rates();
        let total = self.bar.length();
        let eta = match total {
            Some(total) if self.bar.position() > 0 && self.bar.position() < total => {
                let left = (total - self.bar.position()) as f64;
                let per_sec = self.bar.position() as f64 / secs;
                HumanDuration(Duration::from_secs_f64(left / per_sec)).to_string()
            }
            _ => "unknown".into(),
        };
        tracing::info!(
            progress = self.label,
            records,
            bytes,
            total = total.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
            records_per_second = format!("{:.1}", records as f64 / secs),
            mib_per_second = format!("{:.1}", bytes as f64 / secs / 1_048_576.0),
            eta,
            "{}",
            self.label
        );
    }

    /// Stops the meter; a line mode meter logs a last line.
    pub fn finish(&self) {
        if let Some(ticker) = &self.ticker {
            ticker.abort();
        }
        if self.bar.is_hidden() {
            self.log_line();
        } else {
            self.bar.set_message(self.beside());
            self.bar.finish();
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(ticker) = &self.ticker {
            ticker.abort();
        }
    }
}

/// A run reports into the meter.
impl ProgressSink for Meter {
    fn planned(&self, records: u64) {
        self.set_total(records);
    }

    fn bytes(&self, n: u64) {
        self.add_other(n);
    }

    fn record_done(&self, _outcome: RecordOutcome) {
        self.advance(1);
    }
}
