//! How a PostgreSQL failure reaches the ledger's callers, written down in one place: every
//! `sqlx::Error` becomes the [`LedgerError`] that says what the caller must do, and the
//! transactions that lost a race are run again here before anyone sees it.
//!
//! - Lost to another transaction: SQLSTATE 40001 (serialization failure), 40P01 (deadlock
//!   detected), 55P03 (lock not available: `lock_timeout`, which is the busy timeout, ran
//!   out) → [`LedgerError::Conflict`]; the same call may be made again at once.
//! - The server cannot be reached or cannot serve us now: I/O, TLS and protocol errors, a
//!   pool that timed out or is closed, a crashed connection worker, SQLSTATE class 08
//!   (connection exception), 57P01/57P02/57P03 (admin or crash shutdown, cannot connect
//!   now), 53300 (too many connections) and 25006 (read-only transaction: a standby after a
//!   failover) → [`LedgerError::Unavailable`]; a pass stops claiming and its leases run out.
//! - A value that does not decode as its column's type → [`LedgerError::Corrupt`].
//! - Anything else (a constraint refused, a bug in our SQL) → [`LedgerError::Query`]:
//!   retrying will not fix it.

use crate::ledger::LedgerError;

/// Maps a sqlx result into the ledger's errors, naming what was being done.
pub(super) trait Ctx<T> {
    fn ctx(self, context: &'static str) -> Result<T, LedgerError>;
}

impl<T> Ctx<T> for Result<T, sqlx::Error> {
    fn ctx(self, context: &'static str) -> Result<T, LedgerError> {
        self.map_err(|source| classify(context, source))
    }
}

/// What a failure asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Conflict,
    Unavailable,
    Corrupt,
    Query,
}

pub(super) fn classify(context: &'static str, source: sqlx::Error) -> LedgerError {
    match class_of(&source) {
        Class::Conflict => LedgerError::Conflict { context, source },
        Class::Unavailable => LedgerError::Unavailable { context, source },
        Class::Corrupt => LedgerError::Corrupt(format!("{source} (while {context})")),
        Class::Query => LedgerError::Query { context, source },
    }
}

fn class_of(err: &sqlx::Error) -> Class {
    use sqlx::Error as E;
    match err {
        E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed => Class::Unavailable,
        E::Database(db) => db
            .code()
            .map_or(Class::Query, |code| class_of_sqlstate(&code)),
        E::ColumnDecode { .. } | E::Decode(_) => Class::Corrupt,
        _ => Class::Query,
    }
}

fn class_of_sqlstate(code: &str) -> Class {
    match code {
        "40001" | "40P01" | "55P03" => Class::Conflict,
        "57P01" | "57P02" | "57P03" | "53300" | "25006" => Class::Unavailable,
        _ if code.starts_with("08") => Class::Unavailable,
        _ => Class::Query,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_what_the_caller_must_do() {
        for code in ["40001", "40P01", "55P03"] {
            assert_eq!(class_of_sqlstate(code), Class::Conflict, "{code}");
        }
        for code in [
            "08000", "08006", "08P01", "57P01", "57P02", "57P03", "53300", "25006",
        ] {
            assert_eq!(class_of_sqlstate(code), Class::Unavailable, "{code}");
        }
        for code in ["23505", "23503", "42P01", "22P02", "57014"] {
            assert_eq!(class_of_sqlstate(code), Class::Query, "{code}");
        }
    }

    #[test]
    fn connection_failures_are_unavailable_and_decoding_is_corrupt() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(classify("testing", io).is_unavailable());
        assert!(classify("testing", sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(classify("testing", sqlx::Error::PoolClosed).is_unavailable());
        let decode = sqlx::Error::Decode("not a bigint".into());
        assert!(matches!(
            classify("testing", decode),
            LedgerError::Corrupt(_)
        ));
        assert!(matches!(
            classify("testing", sqlx::Error::RowNotFound),
            LedgerError::Query { .. }
        ));
    }
}
