//! callvault's integration tests: the real code against the simulator, an in-process S3
//! server and a temporary SQLite ledger.

mod archive;
mod audit;
mod audit_cli;
mod backfill;
mod cli;
mod download_faults;
mod failures;
mod faults;
mod inspect;
mod leases;
mod ledger;
mod manifests;
mod media;
mod process_faults;
mod provider_faults;
mod resume;
mod s3proxy;
mod security;
mod serve;
mod store_faults;
mod world;
