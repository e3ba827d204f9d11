//! callvault's integration tests: the real code against the simulator, an in-process S3
//! server and a temporary SQLite ledger.

mod archive;
mod backfill;
mod cli;
mod download_faults;
mod faults;
mod inspect;
mod leases;
mod ledger;
mod process_faults;
mod provider_faults;
mod s3proxy;
mod serve;
mod store_faults;
mod world;
