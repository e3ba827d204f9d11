//! PostgreSQL: claiming the chain head first takes a transaction-level advisory lock,
//! [`CHAIN_HEAD_LOCK`], so two workers never claim at once (the second waits, at most the
//! busy timeout, and then sees what the first committed). Recording an erasure takes the
//! same lock (see `ledger::holds`), and its check locks the call's row. Writing, renewing and releasing
//! the head check its owner in the row itself and need no lock of their own.

use async_trait::async_trait;

use super::{PgLedger, PgTx};
use crate::ledger::LedgerError;
use crate::ledger::manifests::ChainHead;
use crate::ledger::sql::{Db, Stmt, Tx};

/// The advisory lock the chain head is claimed under: the ASCII bytes of `cv-chain` as a
/// big-endian 64-bit integer (7166965761982949742). Advisory locks are shared by everything
/// using the database: nothing else may take this key. (sqlx's migration lock is another
/// 64-bit key, `0x3d32ad9e` times the CRC-32 of the database name.)
const CHAIN_HEAD_LOCK: i64 = i64::from_be_bytes(*b"cv-chain");

#[async_trait]
impl ChainHead for PgLedger {
    async fn begin_chain_head(&self) -> Result<PgTx, LedgerError> {
        let mut tx = self.begin("starting a manifest claim").await?;
        // Held until this transaction ends; every statement after it sees what the
        // previous holder committed (read committed takes a snapshot per statement).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_head_lock_key_is_fixed() {
        assert_eq!(CHAIN_HEAD_LOCK, 7_166_965_761_982_949_742);
    }
}
