use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "dead_letters")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// SHA-256 of `body`, hex: the same message dead-lettered again counts on one row.
    #[sea_orm(unique)]
    pub digest: String,
    /// The message exactly as it was on the queue.
    pub body: Vec<u8>,
    /// Why no worker could store it.
    pub reason: String,
    /// The message's AMQP headers (with `x-death`) as JSON text; `{}` when it had none.
    pub headers: String,
    pub first_dead_at: DateTimeUtc,
    pub last_dead_at: DateTimeUtc,
    pub count: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
