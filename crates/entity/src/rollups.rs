//! Per-minute counts of stored events (`event_counts`): the workers add to them in the
//! transaction that stores the events (only the events it inserted), the stats api sums them
//! into minutes, hours or days. [`rebuild`] recomputes a window from `events`, for events
//! stored before the rollups existed or removed by retention.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, Set, Statement,
    TransactionTrait,
};
use uuid::Uuid;

use crate::event_counts;

/// The span one rebuild transaction covers: workers wait for it, so it stays short.
pub const REBUILD_STEP: TimeDelta = TimeDelta::days(1);

/// Rows a SQLite statement writes, under its bind-parameter limit.
const CHUNK: usize = 500;

/// The start of the minute `at` falls in.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

/// The first whole minute at or after `at`.
pub fn minute_from(at: DateTime<Utc>) -> DateTime<Utc> {
    let start = minute_of(at);
    if start == at {
        at
    } else {
        start + TimeDelta::minutes(1)
    }
}

/// Recomputes the counts of the minutes from `from`'s to the one holding `to` (whole minutes
/// covering the window) from the stored events, a day at a time; returns the events counted.
/// Each day's counts are replaced in one transaction, while workers go on storing: on
/// PostgreSQL the table is locked against their writes for that transaction, so an event is
/// counted either by the rebuild or by its worker, never by both or neither.
pub async fn rebuild(
    db: &DatabaseConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let (mut start, end) = (minute_of(from), minute_from(to));
    let mut counted = 0;
    while start < end {
        let stop = (start + REBUILD_STEP).min(end);
        counted += rebuild_span(db, start, stop).await?;
        start = stop;
    }
    Ok(counted)
}

async fn rebuild_span(
    db: &DatabaseConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let txn = db.begin().await?;
    if backend == DbBackend::Postgres {
        // Conflicts with the workers' inserts (and with another rebuild), not with readers.
        txn.execute_unprepared("LOCK TABLE event_counts IN SHARE ROW EXCLUSIVE MODE")
            .await?;
    }
    forget(&txn, Some(from), to).await?;
    let counted = match backend {
        DbBackend::Postgres => {
            let row = txn
                .query_one_raw(Statement::from_sql_and_values(
                    backend,
                    r#"WITH counted AS (
                           INSERT INTO event_counts (application_id, minute, category, name, count)
                           SELECT application_id, date_trunc('minute', "timestamp", 'UTC'),
                                  category, name, count(*)
                           FROM events WHERE "timestamp" >= $1 AND "timestamp" < $2
                           GROUP BY 1, 2, 3, 4
                           RETURNING count
                       )
                       SELECT coalesce(sum(count), 0)::bigint AS counted FROM counted"#,
                    [from.into(), to.into()],
                ))
                .await?;
            row.map(|row| row.try_get::<i64>("", "counted"))
                .transpose()?
                .unwrap_or(0)
        }
        _ => rebuild_sqlite(&txn, from, to).await?,
    };
    txn.commit().await?;
    Ok(u64::try_from(counted).unwrap_or(0))
}

/// SQLite keeps times as RFC 3339 text: a minute is the text's first 16 characters.
async fn rebuild_sqlite(
    txn: &impl ConnectionTrait,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<i64, DbErr> {
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            r#"SELECT application_id, substr("timestamp", 1, 16) AS minute, category, name,
                      count(*) AS count
               FROM events WHERE "timestamp" >= ? AND "timestamp" < ?
               GROUP BY 1, 2, 3, 4"#,
            [from.into(), to.into()],
        ))
        .await?;
    let mut models = Vec::with_capacity(rows.len());
    let mut counted = 0;
    for row in rows {
        let minute: String = row.try_get("", "minute")?;
        let minute = DateTime::parse_from_rfc3339(&format!("{minute}:00+00:00"))
            .map_err(|e| DbErr::Custom(format!("a stored time is not RFC 3339: {e}")))?
            .to_utc();
        let count: i64 = row.try_get("", "count")?;
        counted += count;
        models.push(event_counts::ActiveModel {
            application_id: Set(row.try_get::<Uuid>("", "application_id")?),
            minute: Set(minute),
            category: Set(row.try_get("", "category")?),
            name: Set(row.try_get("", "name")?),
            count: Set(count),
        });
    }
    for chunk in models.chunks(CHUNK) {
        add(txn, chunk.to_vec()).await?;
    }
    Ok(counted)
}

/// Adds counts to the stored ones (new rows for new minutes).
pub async fn add(
    txn: &impl ConnectionTrait,
    counts: Vec<event_counts::ActiveModel>,
) -> Result<(), DbErr> {
    use event_counts::Column as C;
    if counts.is_empty() {
        return Ok(());
    }
    let on_conflict = OnConflict::columns([C::ApplicationId, C::Minute, C::Category, C::Name])
        .value(
            C::Count,
            sea_orm::sea_query::Expr::cust(r#""event_counts"."count" + "excluded"."count""#),
        )
        .to_owned();
    event_counts::Entity::insert_many(counts)
        .on_conflict(on_conflict)
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// Deletes the counts of the minutes from `from` (or the first) to before `to`.
pub async fn forget(
    db: &impl ConnectionTrait,
    from: Option<DateTime<Utc>>,
    to: DateTime<Utc>,
) -> Result<u64, DbErr> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let mut delete =
        event_counts::Entity::delete_many().filter(event_counts::Column::Minute.lt(to));
    if let Some(from) = from {
        delete = delete.filter(event_counts::Column::Minute.gte(from));
    }
    Ok(delete.exec(db).await?.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_window_is_widened_to_the_whole_minutes_that_cover_it() {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 10, 11, 12).unwrap();
        let minute = Utc.with_ymd_and_hms(2026, 11, 24, 10, 11, 0).unwrap();
        assert_eq!(minute_of(at), minute);
        assert_eq!(minute_from(at), minute + TimeDelta::minutes(1));
        assert_eq!(minute_from(minute), minute);
        assert_eq!(minute_of(minute), minute);
    }
}
