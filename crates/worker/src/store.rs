//! Writing a batch: events, session upserts and rejected events in one transaction.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use eye_entity::{events, rejected_events, sessions};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, TransactionTrait, TryInsertResult,
};
use uuid::Uuid;

use crate::sql;

/// Rows per statement: under the bind-parameter limits of PostgreSQL and SQLite.
const CHUNK: usize = 500;

/// Rows ready to write, built from one or more envelopes.
#[derive(Default)]
pub struct Rows {
    pub events: Vec<events::ActiveModel>,
    pub rejected: Vec<rejected_events::ActiveModel>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub stored: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

/// Stores everything or nothing. Events already stored (same id) are skipped and do not
/// count again towards their session.
pub async fn write(db: &DatabaseConnection, rows: &Rows) -> Result<Written, DbErr> {
    let txn = db.begin().await?;
    let mut inserted = HashSet::with_capacity(rows.events.len());
    for chunk in rows.events.chunks(CHUNK) {
        let result = events::Entity::insert_many(chunk.iter().cloned())
            .on_conflict_do_nothing()
            .exec_with_returning_keys(&txn)
            .await?;
        if let TryInsertResult::Inserted(ids) = result {
            inserted.extend(ids);
        }
    }
    let stored = inserted.len() as u64;
    upsert_sessions(&txn, &rows.events, inserted).await?;
    let mut rejected = 0;
    for chunk in rows.rejected.chunks(CHUNK) {
        let result = rejected_events::Entity::insert_many(chunk.iter().cloned())
            .on_conflict_do_nothing()
            .exec_with_returning_keys(&txn)
            .await?;
        if let TryInsertResult::Inserted(ids) = result {
            rejected += ids.len() as u64;
        }
    }
    txn.commit().await?;
    Ok(Written {
        stored,
        duplicates: rows.events.len() as u64 - stored,
        rejected,
    })
}

struct SessionDelta {
    application_id: Uuid,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    count: i64,
}

/// One atomic upsert per session. Sessions are written in id order so that concurrent
/// workers lock rows in the same order and cannot deadlock.
async fn upsert_sessions(
    txn: &impl ConnectionTrait,
    events: &[events::ActiveModel],
    mut inserted: HashSet<Uuid>,
) -> Result<(), DbErr> {
    let mut deltas: BTreeMap<Uuid, SessionDelta> = BTreeMap::new();
    for event in events {
        let (Some(id), Some(session), Some(app), Some(at)) = (
            event.id.try_as_ref(),
            event.session_id.try_as_ref(),
            event.application_id.try_as_ref(),
            event.timestamp.try_as_ref(),
        ) else {
            continue;
        };
        // `remove`, not `contains`: the same id twice in one batch was inserted once and
        // counts once.
        if !inserted.remove(id) {
            continue;
        }
        deltas
            .entry(*session)
            .and_modify(|d| {
                d.first_seen = d.first_seen.min(*at);
                d.last_seen = d.last_seen.max(*at);
                d.count += 1;
            })
            .or_insert(SessionDelta {
                application_id: *app,
                first_seen: *at,
                last_seen: *at,
                count: 1,
            });
    }
    let backend = txn.get_database_backend();
    let models: Vec<sessions::ActiveModel> = deltas
        .into_iter()
        .map(|(id, d)| sessions::ActiveModel {
            id: sea_orm::Set(id),
            application_id: sea_orm::Set(d.application_id),
            first_seen: sea_orm::Set(d.first_seen),
            last_seen: sea_orm::Set(d.last_seen),
            event_count: sea_orm::Set(d.count),
        })
        .collect();
    for chunk in models.chunks(CHUNK) {
        let on_conflict = OnConflict::column(sessions::Column::Id)
            .value(
                sessions::Column::FirstSeen,
                sql::earliest(backend, "first_seen"),
            )
            .value(
                sessions::Column::LastSeen,
                sql::latest(backend, "last_seen"),
            )
            .value(sessions::Column::EventCount, sql::sum("event_count"))
            .to_owned();
        sessions::Entity::insert_many(chunk.iter().cloned())
            .on_conflict(on_conflict)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}
