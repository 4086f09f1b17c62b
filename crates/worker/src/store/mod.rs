//! Writing rows: events, session upserts, per-minute counts, rejected events and dead letters
//! in one transaction.
//! PostgreSQL takes each table's rows as arrays in one statement ([`postgres`]); SQLite (`eye
//! dev`) takes multi-row inserts through SeaORM.

mod postgres;

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use eye_entity::{dead_letters, event_counts, events, rejected_events, rollups, sessions};
use sea_orm::sea_query::{Alias, Expr, OnConflict, Query, SimpleExpr};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, Set, TransactionTrait,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::sql;

/// Rows per statement: under the bind-parameter limits of PostgreSQL and SQLite.
const CHUNK: usize = 500;

/// A valid event; `data` is the JSON text as received.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub application_id: Uuid,
    pub id: Uuid,
    pub session_id: Uuid,
    pub category: String,
    pub name: String,
    pub data: String,
    pub timestamp: DateTime<Utc>,
    /// JSON text of the message the event was mapped from, if it came in another format.
    pub source: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// A rejected event: the event as JSON text and why.
#[derive(Debug, Clone)]
pub struct RejectedRow {
    pub application_id: Uuid,
    pub id: Uuid,
    pub category: String,
    pub name: String,
    pub payload: String,
    pub reasons: serde_json::Value,
    pub received_at: DateTime<Utc>,
}

/// A message, or part of one, that no worker can read.
#[derive(Debug, Clone)]
pub struct DeadRow {
    pub body: Vec<u8>,
    pub reason: String,
    /// JSON text of the message's headers.
    pub headers: String,
}

/// One thing to store.
#[derive(Debug, Clone)]
pub enum Row {
    Event(EventRow),
    Rejected(RejectedRow),
    Dead(DeadRow),
}

impl Row {
    /// When the api received the event; none for a dead letter.
    pub fn received_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Row::Event(e) => Some(e.received_at),
            Row::Rejected(r) => Some(r.received_at),
            Row::Dead(_) => None,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    pub stored: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub dead: u64,
    /// `stored`, by application.
    pub stored_by_application: Vec<(Uuid, u64)>,
}

impl std::ops::AddAssign for Written {
    fn add_assign(&mut self, other: Self) {
        self.stored += other.stored;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.dead += other.dead;
        for (application, stored) in other.stored_by_application {
            add_stored(&mut self.stored_by_application, application, stored);
        }
    }
}

/// A batch holds the events of few applications: a list beats a map.
fn add_stored(by_application: &mut Vec<(Uuid, u64)>, application: Uuid, stored: u64) {
    match by_application.iter_mut().find(|(id, _)| *id == application) {
        Some((_, n)) => *n += stored,
        None => by_application.push((application, stored)),
    }
}

/// Stores everything or nothing. Events already stored (same application and id; on
/// PostgreSQL, where the key holds the partition column, and time) are skipped and do not
/// count again towards their session or their minute's count.
pub async fn write(db: &DatabaseConnection, rows: &[Row]) -> Result<Written, DbErr> {
    write_with(db, rows, true).await
}

