use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "rejected_events")]
pub struct Model {
    /// The rejected event's id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub application_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub category: String,
    pub name: String,
    /// The event as received, as JSON text: kept exactly even where jsonb could not hold it.
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    /// `[{field, code, message}]`.
    #[sea_orm(column_type = "JsonBinary")]
    pub reasons: Json,
    pub received_at: DateTimeUtc,
    pub rejected_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
