use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub application_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub session_id: Uuid,
    pub category: String,
    pub name: String,
    /// The JSON text as stored: read as text so that numbers come back exactly (a JSON value
    /// would go through `f64`). Written by the worker, which casts the text it received.
    #[sea_orm(column_type = "JsonBinary", select_as = "text")]
    pub data: String,
    pub timestamp: DateTimeUtc,
    /// For an event that arrived in another format (a Segment message), that message less
    /// what went into `data`, as JSON text; null for events sent in The Eye's own format.
    #[sea_orm(column_type = "JsonBinary", select_as = "text", nullable)]
    pub source: Option<String>,
    pub received_at: DateTimeUtc,
    pub stored_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
