//! Reads that must not run unbounded: a read-only transaction under a statement timeout.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

/// A read-only transaction whose statements stop after `timeout` (PostgreSQL).
pub async fn read_only(
    db: &DatabaseConnection,
    timeout: Duration,
) -> Result<sea_orm::DatabaseTransaction, DbErr> {
    use sea_orm::TransactionTrait;
    let transaction = db.begin().await?;
    // A number, never text from a request.
    let millis = timeout.as_millis().max(1);
    transaction
        .execute_unprepared(&format!(
            "SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = {millis}"
        ))
        .await?;
    Ok(transaction)
}

/// A transaction to read in under `timeout`: [`read_only`] on PostgreSQL; on SQLite, which has
/// no statement timeout, a plain one.
pub async fn bounded(
    db: &DatabaseConnection,
    timeout: Duration,
) -> Result<sea_orm::DatabaseTransaction, DbErr> {
    use sea_orm::TransactionTrait;
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        read_only(db, timeout).await
    } else {
        db.begin().await
    }
}

/// PostgreSQL's `query_canceled`, which a statement timeout raises.
pub fn is_statement_timeout(error: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx::Error as Sqlx;
    match error {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(e.as_ref(), Sqlx::Database(db) if db.code().as_deref() == Some("57014"))
        }
        _ => false,
    }
}
