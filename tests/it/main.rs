//! callvault's integration tests: the real code against the simulator, an in-process S3
//! server and a temporary SQLite ledger.

mod archive;
mod backfill;
mod cli;
mod faults;
mod leases;
mod ledger;
mod media;
mod security;
mod serve;
mod world;
