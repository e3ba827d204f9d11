//! PostgreSQL: an erasure is recorded under the chain head's advisory lock (see
//! `ledger::holds`), which a manifest claim takes too, and the erasure's check locks the
//! call's row, so neither a manifest claim nor another erasure slips between its checks and
//! its writes.

use async_trait::async_trait;

use super::manifests::CHAIN_HEAD_LOCK;
use super::{PgLedger, PgTx};
use crate::ledger::LedgerError;
use crate::ledger::holds::EraseLock;
use crate::ledger::sql::{Db, Stmt, Tx};

#[async_trait]
impl EraseLock for PgLedger {
    async fn begin_erasure(&self) -> Result<PgTx, LedgerError> {
        let mut tx = self.begin("recording an erasure").await?;
        tx.execute(
            Stmt::new(
                "SELECT pg_advisory_xact_lock($1)",
                "waiting for the chain head lock",
            )
            .bind(CHAIN_HEAD_LOCK),
        )
        .await?;
        Ok(tx)
    }
}
