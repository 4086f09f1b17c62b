//! Monthly partitions and retention.
//!
//! On PostgreSQL `events` is partitioned by month on `timestamp` and `rejected_events` on
//! `received_at`, each with a default partition for months that have none (migration 12).
//! [`create_ahead`] makes this month's and the next months' partitions before their events
//! arrive; `eye migrate` and every worker run it. [`apply_retention`] drops the partitions
//! wholly older than a cutoff and deletes older stragglers from the default partitions.
//! SQLite has no partitions: retention deletes its rows in chunks, so no statement holds the
//! database for long.

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};

use crate::rollups;

/// Months after the current one whose partitions exist ahead of time: a worker that creates
/// them daily leaves weeks for one that fails to be noticed.
pub const MONTHS_AHEAD: u32 = 2;

/// A month with this many rows in a default partition gets a partition of its own (see
/// [`adopt_stragglers`]), so that the default partition stays small.
pub const STRAGGLERS_PER_PARTITION: i64 = 10_000;

/// Rows one retention statement deletes.
const CHUNK: u32 = 10_000;

/// Serialises partition changes between processes (workers, `eye migrate`, `eye retention`).
/// Serialises partition changes between processes (workers, `eye migrate`, `eye retention`),
/// and bounds how long a change waits for that and for the table: every insert queues behind
/// a change waiting for `events`, so it gives up soon (and the upkeep tries again later).
const LOCK: &str = "SET LOCAL lock_timeout = '2s';
SELECT pg_advisory_xact_lock(hashtext('eye_partitions'))";

/// A partitioned table and the column it is partitioned on.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub column: &'static str,
}

pub const EVENTS: Table = Table {
    name: "events",
    column: "timestamp",
};
pub const REJECTED_EVENTS: Table = Table {
    name: "rejected_events",
    column: "received_at",
};
pub const TABLES: [Table; 2] = [EVENTS, REJECTED_EVENTS];

impl Table {
    /// The partition holding `month` (its first day): `events_p2026_11`.
    pub fn partition(&self, month: NaiveDate) -> String {
        format!("{}_p{:04}_{:02}", self.name, month.year(), month.month())
    }

    /// The month a partition of this table holds, from its name.
    fn month_of(&self, partition: &str) -> Option<NaiveDate> {
        let suffix = partition.strip_prefix(self.name)?.strip_prefix("_p")?;
        let (year, month) = suffix.split_once('_')?;
        if year.len() != 4 || month.len() != 2 {
            return None;
        }
        NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)
    }
}

/// The first day of the month `at` falls in (UTC).
pub fn month_of(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive().with_day(1).unwrap_or(NaiveDate::MIN)
}

/// Midnight UTC of `day`, as a literal PostgreSQL reads the same whatever its time zone.
fn bound(day: NaiveDate) -> String {
    format!("{day} 00:00:00+00")
}

fn next_month(month: NaiveDate) -> NaiveDate {
    month.checked_add_months(Months::new(1)).unwrap_or(month)
}

/// Creates the partitions of `now`'s month, of the month before (late events arrive after a
/// month ends) and of the [`MONTHS_AHEAD`] after it where they are missing, except months
/// wholly before `retained_from` (retention would drop them again), and returns the names of
/// those it created. Nothing on SQLite.
pub async fn create_ahead(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
    retained_from: Option<DateTime<Utc>>,
) -> Result<Vec<String>, DbErr> {
    let mut created = Vec::new();
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(created);
    }
    let first = month_of(now)
        .checked_sub_months(Months::new(1))
        .unwrap_or(NaiveDate::MIN);
    let kept = retained_from.map_or(NaiveDate::MIN, month_of);
    for table in TABLES {
        for ahead in 0..=MONTHS_AHEAD + 1 {
            let month = first
                .checked_add_months(Months::new(ahead))
                .unwrap_or(first);
            if month >= kept && create_month(db, table, month).await? {
                created.push(table.partition(month));
            }
        }
    }
    Ok(created)
}

