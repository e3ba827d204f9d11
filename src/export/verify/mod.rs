//! `callvault export verify`: checks a bundle with nothing else (no ledger, no bucket),
//! following `docs/proof-format.md` section 5, steps 1 to 7. Every failure is collected, not
//! only the first, as a [`BundleProblem`] naming the file, the call and the checkpoint.
//!
//! Trust comes from outside: the log key and the TSA roots the recipient was given. Without
//! them the copies inside the bundle are used, and the report says so: such a check shows
//! the bundle is intact, not who made it.

mod calls;
mod checkpoints;
mod files;
mod open;
mod problem;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use problem::{BundleProblem, CallName};

use crate::proof::keys::VerifierKey;
use crate::proof::tsa::TrustRoots;

/// What the bundle is checked against; `None` takes the bundle's own copies.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub log_keys: Option<Vec<VerifierKey>>,
    pub tsa_roots: Option<TrustRoots>,
}

/// Where a part of the trust came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TrustSource {
    #[serde(rename = "given")]
    Given,
    #[serde(rename = "taken from the bundle (keys/)")]
    BundleKeys,
    #[serde(rename = "taken from the bundle (tsa/certificates.pem)")]
    BundleCertificates,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrustReport {
    pub log_key: TrustSource,
    pub tsa_roots: TrustSource,
}

/// How much was checked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub files: u64,
    pub calls: u64,
    pub recordings: u64,
    pub leaves: u64,
    pub checkpoints: u64,
    pub tokens: u64,
    pub consistency_proofs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub bundle: String,
    pub trust: TrustReport,
    pub checked: Counts,
    pub problems: Vec<BundleProblem>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The bundle cannot be checked at all (exit 2: a usage or configuration error).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle {} cannot be opened: {source}", path.display())]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a bundle: give a directory, a .zip or a .tar", path.display())]
    NotABundle { path: PathBuf },
    #[error("the bundle {} cannot be unpacked: {why}", path.display())]
    Unreadable { path: PathBuf, why: String },
    #[error("the check was interrupted: {0}")]
    Interrupted(String),
}

/// Checks the bundle at `bundle` (a directory, `.zip` or `.tar`) against `trust`.
pub async fn verify_bundle(bundle: &Path, trust: &Trust) -> Result<VerifyReport, BundleError> {
    let bundle = bundle.to_owned();
    let trust = trust.clone();
    tokio::task::spawn_blocking(move || {
        let opened = open::open(&bundle)?;
        Ok(check(opened.root(), &bundle.display().to_string(), trust))
    })
    .await
    .map_err(|e| BundleError::Interrupted(e.to_string()))?
}

/// The state of one check: the trust it uses, the checkpoints read, what was found.
pub(crate) struct Check<'a> {
    root: &'a Path,
    keys: Vec<VerifierKey>,
    keys_source: TrustSource,
    roots: Option<TrustRoots>,
    /// Checkpoints by bundle path; `None` where one did not parse.
    checkpoints: BTreeMap<String, Option<checkpoints::Loaded>>,
    counts: Counts,
    problems: Vec<BundleProblem>,
}

impl Check<'_> {
    fn problem(&mut self, problem: BundleProblem) {
        self.problems.push(problem);
    }

    fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    /// "given with --log-key" or "in the bundle's keys/", for messages.
    fn keys_said(&self) -> String {
        match self.keys_source {
            TrustSource::Given => "given with --log-key".into(),
            _ => "in the bundle's keys/".into(),
        }
    }
}

fn check(root: &Path, name: &str, trust: Trust) -> VerifyReport {
    let mut problems = Vec::new();
    let (keys, keys_source) = match trust.log_keys {
        Some(keys) => (keys, TrustSource::Given),
        None => (
            files::bundle_keys(root, &mut problems),
            TrustSource::BundleKeys,
        ),
    };
    let (roots, roots_source) = match trust.tsa_roots {
        Some(roots) => (Some(roots), TrustSource::Given),
        None => (
            files::bundle_roots(root, &mut problems),
            TrustSource::BundleCertificates,
        ),
    };
    let mut check = Check {
        root,
        keys,
        keys_source,
        roots,
        checkpoints: BTreeMap::new(),
        counts: Counts::default(),
        problems,
    };
    check.sums();
    check.checkpoints();
    check.calls();
    check.consistency();
    VerifyReport {
        bundle: name.to_owned(),
        trust: TrustReport {
            log_key: keys_source,
            tsa_roots: roots_source,
        },
        checked: check.counts,
        problems: check.problems,
    }
}
