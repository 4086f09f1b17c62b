//! PostgreSQL's way of writing a batch: each table's rows travel as one array per column and
//! are inserted with `INSERT … SELECT FROM unnest(…)`, so a batch of any size is one prepared
//! statement a table (planned once, no bind limit, no per-row SQL text). The events' sessions
//! and per-minute counts are upserted in the same statement, from the rows it actually
//! inserted.

use chrono::{DateTime, Utc};
use sea_orm::sqlx::{self, PgPool, Postgres, Transaction};
use sea_orm::{DbErr, RuntimeErr};
use uuid::Uuid;

use super::{DeadRow, EventRow, RejectedRow, Written, add_stored, distinct_dead};

/// The events' statement up to their counts: the rows given, and those inserted.
macro_rules! inserting {
    () => {
        r#"
WITH incoming AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                         $6::text[], $7::timestamptz[], $8::text[], $9::timestamptz[])
        AS t(application_id, id, session_id, category, name, data, "timestamp", source, received_at)
), inserted AS (
    INSERT INTO events (application_id, id, session_id, category, name, data, "timestamp",
                        source, received_at, stored_at)
    SELECT application_id, id, session_id, category, name, data::jsonb, "timestamp",
           source::jsonb, received_at, $10
    FROM incoming
    ON CONFLICT DO NOTHING
    RETURNING application_id, session_id, category, name, "timestamp"
)"#
    };
}

/// The inserted events added to their minutes' counts (left out with `worker_rollups` off).
macro_rules! counting {
    () => {
        r#", counted AS (
    INSERT INTO event_counts (application_id, minute, category, name, count)
    SELECT application_id, date_trunc('minute', "timestamp", 'UTC'), category, name, count(*)
    FROM inserted
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (application_id, minute, category, name) DO UPDATE SET
        count = event_counts.count + excluded.count
)"#
    };
}

/// The inserted events added to their sessions, and what was stored per application.
macro_rules! sessions {
    () => {
        r#", sessions_written AS (
    INSERT INTO sessions (application_id, id, first_seen, last_seen, event_count)
    SELECT application_id, session_id, min("timestamp"), max("timestamp"), count(*)
    FROM inserted
    GROUP BY application_id, session_id
    ORDER BY application_id, session_id
    ON CONFLICT (application_id, id) DO UPDATE SET
        first_seen = LEAST(sessions.first_seen, excluded.first_seen),
        last_seen = GREATEST(sessions.last_seen, excluded.last_seen),
        event_count = sessions.event_count + excluded.event_count
)
SELECT application_id, count(*) AS stored FROM inserted GROUP BY application_id
"#
    };
}

/// Inserts the events not already stored, and adds each inserted one to its session and to
/// its minute's count. Sessions and counts are locked in key order, so concurrent workers
/// cannot deadlock on them.
///
/// The key holds the partition column (`timestamp`): an event delivered again is the same
/// envelope, so its time is the same and the key catches it, in the batch or after it.
const EVENTS: &str = concat!(inserting!(), counting!(), sessions!());

/// [`EVENTS`] without the counts (`worker_rollups` off).
const UNCOUNTED: &str = concat!(inserting!(), sessions!());

/// Keyed as [`EVENTS`] is, by `received_at`, the partition column of `rejected_events`.
const REJECTED: &str = r#"
INSERT INTO rejected_events (application_id, id, category, name, payload, reasons,
                             received_at, rejected_at)
SELECT application_id, id, category, name, payload, reasons::jsonb, received_at, $8
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[])
    AS t(application_id, id, category, name, payload, reasons, received_at)
ON CONFLICT DO NOTHING
"#;

/// The same body dead again counts on its row.
const DEAD: &str = r#"
INSERT INTO dead_letters (id, digest, body, reason, headers, first_dead_at, last_dead_at, count)
VALUES ($1, $2, $3, $4, $5, $6, $6, 1)
ON CONFLICT (digest) DO UPDATE SET
    reason = excluded.reason,
    headers = excluded.headers,
    last_dead_at = excluded.last_dead_at,
    count = dead_letters.count + 1
"#;

/// Stores everything or nothing, as [`super::write`] does.
pub(super) async fn write(
    pool: &PgPool,
    counted: bool,
    events: &[&EventRow],
    rejected: &[&RejectedRow],
    dead: &[&DeadRow],
) -> Result<Written, DbErr> {
    let mut txn = pool.begin().await.map_err(db_err)?;
    let now = eye_core::event::now();
    let mut written = Written::default();
    if !events.is_empty() {
        for (application, stored) in insert_events(&mut txn, counted, events, now).await? {
            written.stored += stored;
            add_stored(&mut written.stored_by_application, application, stored);
        }
        written.duplicates = events.len() as u64 - written.stored;
    }
    if !rejected.is_empty() {
        written.rejected = insert_rejected(&mut txn, rejected, now).await?;
    }
    for (digest, d) in distinct_dead(dead) {
        sqlx::query(DEAD)
            .bind(Uuid::now_v7())
            .bind(digest)
            .bind(d.body.as_slice())
            .bind(d.reason.as_str())
            .bind(d.headers.as_str())
            .bind(now)
            .execute(&mut *txn)
            .await
            .map_err(db_err)?;
    }
    written.dead = dead.len() as u64;
    txn.commit().await.map_err(db_err)?;
    Ok(written)
}

async fn insert_events(
    txn: &mut Transaction<'_, Postgres>,
    counted: bool,
    events: &[&EventRow],
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, u64)>, DbErr> {
    let sql = if counted { EVENTS } else { UNCOUNTED };
    let stored: Vec<(Uuid, i64)> = sqlx::query_as(sql)
        .bind(column(events, |e| e.application_id))
        .bind(column(events, |e| e.id))
        .bind(column(events, |e| e.session_id))
        .bind(column(events, |e| e.category.as_str()))
        .bind(column(events, |e| e.name.as_str()))
        .bind(column(events, |e| e.data.as_str()))
        .bind(column(events, |e| e.timestamp))
        .bind(column(events, |e| e.source.as_deref()))
        .bind(column(events, |e| e.received_at))
        .bind(now)
        .fetch_all(&mut **txn)
        .await
        .map_err(db_err)?;
    Ok(stored
        .into_iter()
        .map(|(application, n)| (application, n as u64))
        .collect())
}

async fn insert_rejected(
    txn: &mut Transaction<'_, Postgres>,
    rejected: &[&RejectedRow],
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let done = sqlx::query(REJECTED)
        .bind(column(rejected, |r| r.application_id))
        .bind(column(rejected, |r| r.id))
        .bind(column(rejected, |r| r.category.as_str()))
        .bind(column(rejected, |r| r.name.as_str()))
        .bind(column(rejected, |r| r.payload.as_str()))
        .bind(column(rejected, |r| r.reasons.to_string()))
        .bind(column(rejected, |r| r.received_at))
        .bind(now)
        .execute(&mut **txn)
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected())
}

/// One column of `rows`: the array an `unnest` parameter takes.
fn column<'a, R, T>(rows: &[&'a R], value: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(|row| value(row)).collect()
}

/// As SeaORM reports it, so that [`crate::sql::is_retryable`] judges both paths alike.
fn db_err(error: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(std::sync::Arc::new(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uncounted_statement_is_the_counted_one_without_its_counting() {
        assert!(EVENTS.contains("INSERT INTO event_counts"));
        assert_eq!(EVENTS.replacen(counting!(), "", 1), UNCOUNTED);
    }
}
