use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The last minute whose trend was published (docs/ARCHITECTURE.md, decision 52): one row,
/// moved forward by the worker that holds the trends' advisory lock, so N workers publish
/// each minute once.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("trend_marks")
                    .if_not_exists()
                    .col(string_len("name", 64).primary_key())
                    .col(timestamp_with_time_zone("minute"))
                    .col(timestamp_with_time_zone("published_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("trend_marks").to_owned())
            .await
    }
}
