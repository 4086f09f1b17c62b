use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Messages no worker could read (an unknown envelope version, bytes that are not an
/// envelope, past the delivery limit), kept for operators to see, replay or discard. The same
/// message dead-lettered again counts up on its row (`digest` is the body's SHA-256).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("dead_letters")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(string_len("digest", 64).unique_key())
                    .col(blob("body"))
                    .col(text("reason"))
                    .col(text("headers"))
                    .col(timestamp_with_time_zone("first_dead_at"))
                    .col(timestamp_with_time_zone("last_dead_at"))
                    .col(big_integer("count"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_dead_letters_last")
                    .table("dead_letters")
                    .col("last_dead_at")
                    .col("id")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("dead_letters").to_owned())
            .await
    }
}
