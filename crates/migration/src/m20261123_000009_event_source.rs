use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `events.source`: for an event that arrived in another format (a Segment message), that
/// message less what went into `data` — its `context`, `userId`, `anonymousId` and the rest —
/// as JSON; null for events sent in The Eye's own format. Rejected events keep it in their
/// payload.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("events")
                    .add_column(json_binary_null("source"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("events")
                    .drop_column("source")
                    .to_owned(),
            )
            .await
    }
}
