//! PostgreSQL's way of writing a batch: each table's rows travel as one array per column and
//! are inserted with `INSERT … SELECT FROM unnest(…)`, so a batch of any size is one prepared
//! statement a table (planned once, no bind limit, no per-row SQL text). The events' sessions
//! are upserted in the same statement, from the rows it actually inserted.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::sqlx::{self, PgPool, Postgres, Transaction};
use sea_orm::{DbErr, RuntimeErr};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{DeadRow, EventRow, RejectedRow, Written, add_stored, hex};

/// Inserts the events a redelivery has not already stored, and adds each inserted one to its
/// session. Sessions are locked in key order, so concurrent workers cannot deadlock on them.
const EVENTS: &str = r#"
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
    RETURNING application_id, session_id, "timestamp"
), sessions_written AS (
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
"#;

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
    events: &[&EventRow],
    rejected: &[&RejectedRow],
    dead: &[&DeadRow],
) -> Result<Written, DbErr> {
    let mut txn = pool.begin().await.map_err(db_err)?;
    let now = eye_core::event::now();
    let mut written = Written::default();
    if !events.is_empty() {
        for (application, stored) in insert_events(&mut txn, events, now).await? {
            written.stored += stored;
            add_stored(&mut written.stored_by_application, application, stored);
        }
        written.duplicates = events.len() as u64 - written.stored;
    }
    if !rejected.is_empty() {
        written.rejected = insert_rejected(&mut txn, rejected, now).await?;
    }
    let mut seen = HashSet::new();
    for d in dead {
        let digest = hex(&Sha256::digest(&d.body));
        if !seen.insert(digest.clone()) {
            continue;
        }
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
    events: &[&EventRow],
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, u64)>, DbErr> {
    let column = |f: fn(&EventRow) -> Uuid| events.iter().map(|e| f(e)).collect::<Vec<_>>();
    let text =
        |f: for<'a> fn(&'a EventRow) -> &'a str| events.iter().map(|e| f(e)).collect::<Vec<_>>();
    let stored: Vec<(Uuid, i64)> = sqlx::query_as(EVENTS)
        .bind(column(|e| e.application_id))
        .bind(column(|e| e.id))
        .bind(column(|e| e.session_id))
        .bind(text(|e| &e.category))
        .bind(text(|e| &e.name))
        .bind(text(|e| &e.data))
        .bind(events.iter().map(|e| e.timestamp).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.source.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.received_at).collect::<Vec<_>>())
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
    let text = |f: for<'a> fn(&'a RejectedRow) -> &'a str| {
        rejected.iter().map(|r| f(r)).collect::<Vec<_>>()
    };
    let done = sqlx::query(REJECTED)
        .bind(
            rejected
                .iter()
                .map(|r| r.application_id)
                .collect::<Vec<_>>(),
        )
        .bind(rejected.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(text(|r| &r.category))
        .bind(text(|r| &r.name))
        .bind(text(|r| &r.payload))
        .bind(
            rejected
                .iter()
                .map(|r| r.reasons.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(rejected.iter().map(|r| r.received_at).collect::<Vec<_>>())
        .bind(now)
        .execute(&mut **txn)
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected())
}

/// As SeaORM reports it, so that [`crate::sql::is_retryable`] judges both paths alike.
fn db_err(error: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(std::sync::Arc::new(error)))
}
