//! PostgreSQL's part of an import (see `crate::ledger::records`): before anything is
//! written, the calls of the batch are locked (transaction-level advisory locks on their
//! bill ids and record file names, which `sync` takes too) and the rows sync found for them
//! are taken over (see `sync.rs`); after, the search terms.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{PgLedger, PgTx, search, sync};
use crate::domain::CallRecord;
use crate::ledger::LedgerError;
use crate::ledger::records::ImportHooks;

#[async_trait]
impl ImportHooks for PgLedger {
    async fn take_over_bill_rows(
        &self,
        tx: &mut PgTx,
        records: &[&CallRecord],
        now: DateTime<Utc>,
    ) -> Result<HashSet<String>, LedgerError> {
        sync::take_over_bill_rows(&mut tx.0, records, now).await
    }

    async fn index_imported(&self, tx: &mut PgTx, imported: usize) -> Result<(), LedgerError> {
        search::refresh_batch(&mut tx.0, search::with_import(imported)).await?;
        Ok(())
    }
}
