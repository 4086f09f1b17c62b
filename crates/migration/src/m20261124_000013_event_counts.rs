use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Rollups for the stats api (docs/ARCHITECTURE.md, decision 50).
///
/// - `event_counts`: stored events per application, minute of their `timestamp` (UTC),
///   category and name. The workers add to it in the transaction that stores the events;
///   hours and days are sums of minutes. Keyed with the minute second, so one application's
///   window is one range of the key.
/// - `idx_sessions_application_first_seen`: the sessions that began in a window, per
///   application (session stats).
///
/// Events stored before this migration are not counted until `eye rollups rebuild` runs.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("event_counts")
                    .if_not_exists()
                    .col(uuid("application_id"))
                    .col(timestamp_with_time_zone("minute"))
                    .col(string_len("category", 128))
                    .col(string_len("name", 128))
                    .col(big_integer("count"))
                    .primary_key(
                        Index::create()
                            .col("application_id")
                            .col("minute")
                            .col("category")
                            .col("name"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_sessions_application_first_seen")
                    .table("sessions")
                    .col("application_id")
                    .col("first_seen")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_sessions_application_first_seen")
                    .table("sessions")
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table("event_counts").to_owned())
            .await
    }
}
