use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "applications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub name: String,
    pub disabled: bool,
    pub created_at: DateTimeUtc,
    /// An override of the default rate limit: this many events per `rate_limit_period_secs`,
    /// bursts of `rate_limit_burst`. All null when the application uses the default.
    pub rate_limit_events: Option<i64>,
    pub rate_limit_period_secs: Option<i64>,
    pub rate_limit_burst: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::api_tokens::Entity")]
    ApiTokens,
}

impl Related<super::api_tokens::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ApiTokens.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
