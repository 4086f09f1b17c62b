//! Requests to reload the schema directory (`eye schemas reload`): a row each, its id the
//! generation that workers compare with the one they loaded.

use chrono::Utc;
use sea_orm::entity::prelude::*;
use sea_orm::{QueryOrder, QuerySelect, Set};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "schema_reloads")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub requested_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Asks every worker to reload; the new generation.
pub async fn request(db: &impl ConnectionTrait) -> Result<i64, DbErr> {
    let row = ActiveModel {
        requested_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(row.id)
}

/// The latest generation; 0 before any request.
pub async fn latest(db: &impl ConnectionTrait) -> Result<i64, DbErr> {
    let id: Option<i64> = Entity::find()
        .select_only()
        .column(Column::Id)
        .order_by_desc(Column::Id)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    Ok(id.unwrap_or(0))
}
