use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `schema_reloads`: one row per `eye schemas reload`. Workers poll the highest id and reload
/// their schema directory when it grows (docs/ARCHITECTURE.md, decision 42).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("schema_reloads")
                    .if_not_exists()
                    .col(big_pk_auto("id"))
                    .col(timestamp_with_time_zone("requested_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("schema_reloads").to_owned())
            .await
    }
}
