//! callvault: archives cloud-telephony call recordings into S3-compatible storage before the
//! provider deletes them, and keeps a ledger that proves what was saved.

pub mod accounts;
pub mod app;
pub mod archive;
pub mod audit;
pub mod callback;
pub mod cli;
pub mod clock;
pub mod config;
pub mod config_file;
pub mod domain;
pub mod failure;
pub mod lease;
pub mod ledger;
pub mod metrics;
pub mod proof;
pub mod provider;
pub mod rebuild;
pub mod retention;
pub mod retrieve;
pub mod serve;
pub mod simulator;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod timefmt;
pub mod ui;
