//! SQLite as `eye dev` and the tests use it: the same settings on every pooled connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sea_orm::{ConnectionTrait, DatabaseTransaction, Statement, TransactionTrait};

async fn pragma(connection: &DatabaseTransaction, name: &str) -> String {
    let row = connection
        .query_one_raw(Statement::from_string(
            connection.get_database_backend(),
            format!("PRAGMA {name}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0)
        .map(|n| n.to_string())
        .or_else(|_| row.try_get_by_index::<String>(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pooled_connection_has_the_same_pragmas() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("eye.db").display());
    let db = eye_cli::stack::connect(&url).await.unwrap();
    // Open transactions each hold a connection of their own: four different connections.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(db.begin().await.unwrap());
    }
    for connection in &held {
        assert_eq!(pragma(connection, "journal_mode").await, "wal");
        assert_eq!(pragma(connection, "synchronous").await, "1", "NORMAL");
        assert_eq!(pragma(connection, "foreign_keys").await, "1");
        assert_eq!(pragma(connection, "busy_timeout").await, "5000");
    }
}
