use sea_orm::entity::prelude::*;

/// Stored events per application, minute of their `timestamp`, category and name.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_counts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub application_id: Uuid,
    /// The start of the minute, UTC.
    #[sea_orm(primary_key, auto_increment = false)]
    pub minute: DateTimeUtc,
    #[sea_orm(primary_key, auto_increment = false)]
    pub category: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub count: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
