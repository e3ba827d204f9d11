//! SQLite's part of an import (see `crate::ledger::records`): the not yet shared takeover of
//! rows found by sync, and the search terms, run in the import's transaction, which holds
//! the write lock from its start.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{SqliteLedger, SqliteTx, search, sync};
use crate::domain::CallRecord;
use crate::ledger::LedgerError;
use crate::ledger::records::ImportHooks;
use crate::timefmt::to_ledger;

#[async_trait]
impl ImportHooks for SqliteLedger {
    async fn take_over_bill_rows(
        &self,
        tx: &mut SqliteTx,
        records: &[&CallRecord],
        now: DateTime<Utc>,
    ) -> Result<HashSet<String>, LedgerError> {
        let now = to_ledger(now);
        let mut merged = HashSet::new();
        for rec in records {
            if let Some(bill_row) = sync::bill_row_for(&mut tx.0, rec).await? {
                sync::take_over(&mut tx.0, &bill_row, rec, &now).await?;
                merged.insert(rec.uuid.as_str().to_owned());
            }
        }
        Ok(merged)
    }

    async fn index_imported(&self, tx: &mut SqliteTx, imported: usize) -> Result<(), LedgerError> {
        search::refresh_batch(&mut tx.0, search::with_import(imported)).await?;
        Ok(())
    }
}