/// Creates the partition of `month` (its first day) unless it exists, moving in the rows the
/// default partition holds for that month; true if it was created. PostgreSQL only.
pub async fn create_month(
    db: &DatabaseConnection,
    table: Table,
    month: NaiveDate,
) -> Result<bool, DbErr> {
    let Table { name, column } = table;
    let partition = table.partition(month);
    let txn = db.begin().await?;
    txn.execute_unprepared(LOCK).await?;
    if exists(&txn, &partition).await? {
        txn.commit().await?;
        return Ok(false);
    }
    let (from, to) = (bound(month), bound(next_month(month)));
    // Rows of the month may wait in the default partition; PostgreSQL refuses the new
    // partition while they are there, so they move into it first.
    txn.execute_unprepared(&format!(
        r#"CREATE TABLE {partition} (LIKE {name} INCLUDING DEFAULTS);
WITH moved AS (
    DELETE FROM {name}_default WHERE "{column}" >= '{from}' AND "{column}" < '{to}' RETURNING *
)
INSERT INTO {partition} SELECT * FROM moved;
ALTER TABLE {name} ATTACH PARTITION {partition} FOR VALUES FROM ('{from}') TO ('{to}');"#
    ))
    .await?;
    txn.commit().await?;
    Ok(true)
}

/// Gives each month that holds at least [`STRAGGLERS_PER_PARTITION`] rows in a default
/// partition (a backfill, events sent long after they happened) a partition of its own, and
/// returns the names of those it created. Nothing on SQLite.
pub async fn adopt_stragglers(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    let mut created = Vec::new();
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(created);
    }
    for table in TABLES {
        let months = db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    r#"SELECT (date_trunc('month', "{column}" AT TIME ZONE 'UTC'))::date AS month
                       FROM {name}_default GROUP BY 1 HAVING count(*) >= {STRAGGLERS_PER_PARTITION}
                       ORDER BY 1"#,
                    name = table.name,
                    column = table.column
                ),
            ))
            .await?;
        for row in months {
            let month: NaiveDate = row.try_get("", "month")?;
            if create_month(db, table, month).await? {
                created.push(table.partition(month));
            }
        }
    }
    Ok(created)
}

/// What [`apply_retention`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Whole partitions dropped (PostgreSQL).
    pub partitions: Vec<String>,
    /// Rows deleted one chunk at a time: SQLite's, and PostgreSQL's default partitions'.
    pub events: u64,
    pub rejected_events: u64,
    /// Sessions whose last event is older than the events kept.
    pub sessions: u64,
}

/// Removes events and rejected events older than `cutoff`, and the sessions that ended
/// before it. On PostgreSQL a month's partition goes once the whole month is older than
/// `cutoff`, so rows are kept up to a month past it; stragglers in the default partitions
/// are deleted to the cutoff exactly. On SQLite rows are deleted to the cutoff exactly. The
/// rollups lose the counts of what went, so they keep matching the events.
pub async fn apply_retention(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
) -> Result<Removed, DbErr> {
    let mut removed = Removed::default();
    let backend = db.get_database_backend();
    let sessions_cutoff = if backend == DbBackend::Postgres {
        for table in TABLES {
            removed
                .partitions
                .extend(drop_before(db, table, month_of(cutoff)).await?);
        }
        removed.events = delete_older(db, "events_default", EVENTS.column, cutoff).await?;
        removed.rejected_events = delete_older(
            db,
            "rejected_events_default",
            REJECTED_EVENTS.column,
            cutoff,
        )
        .await?;
        // A session ending in the month that stays may still have events in it.
        let kept = month_of(cutoff).and_time(chrono::NaiveTime::MIN).and_utc();
        rollups::forget(db, None, kept).await?;
        // The month's events were deleted up to the cutoff only if it has no partition (they
        // were in the default one); a partition is kept whole.
        let partitioned = list(db, EVENTS)
            .await?
            .iter()
            .any(|(_, month)| *month == month_of(cutoff));
        if !partitioned {
            rollups::rebuild(db, kept, cutoff).await?;
        }
        kept
    } else {
        removed.events = delete_older(db, EVENTS.name, EVENTS.column, cutoff).await?;
        removed.rejected_events =
            delete_older(db, REJECTED_EVENTS.name, REJECTED_EVENTS.column, cutoff).await?;
        rollups::forget(db, None, rollups::minute_of(cutoff)).await?;
        rollups::rebuild(db, rollups::minute_of(cutoff), cutoff).await?;
        cutoff
    };
    removed.sessions = delete_older(db, "sessions", "last_seen", sessions_cutoff).await?;
    Ok(removed)
}

