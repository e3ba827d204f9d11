//! PostgreSQL: how a transaction storing calls holds off the others (see `ledger::sync`).
//! It first takes transaction-level advisory locks on what identifies each call besides
//! its uuid (its bill id within the company, its record file name) and on its uuid, in key
//! order, and only then looks for the calls' rows. Deadlock-free (every transaction locks
//! in the same order); a lock wait past `lock_timeout` is a conflict, and the transaction
//! is run again.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::error::Ctx;
use super::{PgLedger, PgTx};
use crate::domain::CallRecord;
use crate::ledger::LedgerError;
use crate::ledger::sql::Db;
use crate::ledger::sync::StoreCalls;

/// The advisory lock keys of `records`' calls, sorted and without repeats.
fn call_lock_keys(account: &str, records: &[&CallRecord]) -> Vec<i64> {
    let key = |kind: &str, value: &str| {
        let digest =
            Sha256::digest(format!("callvault-call\0{account}\0{kind}\0{value}").as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    };
    let mut keys: Vec<i64> = records
        .iter()
        .flat_map(|r| {
            let bill = r
                .bill_id
                .as_deref()
                .map(|id| key("bill", &format!("{}\0{id}", r.company_code)));
            let file =
                (!r.record_file.trim().is_empty()).then(|| key("file", r.record_file.trim()));
            [Some(key("uuid", r.uuid.as_str())), bill, file]
        })
        .flatten()
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

#[async_trait]
impl StoreCalls for PgLedger {
    async fn begin_storing(&self, records: &[&CallRecord]) -> Result<PgTx, LedgerError> {
        let mut tx = self.begin("starting to store calls").await?;
        let keys = call_lock_keys(self.account.as_str(), records);
        if !keys.is_empty() {
            sqlx::query(
                "SELECT pg_advisory_xact_lock(k)
                 FROM (SELECT k FROM unnest($1::bigint[]) AS u (k) ORDER BY k) AS sorted",
            )
            .bind(&keys)
            .execute(&mut *tx.0)
            .await
            .ctx("locking the calls being stored")?;
        }
        Ok(tx)
    }
}
