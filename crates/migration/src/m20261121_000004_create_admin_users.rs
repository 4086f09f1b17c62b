use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("admin_users")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(string_len_uniq("username", 64))
                    .col(string_len("password_hash", 256))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        // `id` is the SHA-256 of the cookie value: a leaked table opens no session.
        manager
            .create_table(
                Table::create()
                    .table("admin_sessions")
                    .if_not_exists()
                    .col(string_len("id", 64).primary_key())
                    .col(uuid("user_id"))
                    .col(string_len("csrf_token", 64))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_admin_sessions_user")
                            .from("admin_sessions", "user_id")
                            .to("admin_users", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_admin_sessions_expires")
                    .table("admin_sessions")
                    .col("expires_at")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("admin_sessions").to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table("admin_users").to_owned())
            .await
    }
}
