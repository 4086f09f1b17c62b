use sea_orm::entity::prelude::*;

/// A report job, from its request until it expires (see [`crate::report_jobs`]).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "reports")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The application covered; `None` for every application.
    pub application_id: Option<Uuid>,
    pub kind: String,
    pub window_from: DateTimeUtc,
    pub window_to: DateTimeUtc,
    pub category: Option<String>,
    pub name: Option<String>,
    /// The token or admin user who asked, for people reading the list.
    pub requested_by: String,
    /// `running`, `complete` or `failed`.
    pub status: String,
    /// Why it failed.
    pub reason: Option<String>,
    /// How many workers started it.
    pub attempts: i32,
    /// The attempt whose chunks are the CSV, once complete.
    pub result_attempt: Option<i32>,
    pub row_count: Option<i64>,
    pub byte_count: Option<i64>,
    pub created_at: DateTimeUtc,
    pub completed_at: Option<DateTimeUtc>,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