/// The month partitions of `table`, each with the month it holds, oldest first.
pub async fn list(
    db: &DatabaseConnection,
    table: Table,
) -> Result<Vec<(String, NaiveDate)>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT c.relname::text AS name FROM pg_inherits i \
                 JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = '{}'::regclass",
                table.name
            ),
        ))
        .await?;
    let mut partitions = Vec::new();
    for row in rows {
        let name: String = row.try_get("", "name")?;
        if let Some(month) = table.month_of(&name) {
            partitions.push((name, month));
        }
    }
    partitions.sort_by_key(|(_, month)| *month);
    Ok(partitions)
}

/// Drops the partitions of months before `month`.
async fn drop_before(
    db: &DatabaseConnection,
    table: Table,
    month: NaiveDate,
) -> Result<Vec<String>, DbErr> {
    let mut dropped = Vec::new();
    for (partition, held) in list(db, table).await? {
        if held >= month {
            break;
        }
        let txn = db.begin().await?;
        txn.execute_unprepared(LOCK).await?;
        // Another process may have dropped it since the list was read.
        if exists(&txn, &partition).await? {
            txn.execute_unprepared(&format!("DROP TABLE {partition}"))
                .await?;
            dropped.push(partition);
        }
        txn.commit().await?;
    }
    Ok(dropped)
}

async fn exists(db: &impl ConnectionTrait, table: &str) -> Result<bool, DbErr> {
    Ok(db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT to_regclass('{table}') IS NOT NULL AS present"),
        ))
        .await?
        .map(|row| row.try_get::<bool>("", "present"))
        .transpose()?
        .unwrap_or(false))
}

/// Deletes the rows of `table` whose `column` is before `cutoff`, [`CHUNK`] rows a statement.
async fn delete_older(
    db: &DatabaseConnection,
    table: &str,
    column: &str,
    cutoff: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => format!(
            r#"DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM {table} WHERE "{column}" < $1 LIMIT {CHUNK}))"#
        ),
        _ => format!(
            r#"DELETE FROM {table} WHERE rowid IN (
                 SELECT rowid FROM {table} WHERE "{column}" < ? LIMIT {CHUNK})"#
        ),
    };
    let mut deleted = 0;
    loop {
        let done = db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                &sql,
                [cutoff.into()],
            ))
            .await?
            .rows_affected();
        deleted += done;
        if done < u64::from(CHUNK) {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_named_by_its_month_and_read_back() {
        let month = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        assert_eq!(EVENTS.partition(month), "events_p2026_01");
        assert_eq!(EVENTS.month_of("events_p2026_01"), Some(month));
        assert_eq!(
            REJECTED_EVENTS.month_of("rejected_events_p2026_01"),
            Some(month)
        );
        // Neither the default partition nor another table's partitions.
        assert_eq!(EVENTS.month_of("events_default"), None);
        assert_eq!(EVENTS.month_of("rejected_events_p2026_01"), None);
        assert_eq!(EVENTS.month_of("events_p2026_13"), None);
    }

    #[test]
    fn bounds_are_utc_midnights_of_first_days() {
        let at = DateTime::parse_from_rfc3339("2026-12-31T23:59:59-05:00")
            .unwrap()
            .to_utc();
        // 04:59 UTC on 1 January: January's partition.
        assert_eq!(month_of(at), NaiveDate::from_ymd_opt(2027, 1, 1).unwrap());
        assert_eq!(bound(next_month(month_of(at))), "2027-02-01 00:00:00+00");
    }
}
