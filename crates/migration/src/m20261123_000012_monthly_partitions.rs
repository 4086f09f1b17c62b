use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// On PostgreSQL, `events` becomes range-partitioned by month on `timestamp`, and
/// `rejected_events` on `received_at`, so that retention drops whole months instead of
/// deleting rows. Each gets a default partition for stragglers (months with no partition of
/// their own) and a partition for every month that holds 10,000 rows or more (the rest stay in
/// the default partition), last month, this month and the next two;
/// `eye migrate` and the workers create later months ahead (`eye_entity::partitions`).
///
/// A key on a partitioned table must hold the partition column, so the keys become
/// `(application_id, id, timestamp)` and `(application_id, id, received_at)`: an event
/// delivered again has the same time, so it is still stored once (docs/ARCHITECTURE.md,
/// decision 48, for what an id sent again under another time does).
///
/// Existing rows are copied into the new tables in one transaction: stop the workers while it
/// runs (the queue keeps what the api accepts meanwhile). `down` copies them back, and fails
/// if one application now holds two events with the same id. SQLite keeps its tables.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for table in TABLES {
            db.execute_unprepared(&table.partition()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for table in TABLES {
            db.execute_unprepared(&table.unpartition()).await?;
        }
        Ok(())
    }
}

struct Partitioned {
    table: &'static str,
    /// The partition column, last in the key.
    column: &'static str,
    /// Indexes other than the key: the same before and after, by name.
    indexes: &'static [(&'static str, &'static str)],
}

const TABLES: [Partitioned; 2] = [
    Partitioned {
        table: "events",
        column: "timestamp",
        indexes: &[
            (
                "idx_events_session_time",
                r#"application_id, session_id, "timestamp""#,
            ),
            (
                "idx_events_category_name_time",
                r#"category, name, "timestamp""#,
            ),
            ("idx_events_time", r#""timestamp""#),
            ("idx_events_received_at", "received_at"),
            (
                "idx_events_application_received",
                "application_id, received_at",
            ),
        ],
    },
    Partitioned {
        table: "rejected_events",
        column: "received_at",
        indexes: &[
            (
                "idx_rejected_events_app_time",
                "application_id, rejected_at",
            ),
            ("idx_rejected_events_time", "rejected_at"),
        ],
    },
];

impl Partitioned {
    /// Creates the partitioned table like the plain one, with a default partition and one for
    /// each month of many rows and for last month to two months ahead.
    fn partition(&self) -> String {
        let Self { table, column, .. } = self;
        let old = format!("{table}_unpartitioned");
        let create = format!(
            r#"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS) PARTITION BY RANGE ("{column}");
ALTER TABLE {table} ADD PRIMARY KEY (application_id, id, "{column}");
CREATE TABLE {table}_default PARTITION OF {table} DEFAULT;
DO $$
DECLARE
    month timestamp;
BEGIN
    FOR month IN
        SELECT date_trunc('month', "{column}" AT TIME ZONE 'UTC') FROM {old}
        GROUP BY 1 HAVING count(*) >= 10000
        UNION
        SELECT date_trunc('month', now() AT TIME ZONE 'UTC') + ahead * interval '1 month'
        FROM generate_series(-1, 2) AS ahead
    LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF {table} FOR VALUES FROM (%L) TO (%L)',
            '{table}_p' || to_char(month, 'YYYY_MM'),
            month::text || '+00',
            (month + interval '1 month')::text || '+00');
    END LOOP;
END $$;"#
        );
        self.rebuild(&old, &create)
    }

    /// The reverse: one plain table keyed by `(application_id, id)`.
    fn unpartition(&self) -> String {
        let table = self.table;
        let old = format!("{table}_partitioned");
        let create = format!(
            "CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS);
ALTER TABLE {table} ADD PRIMARY KEY (application_id, id);"
        );
        self.rebuild(&old, &create)
    }

    /// Renames the table to `old`, runs `create` to make the new one, copies the rows over,
    /// indexes them once they are in and drops `old`.
    fn rebuild(&self, old: &str, create: &str) -> String {
        let table = self.table;
        format!(
            "ALTER TABLE {table} RENAME TO {old};
ALTER TABLE {old} RENAME CONSTRAINT {table}_pkey TO {old}_pkey;
{drop}
{create}
INSERT INTO {table} SELECT * FROM {old};
{indexes}
DROP TABLE {old};",
            drop = self.drop_indexes(),
            indexes = self.create_indexes(),
        )
    }

    fn drop_indexes(&self) -> String {
        self.indexes
            .iter()
            .map(|(name, _)| format!("DROP INDEX IF EXISTS {name};\n"))
            .collect()
    }

    fn create_indexes(&self) -> String {
        self.indexes
            .iter()
            .map(|(name, columns)| format!("CREATE INDEX {name} ON {} ({columns});\n", self.table))
            .collect()
    }
}
