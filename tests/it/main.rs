//! callvault's integration tests: the real code against the simulator, an in-process S3
//! server and a fresh ledger, SQLite or PostgreSQL (a server the tests start themselves).

/// Runs tests on both ledger backends: for each `async fn name(kind: BackendKind)` named,
/// a module `name` with the tests `name::sqlite` and `name::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(callvault::ledger::BackendKind::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(callvault::ledger::BackendKind::Postgres).await
            }
        }
    )+};
}

mod accounts;
mod accounts_commands;
mod accounts_stores;
mod archive;
mod audit;
mod audit_cli;
mod backfill;
mod call_merge;
mod cli;
mod download_faults;
mod encryption;
mod export;
mod export_verify;
mod failures;
mod faults;
mod find;
mod find_cli;
mod group_commit;
mod holds;
mod holds_refused;
mod import_batches;
mod inspect;
mod leases;
mod ledger;
mod ledger_accounts;
mod ledger_copy;
mod manifests;
mod media;
mod monitoring;
mod moto;
mod pg;
mod postgres_receivers;
mod postgres_workers;
mod process_faults;
mod proof_log;
mod provider_faults;
mod rebuild;
mod resume;
mod retention;
mod s3proxy;
mod security;
mod serve;
mod serve_accounts;
mod store_faults;
mod sync;
mod tsa;
mod ui_accounts;
mod ui_browser;
mod ui_security;
mod world;
