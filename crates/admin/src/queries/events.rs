//! Stored events: filtered, paged, and the session they belong to.

use std::time::Duration;

use eye_entity::{events, sessions};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, Select,
};
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
    if let Some(id) = filter.application_id {
        select = select.filter(Column::ApplicationId.eq(id));
    }
    if let Some(session) = filter.session_id {
        select = select.filter(Column::SessionId.eq(session));
        if filter.application.is_none() && filter.application_id.is_none() {
            // The session index leads with the application: naming every application lets
            // the database look the session up in each (a few probes) instead of reading
            // every event (200 ms at 1,000,000 events). Every event's application has a row.
            select = select.filter(
                Column::ApplicationId.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(eye_entity::applications::Column::Id)
                        .from(eye_entity::applications::Entity)
                        .to_owned(),
                ),
            );
        }
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
        // sea-query numbers `$1` for PostgreSQL and takes `?` as is for SQLite.
        let pattern = super::TextPattern::new(text);
        let backend = db.get_database_backend();
        let data = super::searchable_data(backend);
        let condition = match backend {
            DbBackend::Postgres => {
                Expr::cust_with_values(format!("{data} ~ $1"), [pattern.regex()])
            }
            _ => Expr::cust_with_values(format!("{data} GLOB ?"), [pattern.glob()]),
        };
        select = select.filter(condition);
    }
    Ok(select)
}

pub fn cursor(event: &events::Model) -> Cursor {
    Cursor {
        time: event.timestamp,
        id: event.id,
    }
}

/// Why a search gave no page.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(
        "searching the text inside data took longer than {} s and was stopped: narrow the time \
         range, or add a category, name or session filter, and try again",
        .0.as_secs_f64()
    )]
    Timeout(Duration),
    #[error("the database could not answer")]
    Db(#[from] DbErr),
}

/// Like [`page`], but a search for text inside `data` runs under a statement timeout on
/// PostgreSQL (`SET LOCAL` in a read-only transaction of its own), because it reads every row
/// of the range until the page is full. SQLite has no statement timeout.
#[tracing::instrument(skip_all)]
pub async fn search(
    db: &DatabaseConnection,
    filter: &EventFilter,
    request: &PageRequest,
    timeout: Duration,
) -> Result<Page<events::Model>, SearchError> {
    if filter.text.is_none() || db.get_database_backend() != DbBackend::Postgres {
        return Ok(page(db, filter, request).await?);
    }
    let timed_out = |e: DbErr| {
        if super::is_statement_timeout(&e) {
            SearchError::Timeout(timeout)
        } else {
            SearchError::Db(e)
        }
    };
    let transaction = super::read_only(db, timeout).await?;
    let found = page(&transaction, filter, request)
        .await
        .map_err(timed_out)?;
    transaction.commit().await?;
    Ok(found)
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

pub async fn find(
    db: &impl ConnectionTrait,
    application_id: Uuid,
    id: Uuid,
) -> Result<Option<events::Model>, DbErr> {
    // On PostgreSQL an id may be stored twice under times more than a day apart (decision
    // 48): the first is the event.
    events::Entity::find_by_id((application_id, id))
        .order_by_asc(events::Column::Timestamp)
        .one(db)
        .await
}

/// One application's session.
pub async fn session(
    db: &impl ConnectionTrait,
    application_id: Uuid,
    id: Uuid,
) -> Result<Option<sessions::Model>, DbErr> {
    sessions::Entity::find_by_id((application_id, id))
        .one(db)
        .await
}
