//! The export bundle's files as types, shared by the writer (`export`) and the checker
//! (`export verify`); `docs/proof-format.md` specifies them for readers without callvault.

use serde::{Deserialize, Serialize};

/// Names the bundle format; bumped when a file changes meaning.
pub const BUNDLE_FORMAT: &str = "callvault-bundle/1";

pub const README: &str = "README.txt";
pub const BUNDLE_JSON: &str = "bundle.json";
pub const CALLS: &str = "calls.jsonl";
pub const CONSISTENCY: &str = "consistency.jsonl";
pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const KEYS_DIR: &str = "keys";
pub const TSA_CERTIFICATES: &str = "tsa/certificates.pem";
pub const AUDIT_ACCESS: &str = "audit/access.jsonl";
pub const AUDIT_HOLDS: &str = "audit/holds.jsonl";
pub const AUDIT_ERASURES: &str = "audit/erasures.jsonl";
pub const AUDIT_VERIFICATIONS: &str = "audit/verifications.jsonl";
pub const COMPLETENESS: &str = "completeness.jsonl";
pub const OBJECT_LOCK: &str = "object-lock.json";
pub const RECORDINGS_DIR: &str = "recordings";
pub const LOAD_FILE_DAT: &str = "calls.dat";
pub const SUMS: &str = "SHA256SUMS";
pub const SUMS_SIG: &str = "SHA256SUMS.sig";
pub const SUMS_TSR: &str = "SHA256SUMS.tsr";

/// `bundle.json`: what the export was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleInfo {
    pub format: String,
    pub created_at: String,
    pub actor: String,
    pub reason: String,
    /// The call-choosing flags as given (`{"number": "…", "since": "…", …}`).
    pub selection: serde_json::Value,
    pub calls: u64,
    pub accounts: Vec<String>,
    pub with_recordings: bool,
    pub callvault_version: String,
    /// Plain-language notes on what the bundle proves and what it does not.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One line of `calls.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallLine {
    pub account: String,
    pub uuid: String,
    /// `archived` or `erased`.
    pub state: String,
    /// The provider's call record (blanked for an erased call).
    pub record: serde_json::Value,
    pub object: Option<ObjectFacts>,
    #[serde(default)]
    pub holds: Vec<HoldFact>,
    pub leaves: Vec<Leaf>,
    /// The recording's path in the bundle (`--with-recordings`).
    pub recording: Option<String>,
}

/// The stored object, as the archive recorded it and as the store said at export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectFacts {
    pub key: String,
    pub version: Option<String>,
    pub size: u64,
    pub sha256: String,
    pub retention: Option<RetentionFact>,
    pub legal_hold: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionFact {
    pub mode: String,
    pub retain_until: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldFact {
    pub id: String,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: String,
    pub released_at: Option<String>,
}

/// One manifest line of the call, with its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaf {
    /// `archived` or `erased`.
    pub kind: String,
    /// The manifest line exactly as stored, without its newline.
    pub line: String,
    pub index: u64,
    pub manifest: ManifestRef,
    /// The bundle path of the checkpoint of that manifest.
    pub checkpoint: String,
    pub tree_size: u64,
    /// Hex hashes, bottom first (RFC 9162).
    pub inclusion: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRef {
    pub seq: i64,
    pub key: String,
}

/// One line of `consistency.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyLine {
    pub account: String,
    pub from: String,
    pub from_size: u64,
    pub to: String,
    pub to_size: u64,
    pub proof: Vec<String>,
}

/// The bundle path of an account's checkpoint `seq`.
pub fn checkpoint_path(account: &str, seq: i64) -> String {
    format!("{CHECKPOINTS_DIR}/{account}/{seq:010}.checkpoint")
}

/// The bundle path of a recording.
pub fn recording_path(account: &str, key: &str) -> String {
    format!("{RECORDINGS_DIR}/{account}/{key}")
}
