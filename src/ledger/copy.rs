//! `callvault ledger copy`: moves a whole ledger to another (SQLite to PostgreSQL, the
//! usual case, or back), table by table in pages, into an empty target only, and proves the
//! copy by counting rows and comparing a SHA-256 of every table read back from both sides.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Ledger, LedgerError, Table, TableRow};

/// Rows moved per transaction.
const PAGE: i64 = 1000;

/// What the copy found for one table on both sides.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableCheck {
    pub table: &'static str,
    pub source_rows: i64,
    pub target_rows: i64,
    pub source_sha256: String,
    pub target_sha256: String,
}

impl TableCheck {
    pub fn matches(&self) -> bool {
        self.source_rows == self.target_rows && self.source_sha256 == self.target_sha256
    }
}

/// The copy's result: one check per table.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub tables: Vec<TableCheck>,
}

impl CopyReport {
    pub fn all_match(&self) -> bool {
        self.tables.iter().all(TableCheck::matches)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target already holds data: copying into it would mix two histories.
    #[error(
        "the target ledger is not empty ({table} has {rows} rows): copy only into a new, empty ledger"
    )]
    TargetNotEmpty { table: &'static str, rows: i64 },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Copies every table of `from` into `to`, which must be empty, then checks both.
pub async fn copy_ledger(from: &Ledger, to: &Ledger) -> Result<CopyReport, CopyError> {
    for table in Table::ALL {
        let rows = to.count_rows(table).await?;
        if rows > 0 {
            return Err(CopyError::TargetNotEmpty {
                table: table.name(),
                rows,
            });
        }
    }
    for table in Table::ALL {
        let mut pages = Pages::new(table);
        while let Some(page) = pages.next(from).await? {
            to.import_rows(table, &page).await?;
        }
        tracing::info!(table = table.name(), "copied");
    }
    let mut tables = Vec::with_capacity(Table::ALL.len());
    for table in Table::ALL {
        let (source_rows, source_sha256) = table_checksum(from, table).await?;
        let (target_rows, target_sha256) = table_checksum(to, table).await?;
        tables.push(TableCheck {
            table: table.name(),
            source_rows,
            target_rows,
            source_sha256,
            target_sha256,
        });
    }
    Ok(CopyReport { tables })
}

/// The number of rows of `table` and the SHA-256 of all of them, read in key order, each
/// as one line of JSON with its columns sorted: the same on every backend for the same data.
pub async fn table_checksum(ledger: &Ledger, table: Table) -> Result<(i64, String), LedgerError> {
    let mut hasher = Sha256::new();
    let mut rows = 0i64;
    let mut pages = Pages::new(table);
    while let Some(page) = pages.next(ledger).await? {
        for row in &page {
            let line = serde_json::to_string(row)
                .map_err(|e| LedgerError::Corrupt(format!("a row of {}: {e}", table.name())))?;
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
            rows += 1;
        }
    }
    Ok((rows, hex::encode(hasher.finalize())))
}

/// A table read page by page in key order.
struct Pages {
    table: Table,
    after: Option<TableRow>,
    done: bool,
}

impl Pages {
    fn new(table: Table) -> Self {
        Self {
            table,
            after: None,
            done: false,
        }
    }

    /// The next page of up to [`PAGE`] rows, `None` once the table is read.
    async fn next(&mut self, ledger: &Ledger) -> Result<Option<Vec<TableRow>>, LedgerError> {
        if self.done {
            return Ok(None);
        }
        let page = ledger
            .export_rows(self.table, self.after.as_ref(), PAGE)
            .await?;
        self.done = i64::try_from(page.len()).unwrap_or(i64::MAX) < PAGE;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        self.after = Some(last.clone());
        Ok(Some(page))
    }
}
