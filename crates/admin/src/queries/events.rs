//! Stored events: filtered, paged, and the session they belong to.

use eye_entity::{events, sessions};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, Select};
use uuid::Uuid;

use super::keyset;
pub use super::keyset::{Order, Page, PageRequest};
use crate::filter::{Cursor, EventFilter};

/// The events matching `filter`, with the application name resolved to its id.
pub async fn select(
    db: &impl ConnectionTrait,
    filter: &EventFilter,
) -> Result<Select<events::Entity>, DbErr> {
    use events::Column;
    let mut select = events::Entity::find();
    if let Some(name) = &filter.application {
        select = select.filter(Column::ApplicationId.eq(super::application_id(db, name).await?));
    }
    if let Some(session) = filter.session_id {
        select = select.filter(Column::SessionId.eq(session));
    }
    if let Some(category) = &filter.category {
        select = select.filter(Column::Category.eq(category.as_str()));
    }
    if let Some(name) = &filter.name {
        select = select.filter(Column::Name.eq(name.as_str()));
    }
    if let Some(from) = filter.from {
        select = select.filter(Column::Timestamp.gte(from));
    }
    if let Some(to) = filter.to {
        select = select.filter(Column::Timestamp.lt(to));
    }
    if let Some(text) = &filter.text {
        // The JSON as text: PostgreSQL renders jsonb, SQLite keeps what was stored.
        // sea-query numbers `$1` for PostgreSQL and takes `?` as is for SQLite.
        let sql = match db.get_database_backend() {
            DbBackend::Postgres => "LOWER(CAST(data AS TEXT)) LIKE $1 ESCAPE '!'",
            _ => "LOWER(CAST(data AS TEXT)) LIKE ? ESCAPE '!'",
        };
        select = select.filter(Expr::cust_with_values(sql, [super::like_pattern(text)]));
    }
    Ok(select)
}

pub fn cursor(event: &events::Model) -> Cursor {
    Cursor {
        time: event.timestamp,
        id: event.id,
    }
}

#[tracing::instrument(skip_all)]
pub async fn page(
    db: &impl ConnectionTrait,
    filter: &EventFilter,
    request: &PageRequest,
) -> Result<Page<events::Model>, DbErr> {
    let select = select(db, filter).await?;
    let columns = (events::Column::Timestamp, events::Column::Id);
    keyset::page(db, select, columns, request, cursor).await
}

pub async fn find(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<events::Model>, DbErr> {
    events::Entity::find_by_id(id).one(db).await
}

pub async fn session(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<sessions::Model>, DbErr> {
    sessions::Entity::find_by_id(id).one(db).await
}

/// The session with this id in this application: the same id may be used by two applications.
pub async fn session_in(
    db: &impl ConnectionTrait,
    application_id: Uuid,
    id: Uuid,
) -> Result<Option<sessions::Model>, DbErr> {
    sessions::Entity::find()
        .filter(sessions::Column::ApplicationId.eq(application_id))
        .filter(sessions::Column::Id.eq(id))
        .one(db)
        .await
}
