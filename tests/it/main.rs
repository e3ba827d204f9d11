//! callvault's integration tests: the real code against the simulator, an in-process S3
//! server and a temporary SQLite ledger.

mod archive;
mod audit;
mod audit_cli;
mod backfill;
mod cli;
mod failures;
mod faults;
mod leases;
mod ledger;
mod manifests;
mod media;
mod resume;
mod security;
mod serve;
mod world;
