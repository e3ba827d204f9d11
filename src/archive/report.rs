//! What a run did, counted per outcome; printed for people or as JSON, stored in the ledger.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How one claimed record ended in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    Archived {
        bytes: u64,
        /// Its duration disagrees with the call's billed seconds (noted in the ledger).
        flagged: bool,
        /// Times the download broke and was resumed from its last byte.
        resumes: u32,
    },
    /// Passing failures; back to pending for a later run.
    RetryLater,
    Failed,
    Expired,
    /// Interrupted by shutdown or a stop; back to pending.
    Released,
    /// Another run took the record over (our lease ran out); nothing was settled.
    LeaseLost,
}

/// A record a dry run would archive.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedRecord {
    pub uuid: String,
    pub record_file: String,
    pub call_start: Option<DateTime<Utc>>,
    pub key: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub dry_run: bool,
    pub archived: u64,
    pub retry_later: u64,
    pub failed: u64,
    pub expired: u64,
    pub released: u64,
    pub lease_lost: u64,
    pub bytes: u64,
    /// Archived recordings whose duration disagrees with the call's billed seconds.
    pub media_flagged: u64,
    /// Downloads that broke and were resumed from their last byte (not restarted).
    pub resumed_downloads: u64,
    pub duration_seconds: f64,
    pub throughput_mib_per_second: f64,
    pub records_per_second: f64,
    /// Logins to the provider during the run.
    pub logins: u64,
    /// Ledger commits the pass made (claims, attempts, settlements, lease renewals; not the
    /// run's own start, end and manifests); `None` on a ledger that does not count them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_commits: Option<u64>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
    /// Records of the run's slice still due when it ended (left by a deadline, a stop or
    /// `--max-records`, or given up by a lease that ran out elsewhere): a worker of a
    /// work-queue Job exits 0 only when this is 0.
    pub left_due: u64,
    /// Manifests written at the end of the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<crate::audit::ManifestWritten>,
    /// Why no manifest was written (the next pass lists the records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_error: Option<String>,
    /// The Merkle log: manifests logged with their checkpoints, tokens obtained.
    pub proof: crate::proof::ProofReport,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<PlannedRecord>,
}

impl RunReport {
    pub fn add(&mut self, outcome: RecordOutcome) {
        match outcome {
            RecordOutcome::Archived {
                bytes,
                flagged,
                resumes,
            } => {
                self.resumed_downloads += u64::from(resumes);
                self.archived += 1;
                self.bytes += bytes;
                self.media_flagged += u64::from(flagged);
            }
            RecordOutcome::RetryLater => self.retry_later += 1,
            RecordOutcome::Failed => self.failed += 1,
            RecordOutcome::Expired => self.expired += 1,
            RecordOutcome::Released => self.released += 1,
            RecordOutcome::LeaseLost => self.lease_lost += 1,
        }
    }

    pub fn attempted(&self) -> u64 {
        self.archived + self.not_archived()
    }

    /// Records this run claimed and did not archive.
    pub fn not_archived(&self) -> u64 {
        self.retry_later + self.failed + self.expired + self.released + self.lease_lost
    }

    pub fn finish(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        self.duration_seconds = (secs * 1000.0).round() / 1000.0;
        if secs > 0.0 {
            self.throughput_mib_per_second =
                ((self.bytes as f64 / 1_048_576.0 / secs) * 100.0).round() / 100.0;
            self.records_per_second = ((self.archived as f64 / secs) * 100.0).round() / 100.0;
        }
    }

    /// A few lines for people.
    pub fn human(&self) -> String {
        let mut out = String::new();
        if self.dry_run {
            out.push_str(&format!(
                "dry run: {} record(s) would be archived\n",
                self.planned.len()
            ));
            for p in &self.planned {
                out.push_str(&format!("  {}  {}  -> {}\n", p.uuid, p.record_file, p.key));
            }
            return out;
        }
        out.push_str(&format!(
            "run {}: archived {}, retry later {}, failed {}, expired {}, released {}, lease lost {}\n",
            self.run_id, self.archived, self.retry_later, self.failed, self.expired, self.released, self.lease_lost
        ));
        out.push_str(&format!(
            "{} bytes in {:.1} s ({:.2} MiB/s, {:.2} records/s), {} provider login(s)\n",
            self.bytes,
            self.duration_seconds,
            self.throughput_mib_per_second,
            self.records_per_second,
            self.logins
        ));
        for m in &self.manifests {
            out.push_str(&format!(
                "manifest {}: {} entries, sha256 {}\n",
                m.key, m.entries, m.sha256
            ));
        }
        if self.left_due > 0 {
            out.push_str(&format!(
                "{} record(s) still due: another pass (or another worker) takes them\n",
                self.left_due
            ));
        }
        if let Some(why) = &self.manifest_error {
            out.push_str(&format!("no manifest written: {why}\n"));
        }
        if self.resumed_downloads > 0 {
            out.push_str(&format!(
                "{} broken download(s) resumed from their last byte\n",
                self.resumed_downloads
            ));
        }
        if self.media_flagged > 0 {
            out.push_str(&format!(
                "{} archived recording(s) flagged: duration disagrees with the billed seconds (see `status`)\n",
                self.media_flagged
            ));
        }
        if let Some(why) = &self.stopped {
            out.push_str(&format!("stopped early: {why}\n"));
        }
        out
    }
}
