//! The only SQL that differs between PostgreSQL and SQLite: the session upsert's merge of the
//! stored row with the incoming (`excluded`) one.

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

pub fn sum(column: &str) -> Expr {
    Expr::cust(format!(r#""sessions"."{column}" + "excluded"."{column}""#))
}

/// Whether a failed write may succeed if tried again unchanged: the database was unreachable,
/// busy, or chose this transaction as a deadlock or serialization victim.
pub fn is_retryable(error: &sea_orm::DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    use sea_orm::{DbErr, RuntimeErr};
    let sqlx = match error {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        DbErr::Conn(_) => return true,
        _ => return false,
    };
    match sqlx.as_ref() {
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::Protocol(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed => true,
        Sqlx::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: serialization failure, deadlock, shutdown, too many connections,
            // read-only replica; SQLite: busy and locked.
            matches!(
                &*code,
                "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300" | "25006" | "5" | "6"
            ) || code.starts_with("08")
        }
        _ => false,
    }
}
