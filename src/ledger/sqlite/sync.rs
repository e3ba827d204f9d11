//! SQLite: how a transaction storing calls holds off the others (see `ledger::sync`): it
//! takes the ledger's write lock at `BEGIN IMMEDIATE`, so the rows it reads to match a call
//! are the rows it writes; a callback and a sync of the same call, in two processes, still
//! make one row.

use async_trait::async_trait;

use super::{SqliteLedger, SqliteTx};
use crate::domain::CallRecord;
use crate::ledger::LedgerError;
use crate::ledger::sql::{Db, Stmt, Tx};
use crate::ledger::sync::StoreCalls;

/// The page cache of a connection that stores calls (64 MiB, against SQLite's 2 MiB): a
/// batch of an import dirties pages all over the calls' and search terms' indexes (uuids,
/// file names and numbers are random keys), and a cache smaller than those pages spills
/// them to the WAL mid-transaction and reads them back, over and over (measured on 20,000
/// callbacks: 16 page writes and 11 page reads a record, a third of the import's CPU in the
/// kernel). The pages are only taken as they are used, and stay bounded by this size.
const STORING_CACHE: &str = "PRAGMA cache_size = -65536";

#[async_trait]
impl StoreCalls for SqliteLedger {
    async fn begin_storing(&self, _records: &[&CallRecord]) -> Result<SqliteTx, LedgerError> {
        let mut tx = self.begin_write("starting to store calls").await?;
        tx.execute(Stmt::new(
            STORING_CACHE,
            "sizing the page cache for storing calls",
        ))
        .await?;
        Ok(tx)
    }
}
