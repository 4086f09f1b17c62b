use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Per-application rate limits and what they refused, and an index for each application's
/// latest events.
///
/// - `applications.rate_limit_events` per `rate_limit_period_secs`, with a burst of
///   `rate_limit_burst` events, overrides the default limit of the settings; all three are null
///   when the application uses the default.
/// - `rate_limited` counts, per application and minute, the requests (and their events) every
///   api instance refused for the limit; the apis add to it, rows older than a day are pruned.
/// - `idx_events_application_received` answers "when did this application last send" and
///   time ranges within one application without scanning other applications' events.
/// - `idx_rate_limited_minute` reads the last hour of `rate_limited` (the dashboard) and finds
///   the rows to prune without reading the whole day.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per statement.
        for column in [
            "rate_limit_events",
            "rate_limit_period_secs",
            "rate_limit_burst",
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table("applications")
                        .add_column(big_integer_null(column))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("rate_limited")
                    .if_not_exists()
                    .col(uuid("application_id"))
                    .col(timestamp_with_time_zone("minute"))
                    .col(big_integer("requests"))
                    .col(big_integer("events"))
                    .primary_key(Index::create().col("application_id").col("minute"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("rate_limited", "application_id")
                            .to("applications", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_events_application_received")
                    .table("events")
                    .col("application_id")
                    .col("received_at")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_rate_limited_minute")
                    .table("rate_limited")
                    .col("minute")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_rate_limited_minute")
                    .table("rate_limited")
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_events_application_received")
                    .table("events")
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table("rate_limited").to_owned())
            .await?;
        for column in [
            "rate_limit_burst",
            "rate_limit_period_secs",
            "rate_limit_events",
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table("applications")
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