/// [`write`], adding the inserted events to their minutes' counts only when `counted`
/// (`worker_rollups`).
pub async fn write_with(
    db: &DatabaseConnection,
    rows: &[Row],
    counted: bool,
) -> Result<Written, DbErr> {
    let (mut events, mut rejected, mut dead) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        match row {
            Row::Event(e) => events.push(e),
            Row::Rejected(r) => rejected.push(r),
            Row::Dead(d) => dead.push(d),
        }
    }
    if db.get_database_backend() == DbBackend::Postgres {
        let pool = db.get_postgres_connection_pool();
        return postgres::write(pool, counted, &events, &rejected, &dead).await;
    }
    let txn = db.begin().await?;
    let mut inserted = HashSet::with_capacity(events.len());
    for chunk in events.chunks(CHUNK) {
        inserted.extend(insert_events(&txn, chunk).await?);
    }
    let stored = inserted.len() as u64;
    let mut stored_by_application = Vec::new();
    for (application, _) in &inserted {
        add_stored(&mut stored_by_application, *application, 1);
    }
    let fresh = newly_inserted(&events, inserted);
    upsert_sessions(&txn, &fresh).await?;
    if counted {
        add_counts(&txn, &fresh).await?;
    }
    let mut written_rejected = 0;
    for chunk in rejected.chunks(CHUNK) {
        written_rejected += insert_rejected(&txn, chunk).await?;
    }
    for chunk in dead.chunks(CHUNK) {
        record_dead(&txn, chunk).await?;
    }
    txn.commit().await?;
    Ok(Written {
        stored,
        duplicates: events.len() as u64 - stored,
        rejected: written_rejected,
        dead: dead.len() as u64,
        stored_by_application,
    })
}

/// Inserts events, `data` bound as text (cast to jsonb on PostgreSQL, which keeps numbers
/// exactly); returns the keys actually inserted.
async fn insert_events(
    txn: &impl ConnectionTrait,
    chunk: &[&EventRow],
) -> Result<Vec<(Uuid, Uuid)>, DbErr> {
    use events::Column as C;
    let backend = txn.get_database_backend();
    let stored_at = eye_core::event::now();
    let mut insert = Query::insert();
    insert
        .into_table(events::Entity)
        .columns([
            C::ApplicationId,
            C::Id,
            C::SessionId,
            C::Category,
            C::Name,
            C::Data,
            C::Timestamp,
            C::Source,
            C::ReceivedAt,
            C::StoredAt,
        ])
        .on_conflict(OnConflict::new().do_nothing().to_owned())
        .returning(Query::returning().columns([C::ApplicationId, C::Id]));
    for event in chunk {
        insert
            .values([
                event.application_id.into(),
                event.id.into(),
                event.session_id.into(),
                event.category.clone().into(),
                event.name.clone().into(),
                json_text(backend, Some(event.data.as_str())),
                event.timestamp.into(),
                json_text(backend, event.source.as_deref()),
                event.received_at.into(),
                stored_at.into(),
            ])
            .map_err(|e| DbErr::Custom(e.to_string()))?;
    }
    let rows = txn.query_all(&insert).await?;
    rows.iter()
        .map(|row| Ok((row.try_get("", "application_id")?, row.try_get("", "id")?)))
        .collect()
}

/// JSON text, or SQL null, as a value of the column's JSON type.
fn json_text(backend: DbBackend, text: Option<&str>) -> SimpleExpr {
    match backend {
        DbBackend::Postgres => {
            sea_orm::sea_query::ExprTrait::cast_as(Expr::val(text), Alias::new("jsonb"))
        }
        _ => Expr::val(text),
    }
}

async fn insert_rejected(txn: &impl ConnectionTrait, chunk: &[&RejectedRow]) -> Result<u64, DbErr> {
    let stored_at = eye_core::event::now();
    let models = chunk.iter().map(|r| rejected_events::ActiveModel {
        application_id: Set(r.application_id),
        id: Set(r.id),
        category: Set(r.category.clone()),
        name: Set(r.name.clone()),
        payload: Set(r.payload.clone()),
        reasons: Set(r.reasons.clone()),
        received_at: Set(r.received_at),
        rejected_at: Set(stored_at),
    });
    let result = rejected_events::Entity::insert_many(models)
        .on_conflict_do_nothing()
        .exec_without_returning(txn)
        .await?;
    Ok(match result {
        sea_orm::TryInsertResult::Inserted(n) => n,
        _ => 0,
    })
}

