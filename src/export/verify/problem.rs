//! Every way a bundle can fail its check, one variant each, so that a report (and a test)
//! says which file, which call and which checkpoint, and what differs.

use serde::ser::SerializeStruct;

use crate::proof::tsa::TokenError;

/// A call as the report names it: `account/uuid`.
pub type CallName = String;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleProblem {
    #[error("{file} cannot be read: {why}")]
    Unreadable { file: String, why: String },
    #[error("SHA256SUMS is missing: the bundle's files cannot be checked as a whole")]
    SumsMissing,
    #[error("SHA256SUMS line {line} is not `<sha256 hex>  <path>`")]
    SumsMalformed { line: usize },
    #[error("{file} does not match SHA256SUMS: its SHA-256 is {found}, SHA256SUMS says {listed}")]
    SumMismatch {
        file: String,
        found: String,
        listed: String,
    },
    #[error("{file} is listed in SHA256SUMS but missing from the bundle")]
    ListedMissing { file: String },
    #[error("{file} is in the bundle but not listed in SHA256SUMS")]
    Unlisted { file: String },
    #[error("SHA256SUMS.sig is not a signature of SHA256SUMS by a key {source_of_keys}")]
    SumsSignature { source_of_keys: String },
    #[error("bundle.json says {said} calls, calls.jsonl has {found}")]
    CallCount { said: String, found: u64 },
    #[error("calls.jsonl line {line} is not a call line: {why}")]
    BadLine { line: usize, why: String },
    #[error(
        "calls.jsonl line {line} ({call}) is out of order: it comes after {previous} (calls are ordered by account, then first leaf index)"
    )]
    OutOfOrder {
        line: usize,
        call: CallName,
        previous: String,
    },
    #[error(
        "calls.jsonl line {line} ({call}): its leaf {index} says {field} {leaf_says}, the call says {call_says}"
    )]
    FieldDiffers {
        line: usize,
        call: CallName,
        index: u64,
        field: &'static str,
        leaf_says: String,
        call_says: String,
    },
    #[error("{file} is listed for {call} but missing from the bundle")]
    RecordingMissing { file: String, call: CallName },
    #[error("{file} ({call}): SHA-256 {found}, the call's line says {expected}")]
    RecordingHash {
        file: String,
        call: CallName,
        found: String,
        expected: String,
    },
    #[error("{file} ({call}): {found} bytes, the call's line says {expected}")]
    RecordingSize {
        file: String,
        call: CallName,
        found: u64,
        expected: u64,
    },
    #[error("{file} is in the bundle but no call in calls.jsonl lists it")]
    RecordingUnlisted { file: String },
    #[error("{referrer} names {checkpoint}, which is not in the bundle")]
    CheckpointMissing {
        checkpoint: String,
        referrer: String,
    },
    #[error(
        "calls.jsonl line {line} ({call}): its leaf {index} is not included in {checkpoint}: {why}"
    )]
    NotIncluded {
        line: usize,
        call: CallName,
        index: u64,
        checkpoint: String,
        why: String,
    },
    #[error("{checkpoint} is not a checkpoint: {why}")]
    BadCheckpoint { checkpoint: String, why: String },
    #[error("{checkpoint} is not signed")]
    Unsigned { checkpoint: String },
    #[error("{checkpoint} is signed by {signers}, not by a key {source_of_keys}")]
    UnknownKey {
        checkpoint: String,
        signers: String,
        source_of_keys: String,
    },
    #[error("{checkpoint}: its signature by {name} does not verify (the checkpoint was altered)")]
    BadSignature { checkpoint: String, name: String },
    #[error("{checkpoint}: its origin is {found:?}, its place in the bundle says {expected:?}")]
    WrongOrigin {
        checkpoint: String,
        found: String,
        expected: String,
    },
    #[error(
        "{checkpoint}: its manifest line names {found}, its file name says manifest {expected}"
    )]
    WrongManifest {
        checkpoint: String,
        found: String,
        expected: i64,
    },
    #[error("{checkpoint} has no time-stamp token ({checkpoint}.tsr)")]
    NoToken { checkpoint: String },
    #[error("{token}: {error}")]
    Token { token: String, error: TokenError },
    #[error("{from} is not consistent with {to}: {why}")]
    NotConsistent {
        from: String,
        to: String,
        why: String,
    },
    #[error("{checkpoint} has no consistency proof to {newest} in consistency.jsonl")]
    NoConsistencyProof { checkpoint: String, newest: String },
}

impl BundleProblem {
    /// A stable name for the kind of problem (the JSON report's `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreadable { .. } => "unreadable",
            Self::SumsMissing => "sums_missing",
            Self::SumsMalformed { .. } => "sums_malformed",
            Self::SumMismatch { .. } => "sum_mismatch",
            Self::ListedMissing { .. } => "listed_missing",
            Self::Unlisted { .. } => "unlisted",
            Self::SumsSignature { .. } => "sums_signature",
            Self::CallCount { .. } => "call_count",
            Self::BadLine { .. } => "bad_line",
            Self::OutOfOrder { .. } => "out_of_order",
            Self::FieldDiffers { .. } => "field_differs",
            Self::RecordingMissing { .. } => "recording_missing",
            Self::RecordingHash { .. } => "recording_hash",
            Self::RecordingSize { .. } => "recording_size",
            Self::RecordingUnlisted { .. } => "recording_unlisted",
            Self::CheckpointMissing { .. } => "checkpoint_missing",
            Self::NotIncluded { .. } => "not_included",
            Self::BadCheckpoint { .. } => "bad_checkpoint",
            Self::Unsigned { .. } => "unsigned",
            Self::UnknownKey { .. } => "unknown_key",
            Self::BadSignature { .. } => "bad_signature",
            Self::WrongOrigin { .. } => "wrong_origin",
            Self::WrongManifest { .. } => "wrong_manifest",
            Self::NoToken { .. } => "no_token",
            Self::Token { .. } => "token",
            Self::NotConsistent { .. } => "not_consistent",
            Self::NoConsistencyProof { .. } => "no_consistency_proof",
        }
    }
}

impl serde::Serialize for BundleProblem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_struct("BundleProblem", 2)?;
        out.serialize_field("kind", self.kind())?;
        out.serialize_field("message", &self.to_string())?;
        out.end()
    }
}
