//! SQLite: the chain head is claimed under the ledger's write lock, taken when the claim's
//! transaction begins (not at its first write), so two runs never claim at once.

use async_trait::async_trait;

use super::{SqliteLedger, SqliteTx};
use crate::ledger::LedgerError;
use crate::ledger::manifests::ChainHead;
use crate::ledger::sql::Db;

#[async_trait]
impl ChainHead for SqliteLedger {
    async fn begin_chain_head(&self) -> Result<SqliteTx, LedgerError> {
        self.begin_write("starting a manifest claim").await
    }
}
