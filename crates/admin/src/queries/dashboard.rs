//! The dashboard's numbers, at a cost that does not grow with the tables. Totals are counted
//! exactly up to [`EXACT_UP_TO`] rows and estimated past it (PostgreSQL's planner statistics,
//! SQLite's largest rowid); rates count `received_at`, when The Eye got the event, over the
//! last hour and day through its index. On PostgreSQL every query runs under a statement
//! timeout of its own. The SQL differs by backend only in its date functions and estimates.

use std::fmt;
use std::time::Duration;

mod health;

pub use health::{APPLICATIONS_SHOWN, Activity, Limited};

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbBackend, DbErr, QueryResult, Statement, Value};

/// Tables at most this large are counted exactly; counting them costs a few milliseconds.
pub const EXACT_UP_TO: u64 = 10_000;

/// How many rows a table holds, as well as can be known cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Exact(u64),
    /// An estimate, larger than [`EXACT_UP_TO`].
    About(u64),
    /// Larger than [`EXACT_UP_TO`], with no estimate yet (a table never analysed).
    MoreThan(u64),
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Exact(n) => write!(f, "{n}"),
            Count::About(n) => write!(f, "about {}", grouped(*n)),
            Count::MoreThan(n) => write!(f, "more than {}", grouped(*n)),
        }
    }
}

/// `12345678` as `12,345,678`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone)]
pub struct Totals {
    pub events: Count,
    pub sessions: Count,
    pub rejected: Count,
    /// Messages no worker could read, waiting for an operator.
    pub dead_letters: Count,
    pub applications: Count,
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

/// Runs the dashboard's queries, each under `timeout` on PostgreSQL.
pub struct Reader<'a> {
    db: &'a DatabaseConnection,
    timeout: Duration,
}

impl<'a> Reader<'a> {
    pub fn new(db: &'a DatabaseConnection, timeout: Duration) -> Self {
        Self { db, timeout }
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// One statement under the dashboard's timeout on PostgreSQL.
    async fn rows(&self, sql: &str, values: Vec<Value>) -> Result<Vec<QueryResult>, DbErr> {
        let statement = Statement::from_sql_and_values(self.backend(), sql, values);
        super::timed(self.db, self.timeout, statement).await
    }

    async fn number(&self, sql: &str, values: Vec<Value>) -> Result<Option<i64>, DbErr> {
        let rows = self.rows(sql, values).await?;
        match rows.first() {
            Some(row) => row.try_get_by_index::<Option<i64>>(0),
            None => Ok(None),
        }
    }

    /// Exact up to [`EXACT_UP_TO`] (a count that stops there), estimated past it.
    async fn count(&self, table: Table) -> Result<Count, DbErr> {
        let table = table.name();
        let bounded = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT {}) AS bounded",
            EXACT_UP_TO + 1
        );
        let exact = self.number(&bounded, vec![]).await?.unwrap_or(0);
        let exact = u64::try_from(exact).unwrap_or(0);
        if exact <= EXACT_UP_TO {
            return Ok(Count::Exact(exact));
        }
        let estimate = match self.backend() {
            // The table's own statistics, or its partitions' summed: autovacuum analyses
            // partitions, never a partitioned table. -1 (here 0) until first analysed.
            DbBackend::Postgres => {
                self.number(
                    &format!(
                        "SELECT CAST(SUM(GREATEST(reltuples, 0)) AS BIGINT) FROM pg_class \
                         WHERE oid = to_regclass('{table}') OR oid IN \
                         (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass('{table}'))"
                    ),
                    vec![],
                )
                .await?
            }
            // The largest rowid: close to the count, above it by what retention deleted.
            _ => {
                self.number(&format!("SELECT MAX(rowid) FROM {table}"), vec![])
                    .await?
            }
        };
        Ok(match estimate.and_then(|n| u64::try_from(n).ok()) {
            Some(n) if n > EXACT_UP_TO => Count::About(n),
            _ => Count::MoreThan(EXACT_UP_TO),
        })
    }

    pub async fn totals(&self) -> Result<Totals, DbErr> {
        Ok(Totals {
            events: self.count(Table::Events).await?,
            sessions: self.count(Table::Sessions).await?,
            rejected: self.count(Table::Rejected).await?,
            dead_letters: self.count(Table::DeadLetters).await?,
            applications: self.count(Table::Applications).await?,
        })
    }
}

/// The tables the dashboard counts; their names are spliced into SQL, so they are fixed here.
#[derive(Debug, Clone, Copy)]
enum Table {
    Events,
    Sessions,
    Rejected,
    DeadLetters,
    Applications,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Sessions => "sessions",
            Table::Rejected => "rejected_events",
            Table::DeadLetters => "dead_letters",
            Table::Applications => "applications",
        }
    }
}

fn placeholders(backend: DbBackend, sql: &str) -> String {
    match backend {
        DbBackend::Postgres => sql.replacen('?', "$1", 1),
        _ => sql.to_owned(),
    }
}

impl Reader<'_> {
    /// The ten most frequent (category, name) pairs received since `since`.
    pub async fn top_types(&self, since: DateTime<Utc>) -> Result<Vec<TypeCount>, DbErr> {
        let sql = placeholders(
            self.backend(),
            "SELECT category, name, COUNT(*) AS n FROM events WHERE received_at >= ? \
             GROUP BY category, name ORDER BY n DESC, category, name LIMIT 10",
        );
        let rows = self.rows(&sql, vec![Value::from(since)]).await?;
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
    pub async fn reasons(&self, since: DateTime<Utc>) -> Result<Vec<ReasonCount>, DbErr> {
        let sql = match self.backend() {
            DbBackend::Postgres => {
                "SELECT r->>'code' AS code, COUNT(*) AS n FROM rejected_events, \
                 jsonb_array_elements(reasons) AS r WHERE rejected_at >= $1 \
                 GROUP BY 1 ORDER BY n DESC, code LIMIT 20"
            }
            _ => {
                "SELECT json_extract(r.value, '$.code') AS code, COUNT(*) AS n \
                 FROM rejected_events, json_each(rejected_events.reasons) AS r \
                 WHERE rejected_at >= ? GROUP BY 1 ORDER BY n DESC, code LIMIT 20"
            }
        };
        let rows = self.rows(sql, vec![Value::from(since)]).await?;
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

    /// Events received since `since`, stored and rejected. Rejected events are counted by
    /// `rejected_at`, which is indexed (`received_at` is not there); the two differ by the
    /// workers' lag.
    pub async fn received_since(&self, since: DateTime<Utc>) -> Result<(u64, u64), DbErr> {
        let mut counts = [0u64; 2];
        for (count, (table, column)) in counts.iter_mut().zip([
            ("events", "received_at"),
            ("rejected_events", "rejected_at"),
        ]) {
            let sql = placeholders(
                self.backend(),
                &format!("SELECT COUNT(*) FROM {table} WHERE {column} >= ?"),
            );
            let n = self.number(&sql, vec![Value::from(since)]).await?;
            *count = n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        }
        Ok((counts[0], counts[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::{Count, EXACT_UP_TO};

    #[test]
    fn estimates_say_so_and_exact_counts_do_not() {
        assert_eq!(Count::Exact(5).to_string(), "5");
        assert_eq!(Count::About(12_345_678).to_string(), "about 12,345,678");
        assert_eq!(Count::About(EXACT_UP_TO + 1).to_string(), "about 10,001");
        assert_eq!(Count::MoreThan(EXACT_UP_TO).to_string(), "more than 10,000");
    }
}
