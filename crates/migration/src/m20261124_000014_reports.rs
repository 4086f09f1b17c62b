use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Report jobs (docs/ARCHITECTURE.md, decision 51).
///
/// - `reports`: one row per job, from its request to its expiry: what it covers, its status
///   (`running`, `complete`, `failed`) and why it failed. `attempts` counts the workers that
///   started it; `result_attempt` names the attempt whose chunks are the result.
/// - `report_chunks`: the CSV in pieces of about a mebibyte, per attempt, so a restarted job
///   never mixes with what an earlier attempt wrote and the CSV streams without being held.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("reports")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid_null("application_id"))
                    .col(string_len("kind", 32))
                    .col(timestamp_with_time_zone("window_from"))
                    .col(timestamp_with_time_zone("window_to"))
                    .col(string_len_null("category", 128))
                    .col(string_len_null("name", 128))
                    .col(string_len("requested_by", 256))
                    .col(string_len("status", 16))
                    .col(text_null("reason"))
                    .col(integer("attempts").default(0))
                    .col(integer_null("result_attempt"))
                    .col(big_integer_null("row_count"))
                    .col(big_integer_null("byte_count"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("completed_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("idx_reports_created_at", "created_at"),
            ("idx_reports_expires_at", "expires_at"),
        ] {
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name(name)
                        .table("reports")
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("report_chunks")
                    .if_not_exists()
                    .col(uuid("report_id"))
                    .col(integer("attempt"))
                    .col(integer("seq"))
                    .col(text("body"))
                    .primary_key(Index::create().col("report_id").col("attempt").col("seq"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("report_chunks", "report_id")
                            .to("reports", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("report_chunks").to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table("reports").to_owned())
            .await
    }
}
