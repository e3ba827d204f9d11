//! `callvault export`: chosen calls handed over as a bundle that stands on its own, and
//! `callvault export verify`, which checks one with nothing else (see
//! `docs/proof-format.md`).

pub mod format;
pub mod verify;
