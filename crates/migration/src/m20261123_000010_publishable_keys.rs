use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Publishable keys: `api_tokens.origins` lists, space-separated, the web origins a key may be
/// used from (`https://shop.example http://localhost:3000`). Null for a secret token, which is
/// every token created before.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("api_tokens")
                    .add_column(text_null("origins"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("api_tokens")
                    .drop_column("origins")
                    .to_owned(),
            )
            .await
    }
}
