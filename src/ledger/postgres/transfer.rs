//! PostgreSQL: whole tables in and out, for `callvault ledger copy`. Rows travel as JSON
//! maps (text as strings, integers as numbers, times as the ledger's fixed-width UTC text),
//! so a table reads the same here as in SQLite and a checksum over it compares.
//!
//! A page of rows is imported as one `INSERT … SELECT FROM unnest(…)`, one array per
//! column. The triggers count the imported calls per state as for any insert, and after
//! attempts are imported their identity sequence is moved past the largest id, so the
//! next attempt recorded here gets a fresh one.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgArguments, PgRow};

use super::error::{Ctx, retry_conflicts};
use super::{PgLedger, at};
use crate::ledger::{Kind, LedgerError, Table, TableRow, Transfer};
use crate::timefmt::{from_ledger, to_ledger};

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, PgArguments>;

/// The SQL below is built only from [`Table`]'s static names, never from row data.
fn assert_safe(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

fn key_kind(table: Table) -> Kind {
    table
        .columns()
        .iter()
        .find(|(name, _)| *name == table.key())
        .map_or(Kind::Text, |(_, kind)| *kind)
}

/// The element type of the array a column of `kind` is imported from.
fn array_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text[]",
        Kind::Int => "bigint[]",
        Kind::Time => "timestamptz[]",
    }
}

fn value_of(row: &PgRow, name: &'static str, kind: Kind) -> Result<Value, LedgerError> {
    const CONTEXT: &str = "reading a table's rows";
    Ok(match kind {
        Kind::Text => row
            .try_get::<Option<String>, _>(name)
            .ctx(CONTEXT)?
            .map_or(Value::Null, Value::String),
        Kind::Int => row
            .try_get::<Option<i64>, _>(name)
            .ctx(CONTEXT)?
            .map_or(Value::Null, Value::from),
        Kind::Time => row
            .try_get::<Option<DateTime<Utc>>, _>(name)
            .ctx(CONTEXT)?
            .map_or(Value::Null, |t| Value::String(to_ledger(t))),
    })
}

fn not_a(table: Table, name: &str, kind: Kind, value: &Value) -> LedgerError {
    LedgerError::Corrupt(format!(
        "column {}.{name}: {value} is not a {kind:?} value",
        table.name()
    ))
}

/// One column of a page of rows, as the array it is bound as.
enum Column {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
    Time(Vec<Option<DateTime<Utc>>>),
}

impl Column {
    fn read(table: Table, name: &str, kind: Kind, rows: &[TableRow]) -> Result<Self, LedgerError> {
        fn cell<'r>(row: &'r TableRow, name: &str) -> Option<&'r Value> {
            row.get(name).filter(|v| !v.is_null())
        }
        Ok(match kind {
            Kind::Text => Self::Text(
                rows.iter()
                    .map(|row| {
                        cell(row, name)
                            .map(|v| {
                                v.as_str()
                                    .map(str::to_owned)
                                    .ok_or_else(|| not_a(table, name, kind, v))
                            })
                            .transpose()
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Kind::Int => Self::Int(
                rows.iter()
                    .map(|row| {
                        cell(row, name)
                            .map(|v| v.as_i64().ok_or_else(|| not_a(table, name, kind, v)))
                            .transpose()
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Kind::Time => Self::Time(
                rows.iter()
                    .map(|row| {
                        cell(row, name)
                            .map(|v| {
                                v.as_str()
                                    .and_then(from_ledger)
                                    .map(at)
                                    .ok_or_else(|| not_a(table, name, kind, v))
                            })
                            .transpose()
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    fn bind<'q>(&'q self, query: Query<'q>) -> Query<'q> {
        match self {
            Self::Text(values) => query.bind(values),
            Self::Int(values) => query.bind(values),
            Self::Time(values) => query.bind(values),
        }
    }
}

#[async_trait]
impl Transfer for PgLedger {
    async fn count_rows(&self, table: Table) -> Result<i64, LedgerError> {
        sqlx::query_scalar(assert_safe(format!(
            "SELECT count(*) FROM {}",
            table.name()
        )))
        .fetch_one(&self.pool)
        .await
        .ctx("counting a table's rows")
    }

    async fn export_rows(
        &self,
        table: Table,
        after: Option<&Value>,
        limit: i64,
    ) -> Result<Vec<TableRow>, LedgerError> {
        let (name, key, columns) = (table.name(), table.key(), table.column_list());
        let after = after.filter(|v| !v.is_null());
        let query = match after {
            None => sqlx::query(assert_safe(format!(
                "SELECT {columns} FROM {name} ORDER BY {key} LIMIT $1"
            ))),
            Some(after) => {
                let query = sqlx::query(assert_safe(format!(
                    "SELECT {columns} FROM {name} WHERE {key} > $1 ORDER BY {key} LIMIT $2"
                )));
                let kind = key_kind(table);
                match (kind, after) {
                    (Kind::Int, v) => {
                        query.bind(v.as_i64().ok_or_else(|| not_a(table, key, kind, v))?)
                    }
                    (Kind::Text, Value::String(s)) => query.bind(s.as_str()),
                    (Kind::Time, Value::String(s)) => query.bind(
                        from_ledger(s)
                            .map(at)
                            .ok_or_else(|| not_a(table, key, kind, after))?,
                    ),
                    (_, v) => return Err(not_a(table, key, kind, v)),
                }
            }
        };
        let rows = query
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await
            .ctx("reading a table's rows")?;
        rows.iter()
            .map(|row| {
                table
                    .columns()
                    .iter()
                    .map(|(name, kind)| Ok(((*name).to_owned(), value_of(row, name, *kind)?)))
                    .collect()
            })
            .collect()
    }

    async fn import_rows(&self, table: Table, rows: &[TableRow]) -> Result<(), LedgerError> {
        if rows.is_empty() {
            return Ok(());
        }
        let columns = table
            .columns()
            .iter()
            .map(|(name, kind)| Column::read(table, name, *kind, rows))
            .collect::<Result<Vec<_>, _>>()?;
        let arrays = table
            .columns()
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| format!("${}::{}", i + 1, array_type(*kind)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO {name} ({list}) SELECT {list} FROM unnest({arrays}) AS r ({list})",
            name = table.name(),
            list = table.column_list(),
        );
        let (sql, columns) = (&sql, &columns);
        retry_conflicts(|| async move {
            let mut tx = self.pool.begin().await.ctx("starting a table import")?;
            let query = columns
                .iter()
                .fold(sqlx::query(assert_safe(sql.clone())), |query, column| {
                    column.bind(query)
                });
            query.execute(&mut *tx).await.ctx("writing copied rows")?;
            if matches!(
                table,
                Table::Attempts | Table::AccessLog | Table::AccessLogCalls
            ) {
                // The next row recorded here numbers after the copied ones.
                let name = table.name();
                sqlx::query(assert_safe(format!(
                    "SELECT setval(pg_get_serial_sequence('{name}', 'id'),
                                   GREATEST(max(id), 1), max(id) IS NOT NULL)
                     FROM {name}"
                )))
                .execute(&mut *tx)
                .await
                .ctx("moving an identity sequence past the copied ids")?;
            }
            tx.commit().await.ctx("committing a table import")
        })
        .await
    }
}
