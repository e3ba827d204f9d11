//! Proving the archive: the manifest chain written after each pass, and reading the
//! archive back (objects against the ledger, the chain from the bucket and the ledger).

mod chain;
mod format;
mod manifest;
mod objects;
mod problems;

pub use chain::{ChainError, ChainReport, verify_chain};
pub use format::{
    LineSplitter, MANIFEST_FORMAT, ManifestEntry, ManifestErasure, ManifestHeader, ManifestLine,
    PreviousManifest,
};
pub use manifest::{ManifestError, ManifestWritten, write_manifests};
pub use objects::{ObjectsReport, Sample, VerifyOptions, verify_objects};
pub use problems::{ChainProblem, ObjectProblem};
