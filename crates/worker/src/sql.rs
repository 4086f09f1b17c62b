//! The only SQL that differs between PostgreSQL and SQLite: the session upsert's merge of the
//! stored row with the incoming (`excluded`) one, and which errors are permanent.

use sea_orm::DbBackend;
use sea_orm::sea_query::Expr;

fn merge(function: &str, column: &str) -> Expr {
    Expr::cust(format!(
        r#"{function}("sessions"."{column}", "excluded"."{column}")"#
    ))
}

/// The earlier of the stored and incoming values.
pub fn earliest(backend: DbBackend, column: &str) -> Expr {
    match backend {
        DbBackend::Sqlite => merge("MIN", column),
        _ => merge("LEAST", column),
    }
}

/// The later of the stored and incoming values.
pub fn latest(backend: DbBackend, column: &str) -> Expr {
    match backend {
        DbBackend::Sqlite => merge("MAX", column),
        _ => merge("GREATEST", column),
    }
}

/// The session's stored count plus the incoming one.
pub fn sum(column: &str) -> Expr {
    sum_with("sessions", column)
}

/// `table.column` plus the incoming row's value.
pub fn sum_with(table: &str, column: &str) -> Expr {
    Expr::cust(format!(r#""{table}"."{column}" + "excluded"."{column}""#))
}

/// Whether a failed write may succeed if tried again unchanged. Only errors about the data
/// itself are permanent (a value the database refuses); everything else — unreachable, busy,
/// full, read-only, a deadlock or serialization victim, a timeout — is retried with the batch
/// held, because giving up would dead-letter events that were already accepted.
pub fn is_retryable(error: &sea_orm::DbErr) -> bool {
    !is_permanent(error)
}

fn is_permanent(error: &sea_orm::DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    use sea_orm::{DbErr, RuntimeErr};
    let sqlx = match error {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        DbErr::Json(_) | DbErr::Type(_) | DbErr::TryIntoErr { .. } => return true,
        _ => return false,
    };
    match sqlx.as_ref() {
        Sqlx::Encode(_) => true,
        Sqlx::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.parse::<u32>() {
                // SQLite's extended codes carry the primary code in the low byte: too big,
                // constraint, mismatch, range.
                Ok(sqlite) if code.len() <= 4 => matches!(sqlite & 0xff, 18 | 19 | 20 | 25),
                // PostgreSQL: data exceptions (22) and integrity violations (23).
                _ => code.starts_with("22") || code.starts_with("23"),
            }
        }
        _ => false,
    }
}
