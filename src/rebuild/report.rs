//! What a rebuild found in the bucket, for the operator (printed, or JSON) and for the exit
//! code: the counts of what was recovered, and every inconsistency by kind. The first
//! [`MAX_LISTED`] problems are kept with their keys; all of them are counted.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Problems kept with their details; the rest are only counted.
pub const MAX_LISTED: usize = 1000;

/// One inconsistency between the bucket's objects, sidecars and manifests.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RebuildProblem {
    /// A recording without its `<key>.json`: its call cannot be recovered.
    ObjectWithoutSidecar { key: String },
    /// A sidecar whose recording is not in the bucket.
    SidecarWithoutObject { sidecar: String, key: String },
    /// A sidecar that is not one callvault can read.
    SidecarUnreadable { sidecar: String, error: String },
    /// A sidecar that disagrees with its manifest entry or its object.
    SidecarDisagrees { sidecar: String, what: String },
    /// A manifest entry whose sidecar is missing or unreadable: the call is recovered from
    /// the entry alone (key, size, SHA-256, archived time), without its original record.
    EntryWithoutSidecar {
        manifest: String,
        uuid: String,
        key: String,
    },
    /// A call listed twice (two manifests, or two sidecars): the first is kept.
    Duplicate { uuid: String, key: String },
    /// A manifest that cannot be read or parsed.
    ManifestUnreadable { key: String, error: String },
    /// A manifest that does not link to the one before it as it should.
    ChainBreak { key: String, reason: String },
    /// (`--merge`) A manifest the ledger knows with other bytes than the bucket's.
    ManifestDiffers { key: String, reason: String },
    /// A recording (with its sidecar) of a call a manifest lists as erased: the erasure
    /// did not finish, or the object was put back.
    ErasedStillPresent { key: String },
    /// (`--merge`) A manifest lists the erasure of a call the ledger holds unerased.
    ErasureUnknownToLedger { uuid: String, manifest: String },
}

impl RebuildProblem {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ObjectWithoutSidecar { .. } => "object_without_sidecar",
            Self::SidecarWithoutObject { .. } => "sidecar_without_object",
            Self::SidecarUnreadable { .. } => "sidecar_unreadable",
            Self::SidecarDisagrees { .. } => "sidecar_disagrees",
            Self::EntryWithoutSidecar { .. } => "entry_without_sidecar",
            Self::Duplicate { .. } => "duplicate",
            Self::ManifestUnreadable { .. } => "manifest_unreadable",
            Self::ChainBreak { .. } => "chain_break",
            Self::ManifestDiffers { .. } => "manifest_differs",
            Self::ErasedStillPresent { .. } => "erased_still_present",
            Self::ErasureUnknownToLedger { .. } => "erasure_unknown_to_ledger",
        }
    }
}

impl fmt::Display for RebuildProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ObjectWithoutSidecar { key } => {
                write!(
                    f,
                    "object without sidecar: {key} (its call is not recovered)"
                )
            }
            Self::SidecarWithoutObject { sidecar, key } => {
                write!(
                    f,
                    "sidecar without object: {sidecar} names {key}, which is not in the bucket"
                )
            }
            Self::SidecarUnreadable { sidecar, error } => {
                write!(f, "unreadable sidecar {sidecar}: {error}")
            }
            Self::SidecarDisagrees { sidecar, what } => write!(f, "sidecar {sidecar}: {what}"),
            Self::EntryWithoutSidecar {
                manifest,
                uuid,
                key,
            } => write!(
                f,
                "{manifest} lists {uuid} at {key}, whose sidecar is missing or unreadable: recovered from the manifest entry, without the call's record"
            ),
            Self::Duplicate { uuid, key } => {
                write!(
                    f,
                    "call {uuid} found again at {key}: the first one found is kept"
                )
            }
            Self::ManifestUnreadable { key, error } => {
                write!(f, "unreadable manifest {key}: {error}")
            }
            Self::ChainBreak { key, reason } => write!(f, "chain break at {key}: {reason}"),
            Self::ManifestDiffers { key, reason } => {
                write!(f, "manifest {key} differs from the ledger's: {reason}")
            }
            Self::ErasedStillPresent { key } => write!(
                f,
                "{key} is still in the bucket, but a manifest lists its call as erased"
            ),
            Self::ErasureUnknownToLedger { uuid, manifest } => write!(
                f,
                "{manifest} lists the erasure of {uuid}, which the ledger holds unerased: left as it is"
            ),
        }
    }
}

/// The chain head the rebuilt ledger ends with; the next run's manifest names it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub key: String,
    pub sha256: String,
}

/// What `ledger rebuild --from-store` found and recovered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildReport {
    pub store: String,
    /// Objects the listing returned (recordings, sidecars, manifests, anything else).
    pub objects_listed: u64,
    /// Manifests read into the ledger.
    pub manifests: u64,
    pub manifest_entries: u64,
    /// Calls recovered from manifest entries (with their sidecars, where found).
    pub calls_from_manifests: u64,
    /// Calls recovered from sidecars no manifest lists yet (archived after the last one);
    /// the next run's manifest lists them.
    pub calls_not_in_a_manifest: u64,
    /// Erased calls restored from the manifests' erasure lines, each with its tombstone.
    pub erased: u64,
    /// Manifest entries of calls erased since (their objects are gone on purpose).
    pub entries_erased: u64,
    /// (`--merge`) Calls the ledger already held, left as they were.
    pub calls_already_known: u64,
    /// Sidecars of other accounts' calls (in a store the accounts share), left to theirs.
    pub other_accounts: u64,
    /// Runs named by the sidecars (one archival attempt recovered per call).
    pub runs: u64,
    pub head: Option<ChainHead>,
    /// Problems by kind, all counted.
    pub problem_counts: BTreeMap<&'static str, u64>,
    /// The first [`MAX_LISTED`] problems.
    pub problems: Vec<RebuildProblem>,
}

impl RebuildReport {
    pub fn problem(&mut self, problem: RebuildProblem) {
        tracing::warn!(kind = problem.kind(), "{problem}");
        *self.problem_counts.entry(problem.kind()).or_default() += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(problem);
        }
    }

    /// Every problem, counted.
    pub fn problem_total(&self) -> u64 {
        self.problem_counts.values().sum()
    }

    /// Whether the bucket was consistent: every recording with its sidecar and the reverse,
    /// every manifest readable and linked, every entry with its sidecar.
    pub fn consistent(&self) -> bool {
        self.problem_total() == 0
    }

    pub fn calls(&self) -> u64 {
        self.calls_from_manifests + self.calls_not_in_a_manifest
    }
}
