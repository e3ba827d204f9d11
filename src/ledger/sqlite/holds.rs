//! SQLite: an erasure is recorded under the write lock taken up front (see
//! `ledger::holds`), so a hold or a manifest claim cannot slip between its checks and its
//! writes.

use async_trait::async_trait;

use super::{SqliteLedger, SqliteTx};
use crate::ledger::LedgerError;
use crate::ledger::holds::EraseLock;
use crate::ledger::sql::Db;

#[async_trait]
impl EraseLock for SqliteLedger {
    async fn begin_erasure(&self) -> Result<SqliteTx, LedgerError> {
        self.begin_write("starting an erasure").await
    }
}