/// Records dead letters; the same body dead again counts on its row.
pub async fn record_dead(txn: &impl ConnectionTrait, chunk: &[&DeadRow]) -> Result<(), DbErr> {
    use dead_letters::Column as C;
    let now = eye_core::event::now();
    let models: Vec<_> = distinct_dead(chunk)
        .map(|(digest, d)| dead_letters::ActiveModel {
            id: Set(Uuid::now_v7()),
            digest: Set(digest),
            body: Set(d.body.clone()),
            reason: Set(d.reason.clone()),
            headers: Set(d.headers.clone()),
            first_dead_at: Set(now),
            last_dead_at: Set(now),
            count: Set(1),
        })
        .collect();
    if models.is_empty() {
        return Ok(());
    }
    let on_conflict = OnConflict::column(C::Digest)
        .update_columns([C::Reason, C::Headers, C::LastDeadAt])
        .value(C::Count, sql::sum_with("dead_letters", "count"))
        .to_owned();
    dead_letters::Entity::insert_many(models)
        .on_conflict(on_conflict)
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// Each distinct body once, with its digest: an upsert may touch a row only once a statement.
fn distinct_dead<'a>(rows: &[&'a DeadRow]) -> impl Iterator<Item = (String, &'a DeadRow)> {
    let mut seen = HashSet::new();
    rows.iter()
        .map(|d| (hex(&Sha256::digest(&d.body)), *d))
        .filter(move |(digest, _)| seen.insert(digest.clone()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct SessionDelta {
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    count: i64,
}

/// The events of `events` that were inserted, each once.
fn newly_inserted<'a>(
    events: &[&'a EventRow],
    mut inserted: HashSet<(Uuid, Uuid)>,
) -> Vec<&'a EventRow> {
    // `remove`, not `contains`: the same id twice in one batch was inserted once and counts
    // once.
    events
        .iter()
        .filter(|e| inserted.remove(&(e.application_id, e.id)))
        .copied()
        .collect()
}

/// Adds the inserted events to their minutes' counts, in key order as sessions are.
async fn add_counts(txn: &impl ConnectionTrait, fresh: &[&EventRow]) -> Result<(), DbErr> {
    let mut counts: BTreeMap<(Uuid, DateTime<Utc>, &str, &str), i64> = BTreeMap::new();
    for event in fresh {
        let minute = rollups::minute_of(event.timestamp);
        *counts
            .entry((event.application_id, minute, &event.category, &event.name))
            .or_default() += 1;
    }
    let models: Vec<_> = counts
        .into_iter()
        .map(
            |((application_id, minute, category, name), count)| event_counts::ActiveModel {
                application_id: Set(application_id),
                minute: Set(minute),
                category: Set(category.to_owned()),
                name: Set(name.to_owned()),
                count: Set(count),
            },
        )
        .collect();
    for chunk in models.chunks(CHUNK) {
        rollups::add(txn, chunk.to_vec()).await?;
    }
    Ok(())
}

/// One atomic upsert per session. Sessions are written in key order so that concurrent
/// workers lock rows in the same order and cannot deadlock.
async fn upsert_sessions(txn: &impl ConnectionTrait, fresh: &[&EventRow]) -> Result<(), DbErr> {
    let mut deltas: BTreeMap<(Uuid, Uuid), SessionDelta> = BTreeMap::new();
    for event in fresh {
        let at = event.timestamp;
        deltas
            .entry((event.application_id, event.session_id))
            .and_modify(|d| {
                d.first_seen = d.first_seen.min(at);
                d.last_seen = d.last_seen.max(at);
                d.count += 1;
            })
            .or_insert(SessionDelta {
                first_seen: at,
                last_seen: at,
                count: 1,
            });
    }
    let backend = txn.get_database_backend();
    let models: Vec<sessions::ActiveModel> = deltas
        .into_iter()
        .map(|((application_id, id), d)| sessions::ActiveModel {
            application_id: Set(application_id),
            id: Set(id),
            first_seen: Set(d.first_seen),
            last_seen: Set(d.last_seen),
            event_count: Set(d.count),
        })
        .collect();
    for chunk in models.chunks(CHUNK) {
        let on_conflict =
            OnConflict::columns([sessions::Column::ApplicationId, sessions::Column::Id])
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
