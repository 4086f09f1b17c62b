//! What a minute's trend holds, and the election that makes N workers publish it once
//! (decision 52): in one transaction the publisher takes the trends' advisory lock without
//! waiting (PostgreSQL; SQLite's one writer serialises the same way), moves the mark in
//! `trend_marks` forward to the minute, publishes, and commits. A worker that finds the
//! lock taken, or the mark at or past the minute, publishes nothing.

use chrono::{DateTime, TimeDelta, Utc};
use eye_core::queue::{TopPage, TrendCount};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, Statement, Value,
};
use uuid::Uuid;

use crate::{applications, event_counts};

/// Pages listed per application.
pub const TOP_PAGES: usize = 10;
/// Bytes of a path carried in a trend.
pub const PATH_LIMIT: usize = 1024;
/// The advisory lock's key: `trends` in ASCII.
const LOCK: i64 = 0x7472_656e_6473;
const MARK: &str = "trends";

/// Takes the lock (PostgreSQL, without waiting) and moves the mark to `minute`; false when
/// another worker holds the lock or the minute was already published. Held until `txn` ends.
pub async fn claim(txn: &DatabaseTransaction, minute: DateTime<Utc>) -> Result<bool, DbErr> {
    let backend = txn.get_database_backend();
    if backend == DbBackend::Postgres {
        let locked = txn
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                "SELECT pg_try_advisory_xact_lock($1) AS locked",
                [LOCK.into()],
            ))
            .await?
            .map(|row| row.try_get::<bool>("", "locked"))
            .transpose()?;
        if locked != Some(true) {
            return Ok(false);
        }
    }
    let sql = match backend {
        DbBackend::Postgres => {
            "INSERT INTO trend_marks (name, minute, published_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET minute = excluded.minute, \
             published_at = excluded.published_at WHERE trend_marks.minute < excluded.minute"
        }
        _ => {
            "INSERT INTO trend_marks (name, minute, published_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET minute = excluded.minute, \
             published_at = excluded.published_at WHERE trend_marks.minute < excluded.minute"
        }
    };
    let moved = txn
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [MARK.into(), minute.into(), Utc::now().into()],
        ))
        .await?;
    Ok(moved.rows_affected() == 1)
}

/// The stored events of `minute` per application and type, from the rollups.
pub async fn counts(
    txn: &DatabaseTransaction,
    minute: DateTime<Utc>,
) -> Result<Vec<TrendCount>, DbErr> {
    use event_counts::Column;
    // Every application by id, so each is one probe of the rollups' key.
    let ids: Vec<Uuid> = applications::Entity::find()
        .all(txn)
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect();
    let rows = event_counts::Entity::find()
        .filter(Column::ApplicationId.is_in(ids))
        .filter(Column::Minute.eq(minute))
        .order_by_asc(Column::ApplicationId)
        .order_by_desc(Column::Count)
        .order_by_asc(Column::Category)
        .order_by_asc(Column::Name)
        .all(txn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| TrendCount {
            application_id: row.application_id,
            category: row.category,
            name: row.name,
            count: row.count,
        })
        .collect())
}

/// Each application's [`TOP_PAGES`] most frequent pages among the events of `minute` whose
/// `data` has a string `path` (with `host` when it is a string too).
pub async fn top_pages(
    txn: &DatabaseTransaction,
    minute: DateTime<Utc>,
) -> Result<Vec<TopPage>, DbErr> {
    let backend = txn.get_database_backend();
    let (host, path, is_page, from, to) = match backend {
        DbBackend::Postgres => (
            "CASE WHEN jsonb_typeof(data->'host') = 'string' THEN data->>'host' END",
            "data->>'path'",
            "jsonb_typeof(data->'path') = 'string'",
            "$1",
            "$2",
        ),
        _ => (
            "CASE WHEN json_type(data, '$.host') = 'text' THEN json_extract(data, '$.host') END",
            "json_extract(data, '$.path')",
            "json_type(data, '$.path') = 'text'",
            "?",
            "?",
        ),
    };
    let sql = format!(
        "SELECT application_id, host, path, n FROM ( \
           SELECT application_id, host, path, COUNT(*) AS n, ROW_NUMBER() OVER ( \
             PARTITION BY application_id ORDER BY COUNT(*) DESC, path, host) AS place \
           FROM (SELECT application_id, {host} AS host, {path} AS path FROM events \
                 WHERE timestamp >= {from} AND timestamp < {to} AND {is_page}) AS pages \
           GROUP BY application_id, host, path) AS ranked \
         WHERE place <= {TOP_PAGES} ORDER BY application_id, n DESC, path, host"
    );
    let until = minute + TimeDelta::minutes(1);
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [Value::from(minute), Value::from(until)],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            let mut path: String = row.try_get("", "path")?;
            if path.len() > PATH_LIMIT {
                let mut end = PATH_LIMIT;
                while !path.is_char_boundary(end) {
                    end -= 1;
                }
                path.truncate(end);
            }
            Ok(TopPage {
                application_id: row.try_get("", "application_id")?,
                host: row.try_get("", "host")?,
                path,
                count: row.try_get("", "n")?,
            })
        })
        .collect()
}
