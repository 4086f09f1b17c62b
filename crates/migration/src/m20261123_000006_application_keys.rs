use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Each application owns its ids: events, rejected events and sessions are keyed by
/// `(application_id, id)`, so one application's ids never collide with another's. A
/// rejected event's payload becomes text, so that it is kept exactly as sent even where jsonb
/// cannot hold it (`\u0000`, lone surrogates).
///
/// PostgreSQL changes the keys in place. SQLite cannot change a primary key, so each table is
/// rebuilt and its rows copied. `down` fails if two applications now share an id.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// One transaction, so each rebuild runs on one connection and nothing is left half done.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                rebuild(manager, "events", events(true), &EVENT_INDEXES_NEW).await?;
                rebuild(manager, "sessions", sessions(true), &SESSION_INDEXES).await?;
                rebuild(
                    manager,
                    "rejected_events",
                    rejected_events(true),
                    &REJECTED_INDEXES,
                )
                .await?;
            }
            _ => {
                let db = manager.get_connection();
                db.execute_unprepared(
                    "ALTER TABLE events DROP CONSTRAINT events_pkey, \
                       ADD PRIMARY KEY (application_id, id);
                     DROP INDEX IF EXISTS idx_events_session_time;
                     CREATE INDEX idx_events_session_time ON events (application_id, session_id, timestamp);
                     ALTER TABLE sessions DROP CONSTRAINT sessions_pkey, \
                       ADD PRIMARY KEY (application_id, id);
                     ALTER TABLE rejected_events DROP CONSTRAINT rejected_events_pkey, \
                       ADD PRIMARY KEY (application_id, id), \
                       ALTER COLUMN payload TYPE text USING payload::text;",
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                rebuild(manager, "events", events(false), &EVENT_INDEXES_OLD).await?;
                rebuild(manager, "sessions", sessions(false), &SESSION_INDEXES).await?;
                rebuild(
                    manager,
                    "rejected_events",
                    rejected_events(false),
                    &REJECTED_INDEXES,
                )
                .await?;
            }
            _ => {
                let db = manager.get_connection();
                db.execute_unprepared(
                    "ALTER TABLE events DROP CONSTRAINT events_pkey, ADD PRIMARY KEY (id);
                     DROP INDEX IF EXISTS idx_events_session_time;
                     CREATE INDEX idx_events_session_time ON events (session_id, timestamp);
                     ALTER TABLE sessions DROP CONSTRAINT sessions_pkey, ADD PRIMARY KEY (id);
                     ALTER TABLE rejected_events DROP CONSTRAINT rejected_events_pkey, \
                       ADD PRIMARY KEY (id), \
                       ALTER COLUMN payload TYPE jsonb USING payload::jsonb;",
                )
                .await?;
            }
        }
        Ok(())
    }
}

type Indexes = [(&'static str, &'static [&'static str])];

const EVENT_INDEXES_NEW: [(&str, &[&str]); 4] = [
    (
        "idx_events_session_time",
        &["application_id", "session_id", "timestamp"],
    ),
    (
        "idx_events_category_name_time",
        &["category", "name", "timestamp"],
    ),
    ("idx_events_time", &["timestamp"]),
    ("idx_events_received_at", &["received_at"]),
];
const EVENT_INDEXES_OLD: [(&str, &[&str]); 4] = [
    ("idx_events_session_time", &["session_id", "timestamp"]),
    (
        "idx_events_category_name_time",
        &["category", "name", "timestamp"],
    ),
    ("idx_events_time", &["timestamp"]),
    ("idx_events_received_at", &["received_at"]),
];
const SESSION_INDEXES: [(&str, &[&str]); 1] = [("idx_sessions_last_seen", &["last_seen"])];
const REJECTED_INDEXES: [(&str, &[&str]); 2] = [
    (
        "idx_rejected_events_app_time",
        &["application_id", "rejected_at"],
    ),
    ("idx_rejected_events_time", &["rejected_at"]),
];

fn keyed(
    table: &str,
    mut create: TableCreateStatement,
    by_application: bool,
) -> TableCreateStatement {
    let mut key = Index::create();
    if by_application {
        key.col("application_id");
    }
    key.col("id");
    create.table(Alias::new(table)).primary_key(&mut key);
    create
}

fn events(by_application: bool) -> TableCreateStatement {
    let create = Table::create()
        .col(uuid("id"))
        .col(uuid("application_id"))
        .col(uuid("session_id"))
        .col(string_len("category", 128))
        .col(string_len("name", 128))
        .col(json_binary("data"))
        .col(timestamp_with_time_zone("timestamp"))
        .col(timestamp_with_time_zone("received_at"))
        .col(timestamp_with_time_zone("stored_at"))
        .to_owned();
    keyed("events", create, by_application)
}

fn sessions(by_application: bool) -> TableCreateStatement {
    let create = Table::create()
        .col(uuid("id"))
        .col(uuid("application_id"))
        .col(timestamp_with_time_zone("first_seen"))
        .col(timestamp_with_time_zone("last_seen"))
        .col(big_integer("event_count"))
        .to_owned();
    keyed("sessions", create, by_application)
}

fn rejected_events(by_application: bool) -> TableCreateStatement {
    let payload = if by_application {
        text("payload")
    } else {
        json_binary("payload")
    };
    let create = Table::create()
        .col(uuid("id"))
        .col(uuid("application_id"))
        .col(string_len("category", 128))
        .col(string_len("name", 128))
        .col(payload)
        .col(json_binary("reasons"))
        .col(timestamp_with_time_zone("received_at"))
        .col(timestamp_with_time_zone("rejected_at"))
        .to_owned();
    keyed("rejected_events", create, by_application)
}

/// SQLite: a new table with the new key, the rows copied over, the old table replaced.
async fn rebuild(
    manager: &SchemaManager<'_>,
    table: &str,
    mut create: TableCreateStatement,
    indexes: &Indexes,
) -> Result<(), DbErr> {
    let next = format!("{table}_next");
    manager
        .create_table(create.table(Alias::new(&next)).to_owned())
        .await?;
    let db = manager.get_connection();
    // One statement a call: SQLite runs only the first of several.
    for statement in [
        format!(r#"INSERT INTO "{next}" SELECT * FROM "{table}""#),
        format!(r#"DROP TABLE "{table}""#),
        format!(r#"ALTER TABLE "{next}" RENAME TO "{table}""#),
    ] {
        db.execute_unprepared(&statement).await?;
    }
    for (name, columns) in indexes {
        let mut index = Index::create()
            .name(*name)
            .table(Alias::new(table))
            .to_owned();
        for column in *columns {
            index.col(Alias::new(*column));
        }
        manager.create_index(index).await?;
    }
    Ok(())
}
