//! `callvault export`: chosen calls handed over as a bundle that stands on its own, and
//! `callvault export verify`, which checks one with nothing else (see
//! `docs/proof-format.md`).

mod dat;
mod files;
pub mod format;
mod gather;
mod proofs;
mod readme;
pub mod sink;
pub mod write;

pub use write::{AccountSource, ExportError, ExportReport, ExportRequest, export};
