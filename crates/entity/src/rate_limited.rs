use sea_orm::entity::prelude::*;

/// Requests refused for an application's rate limit, per minute, summed over every api.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "rate_limited")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub application_id: Uuid,
    /// The start of the minute, UTC.
    #[sea_orm(primary_key, auto_increment = false)]
    pub minute: DateTimeUtc,
    pub requests: i64,
    pub events: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
