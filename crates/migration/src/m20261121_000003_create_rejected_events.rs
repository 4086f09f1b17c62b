use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // `id` is the event's id, so a redelivered message rejects its events only once.
        manager
            .create_table(
                Table::create()
                    .table("rejected_events")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid("application_id"))
                    .col(string_len("category", 128))
                    .col(string_len("name", 128))
                    .col(json_binary("payload"))
                    .col(json_binary("reasons"))
                    .col(timestamp_with_time_zone("received_at"))
                    .col(timestamp_with_time_zone("rejected_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_rejected_events_app_time")
                    .table("rejected_events")
                    .col("application_id")
                    .col("rejected_at")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_rejected_events_time")
                    .table("rejected_events")
                    .col("rejected_at")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("rejected_events").to_owned())
            .await
    }
}
