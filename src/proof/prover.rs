//! What a pass does for the log once its manifests are written: add them to the Merkle
//! log with a checkpoint each, signed when there is a key, then ask the time-stamping
//! authorities to date every checkpoint still without their token. Nothing here holds up
//! archiving: a failure is reported and logged, and the next pass takes up what is left
//! (an authority that is down stamps the checkpoints later).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::keys::SigningKey;
use super::log::{Logged, extend};
use super::stamp::{Stamper, stamp_pending};
use crate::ledger::Ledger;
use crate::store::Store;

/// The deployment's signing key and time-stamping authorities; shared by every pass.
#[derive(Clone, Default)]
pub struct Prover {
    signer: Option<Arc<SigningKey>>,
    stamper: Option<Arc<Stamper>>,
}

impl std::fmt::Debug for Prover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prover")
            .field("signer", &self.signer.as_ref().map(|k| k.name()))
            .field(
                "tsa",
                &self.stamper.as_ref().map(|s| s.urls().len()).unwrap_or(0),
            )
            .finish_non_exhaustive()
    }
}

/// What the log step of a pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProofReport {
    /// Manifests added to the log, each with its checkpoint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logged: Vec<Logged>,
    /// Time-stamp tokens obtained.
    #[serde(skip_serializing_if = "is_zero")]
    pub stamped: u64,
    /// What failed (the next pass tries again).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Wall time of the whole step (logging, signing, stamping): what the log costs a pass.
    pub seconds: f64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Prover {
    pub fn new(signer: Option<SigningKey>) -> Self {
        Self {
            signer: signer.map(Arc::new),
            stamper: None,
        }
    }

    /// Also dates every checkpoint with these authorities.
    pub fn with_stamper(mut self, stamper: Option<Stamper>) -> Self {
        self.stamper = stamper.map(Arc::new);
        self
    }

    pub fn stamper(&self) -> Option<&Stamper> {
        self.stamper.as_deref()
    }

    pub fn signer(&self) -> Option<&SigningKey> {
        self.signer.as_deref()
    }

    /// Logs the written manifests and stamps the checkpoints; never fails the pass.
    pub async fn after_manifests(
        &self,
        ledger: &Ledger,
        store: &Store,
        now: DateTime<Utc>,
    ) -> ProofReport {
        let started = std::time::Instant::now();
        let mut report = ProofReport::default();
        match extend(ledger, store, self.signer(), now).await {
            Ok(logged) => report.logged = logged,
            Err(e) => {
                tracing::warn!(error = %e, "the Merkle log was not extended; the next pass tries again");
                report.problems.push(e.to_string());
            }
        }
        if let Some(stamper) = self.stamper() {
            match stamp_pending(ledger, store, stamper, now).await {
                Ok(stamped) => {
                    report.stamped = stamped.tokens;
                    report.problems.extend(stamped.problems);
                }
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        report
    }
}
