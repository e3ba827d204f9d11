//! SQLite: how a transaction storing calls holds off the others (see `ledger::sync`): it
//! takes the ledger's write lock at `BEGIN IMMEDIATE`, so the rows it reads to match a call
//! are the rows it writes; a callback and a sync of the same call, in two processes, still
//! make one row.

use async_trait::async_trait;

use super::{SqliteLedger, SqliteTx};
use crate::domain::CallRecord;
use crate::ledger::LedgerError;
use crate::ledger::sql::Db;
use crate::ledger::sync::StoreCalls;

#[async_trait]
impl StoreCalls for SqliteLedger {
    async fn begin_storing(&self, _records: &[&CallRecord]) -> Result<SqliteTx, LedgerError> {
        self.begin_write("starting to store calls").await
    }
}
