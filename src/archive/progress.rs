//! Live progress of a pass for whoever shows it (a bar, log lines, metrics): the pass tells,
//! the edge decides how to show it.

use std::fmt;
use std::sync::Arc;

use super::RecordOutcome;

/// Receives a pass's progress. Called from every worker: keep it cheap.
pub trait ProgressSink: Send + Sync {
    /// How many records the pass expects to claim (before it starts).
    fn planned(&self, records: u64);
    /// Bytes of recordings that went through.
    fn bytes(&self, n: u64);
    /// A claimed record was settled.
    fn record_done(&self, outcome: RecordOutcome);
}

/// An optional sink, cheap to clone into every worker.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<dyn ProgressSink>>);

impl Progress {
    pub fn new(sink: Arc<dyn ProgressSink>) -> Self {
        Self(Some(sink))
    }

    pub fn planned(&self, records: u64) {
        if let Some(sink) = &self.0 {
            sink.planned(records);
        }
    }

    pub fn bytes(&self, n: u64) {
        if let Some(sink) = &self.0 {
            sink.bytes(n);
        }
    }

    pub fn record_done(&self, outcome: RecordOutcome) {
        if let Some(sink) = &self.0 {
            sink.record_done(outcome);
        }
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(on)"
        } else {
            "Progress(off)"
        })
    }
}
