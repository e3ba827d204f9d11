//! Proof a third party can check without trusting callvault (issue 19): what the archive
//! saved is bound to times vouched for by an outside time-stamping authority, in formats
//! (RFC 3161 tokens) that standard tools such as `openssl ts -verify` check on their own.

pub mod tsa;
