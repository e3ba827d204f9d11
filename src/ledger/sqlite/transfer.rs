//! SQLite: whole tables in and out, for `callvault ledger copy`.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::SqliteRow;

use super::{QueryContext, SqliteLedger, col};
use crate::ledger::{Kind, LedgerError, Table, TableRow, Transfer};
use crate::timefmt::{from_ledger, to_ledger};

fn value_of(row: &SqliteRow, name: &'static str, kind: Kind) -> Result<Value, LedgerError> {
    Ok(match kind {
        Kind::Text => col::<Option<String>>(row, name)?.map_or(Value::Null, Value::String),
        Kind::Int => col::<Option<i64>>(row, name)?.map_or(Value::Null, Value::from),
        Kind::Time => match col::<Option<String>>(row, name)? {
            None => Value::Null,
            Some(s) => Value::String(to_ledger(
                from_ledger(&s).ok_or_else(|| LedgerError::Corrupt(format!("{name} {s:?}")))?,
            )),
        },
    })
}

fn bind_value<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    value: Option<&Value>,
    name: &str,
    kind: Kind,
) -> Result<sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>, LedgerError> {
    let bad = || LedgerError::Corrupt(format!("column {name}: {value:?} is not a {kind:?}"));
    Ok(match (kind, value) {
        (_, None | Some(Value::Null)) => match kind {
            Kind::Int => query.bind(None::<i64>),
            Kind::Text | Kind::Time => query.bind(None::<String>),
        },
        (Kind::Int, Some(v)) => query.bind(v.as_i64().ok_or_else(bad)?),
        (Kind::Text, Some(Value::String(s))) => query.bind(s.clone()),
        (Kind::Time, Some(Value::String(s))) => {
            query.bind(to_ledger(from_ledger(s).ok_or_else(bad)?))
        }
        _ => return Err(bad()),
    })
}

#[async_trait]
impl Transfer for SqliteLedger {
    async fn count_rows(&self, table: Table) -> Result<i64, LedgerError> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
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
        let key = table.key();
        let key_kind = table
            .columns()
            .iter()
            .find(|(c, _)| *c == key)
            .map_or(Kind::Text, |(_, k)| *k);
        let sql = format!(
            "SELECT {} FROM {} WHERE ($1 IS NULL OR {key} > $1) ORDER BY {key} LIMIT $2",
            table.column_list(),
            table.name()
        );
        let query =
            bind_value(sqlx::query(sqlx::AssertSqlSafe(sql)), after, key, key_kind)?.bind(limit);
        let rows = query
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
        let columns = table.columns();
        let placeholders = (1..=columns.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({placeholders})",
            table.name(),
            table.column_list()
        );
        let mut tx = self.pool.begin().await.ctx("starting a table import")?;
        for row in rows {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for (name, kind) in columns {
                query = bind_value(query, row.get(*name), name, *kind)?;
            }
            query.execute(&mut *tx).await.ctx("writing a copied row")?;
        }
        tx.commit().await.ctx("committing a table import")?;
        Ok(())
    }
}
