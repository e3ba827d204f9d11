//! Proof a third party can check without trusting whoever runs callvault: every manifest
//! line is a leaf of an append-only Merkle log per account (RFC 6962), each manifest gets a
//! checkpoint of the log beside it, signed with the operator's ed25519 key and dated by
//! RFC 3161 time-stamping authorities, and an export bundle carries recordings with their
//! inclusion proofs, checkpoints, tokens and audit trail. The format is written down in
//! `docs/proof-format.md`, so that a recipient can check a bundle with `openssl` and a
//! short script instead of callvault.

pub mod check;
pub mod checkpoint;
pub mod keys;
pub mod log;
pub mod merkle;
pub mod prover;
pub mod stamp;
pub mod tsa;

pub use prover::{ProofReport, Prover};
