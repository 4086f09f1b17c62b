use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The data team's three queries, each with its index: a session's events in time order;
/// a category (and name) over time; everything in a time range.
const EVENT_INDEXES: [(&str, &[&str]); 3] = [
    ("idx_events_session_time", &["session_id", "timestamp"]),
    (
        "idx_events_category_name_time",
        &["category", "name", "timestamp"],
    ),
    ("idx_events_time", &["timestamp"]),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // No foreign key on the hot table: application ids come from verified tokens.
        manager
            .create_table(
                Table::create()
                    .table("events")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid("application_id"))
                    .col(uuid("session_id"))
                    .col(string_len("category", 128))
                    .col(string_len("name", 128))
                    .col(json_binary("data"))
                    .col(timestamp_with_time_zone("timestamp"))
                    .col(timestamp_with_time_zone("received_at"))
                    .col(timestamp_with_time_zone("stored_at"))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in EVENT_INDEXES {
            let mut index = Index::create()
                .name(name)
                .table("events")
                .if_not_exists()
                .to_owned();
            for column in columns {
                index.col(*column);
            }
            manager.create_index(index).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("sessions")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid("application_id"))
                    .col(timestamp_with_time_zone("first_seen"))
                    .col(timestamp_with_time_zone("last_seen"))
                    .col(big_integer("event_count"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_sessions_last_seen")
                    .table("sessions")
                    .col("last_seen")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("sessions").to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table("events").to_owned())
            .await
    }
}
