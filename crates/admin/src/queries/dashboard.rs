//! The dashboard's numbers. Rates count `received_at`, when The Eye got the event, not the
//! time the application put in it. The SQL differs by backend only in its date functions.

use chrono::{DateTime, Duration, DurationRound, Utc};
use eye_entity::{applications, events, rejected_events, sessions};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, EntityTrait, PaginatorTrait, Statement, Value};

#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub events: u64,
    pub sessions: u64,
    pub rejected: u64,
    /// Messages no worker could read, waiting for an operator.
    pub dead_letters: u64,
    pub applications: u64,
}

/// A time bucket (`label` in UTC) and how many events it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub label: String,
    pub count: i64,
}

#[derive(Debug, Clone)]
pub struct TypeCount {
    pub category: String,
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Clone)]
pub struct ReasonCount {
    pub code: String,
    pub count: i64,
}

pub async fn totals(db: &impl ConnectionTrait) -> Result<Totals, DbErr> {
    Ok(Totals {
        events: events::Entity::find().count(db).await?,
        sessions: sessions::Entity::find().count(db).await?,
        rejected: rejected_events::Entity::find().count(db).await?,
        dead_letters: eye_entity::dead::count(db).await?,
        applications: applications::Entity::find().count(db).await?,
    })
}

#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Minute,
    Hour,
}

impl Unit {
    fn step(self) -> Duration {
        match self {
            Unit::Minute => Duration::minutes(1),
            Unit::Hour => Duration::hours(1),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Unit::Minute => "%Y-%m-%dT%H:%M",
            Unit::Hour => "%Y-%m-%dT%H",
        }
    }

    fn sql(self, backend: DbBackend) -> &'static str {
        match (backend, self) {
            (DbBackend::Postgres, Unit::Minute) => {
                "SELECT to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI') AS bucket, \
                 COUNT(*) AS n FROM events WHERE received_at >= $1 GROUP BY 1"
            }
            (DbBackend::Postgres, Unit::Hour) => {
                "SELECT to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24') AS bucket, \
                 COUNT(*) AS n FROM events WHERE received_at >= $1 GROUP BY 1"
            }
            (_, Unit::Minute) => {
                "SELECT strftime('%Y-%m-%dT%H:%M', received_at) AS bucket, COUNT(*) AS n \
                 FROM events WHERE received_at >= ? GROUP BY 1"
            }
            (_, Unit::Hour) => {
                "SELECT strftime('%Y-%m-%dT%H', received_at) AS bucket, COUNT(*) AS n \
                 FROM events WHERE received_at >= ? GROUP BY 1"
            }
        }
    }
}

/// Events received in each of the last `buckets` units up to `now`, oldest first, empty
/// buckets included.
#[tracing::instrument(skip(db))]
pub async fn received_per(
    db: &impl ConnectionTrait,
    unit: Unit,
    buckets: i32,
    now: DateTime<Utc>,
) -> Result<Vec<Bucket>, DbErr> {
    let current = now.duration_trunc(unit.step()).unwrap_or(now);
    let since = current - unit.step() * (buckets - 1);
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            unit.sql(backend),
            [Value::from(since)],
        ))
        .await?;
    let mut counts = std::collections::HashMap::new();
    for row in rows {
        let bucket: Option<String> = row.try_get("", "bucket")?;
        counts.insert(bucket.unwrap_or_default(), row.try_get::<i64>("", "n")?);
    }
    Ok((0..buckets)
        .map(|i| {
            let label = (since + unit.step() * i).format(unit.label()).to_string();
            let count = counts.get(&label).copied().unwrap_or(0);
            Bucket { label, count }
        })
        .collect())
}

fn placeholders(backend: DbBackend, sql: &str) -> String {
    match backend {
        DbBackend::Postgres => sql.replacen('?', "$1", 1),
        _ => sql.to_owned(),
    }
}

/// The ten most frequent (category, name) pairs received since `since`.
pub async fn top_types(
    db: &impl ConnectionTrait,
    since: DateTime<Utc>,
) -> Result<Vec<TypeCount>, DbErr> {
    let backend = db.get_database_backend();
    let sql = placeholders(
        backend,
        "SELECT category, name, COUNT(*) AS n FROM events WHERE received_at >= ? \
         GROUP BY category, name ORDER BY n DESC, category, name LIMIT 10",
    );
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [Value::from(since)],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(TypeCount {
                category: row.try_get("", "category")?,
                name: row.try_get("", "name")?,
                count: row.try_get("", "n")?,
            })
        })
        .collect()
}

/// How many rejected events carried each reason code since `since` (an event with two
/// reasons counts for both).
pub async fn reasons(
    db: &impl ConnectionTrait,
    since: DateTime<Utc>,
) -> Result<Vec<ReasonCount>, DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT r->>'code' AS code, COUNT(*) AS n FROM rejected_events, \
             jsonb_array_elements(reasons) AS r WHERE rejected_at >= $1 \
             GROUP BY 1 ORDER BY n DESC, code LIMIT 20"
        }
        _ => {
            "SELECT json_extract(r.value, '$.code') AS code, COUNT(*) AS n FROM rejected_events, \
             json_each(rejected_events.reasons) AS r WHERE rejected_at >= ? \
             GROUP BY 1 ORDER BY n DESC, code LIMIT 20"
        }
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [Value::from(since)],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            let code: Option<String> = row.try_get("", "code")?;
            Ok(ReasonCount {
                code: code.unwrap_or_else(|| "unknown".into()),
                count: row.try_get("", "n")?,
            })
        })
        .collect()
}

/// Events received since `since`, stored and rejected.
pub async fn received_since(
    db: &impl ConnectionTrait,
    since: DateTime<Utc>,
) -> Result<(u64, u64), DbErr> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let stored = events::Entity::find()
        .filter(events::Column::ReceivedAt.gte(since))
        .count(db)
        .await?;
    let rejected = rejected_events::Entity::find()
        .filter(rejected_events::Column::ReceivedAt.gte(since))
        .count(db)
        .await?;
    Ok((stored, rejected))
}
