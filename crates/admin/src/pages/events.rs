//! Events: the filtered table, its CSV export, one event, and one session's timeline.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use eye_entity::{applications, events};
use uuid::Uuid;

use crate::State;
use crate::auth::{self, Viewer};
use crate::error::PageError;
use crate::filter::{EventQuery, parse_cursor};
use crate::queries;
use crate::queries::events::{Order, Page, PageRequest, SearchError};
use crate::views::{Time, html, query_string, summary};

/// One row of an events table.
pub struct EventRow {
    pub application_id: Uuid,
    pub id: Uuid,
    pub time: Time,
    pub application: String,
    pub session: Uuid,
    pub category: String,
    pub name: String,
    pub data: String,
}

impl EventRow {
    fn new(event: &events::Model, names: &HashMap<Uuid, String>) -> Self {
        Self {
            application_id: event.application_id,
            id: event.id,
            time: event.timestamp.into(),
            application: names
                .get(&event.application_id)
                .cloned()
                .unwrap_or_default(),
            session: event.session_id,
            category: event.category.clone(),
            name: event.name.clone(),
            data: summary(&event.data, 120),
        }
    }
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    viewer: Option<Viewer>,
    query: EventQuery,
    applications: Vec<applications::Model>,
    rows: Vec<EventRow>,
    next_href: Option<String>,
    prev_href: Option<String>,
    first_href: String,
    csv_href: String,
    /// Why no rows are shown although some may match.
    notice: Option<String>,
}

fn request(query: &EventQuery, limit: u64, order: Order) -> Result<PageRequest, PageError> {
    Ok(PageRequest {
        after: parse_cursor(&query.after)?,
        before: parse_cursor(&query.before)?,
        limit,
        order,
    })
}

#[tracing::instrument(skip_all)]
pub async fn list(
    request_: HttpRequest,
    state: web::Data<State>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer(&request_, &state).await?;
    let query = query.into_inner();
    let filter = query.filter()?;
    let paging = request(&query, state.page_size, Order::NewestFirst)?;
    // A text search that runs out of time shows the filters again with what to change.
    let (found, notice) =
        match queries::events::search(&state.reads, &filter, &paging, state.search_timeout).await {
            Ok(found) => (found, None),
            Err(e @ SearchError::Timeout(_)) => (Page::empty(), Some(e.to_string())),
            Err(SearchError::Db(e)) => return Err(e.into()),
        };
    let names = queries::application_names(&state.db).await?;
    let link = |after: String, before: String| {
        let q = EventQuery {
            after,
            before,
            ..query.first_page()
        };
        format!("/events{}", query_string(&q))
    };
    let page = EventsPage {
        viewer: Some(viewer),
        applications: eye_entity::tokens::applications(&state.db).await?,
        rows: found
            .rows
            .iter()
            .map(|e| EventRow::new(e, &names))
            .collect(),
        next_href: found.next.map(|c| link(c.encode(), String::new())),
        prev_href: found.prev.map(|c| link(String::new(), c.encode())),
        first_href: link(String::new(), String::new()),
        csv_href: format!("/events.csv{}", query_string(&query.first_page())),
        query,
        notice,
    };
    let mut response = html(&page)?;
    if page.notice.is_some() {
        *response.status_mut() = actix_web::http::StatusCode::SERVICE_UNAVAILABLE;
    }
    Ok(response)
}

#[tracing::instrument(skip_all)]
pub async fn export(
    request: HttpRequest,
    state: web::Data<State>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, PageError> {
    auth::viewer(&request, &state).await?;
    let filter = query.filter()?;
    let names = queries::application_names(&state.db).await?;
    let file = format!("events-{}.csv", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{file}\""),
        ))
        .streaming(crate::csv::stream(
            state.reads.clone(),
            filter,
            names,
            state.search_timeout,
        )))
}

#[derive(Template)]
#[template(path = "event.html")]
struct EventPage {
    viewer: Option<Viewer>,
    row: EventRow,
    received: Time,
    stored: Time,
    data: String,
    source: Option<String>,
}

#[tracing::instrument(skip_all)]
pub async fn detail(
    request: HttpRequest,
    state: web::Data<State>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer(&request, &state).await?;
    let (application_id, id) = parse_key(&path)?;
    let event = queries::events::find(&state.reads, application_id, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let names = queries::application_names(&state.db).await?;
    html(&EventPage {
        viewer: Some(viewer),
        row: EventRow::new(&event, &names),
        received: event.received_at.into(),
        stored: event.stored_at.into(),
        data: event.data.clone(),
        source: event.source.clone(),
    })
}

#[derive(Template)]
#[template(path = "session.html")]
struct SessionPage {
    viewer: Option<Viewer>,
    id: Uuid,
    application: String,
    first_seen: Time,
    last_seen: Time,
    count: i64,
    rows: Vec<EventRow>,
    next_href: Option<String>,
    prev_href: Option<String>,
}

#[tracing::instrument(skip_all)]
pub async fn session(
    request_: HttpRequest,
    state: web::Data<State>,
    path: web::Path<(String, String)>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer(&request_, &state).await?;
    let (application_id, id) = parse_key(&path)?;
    let session = queries::events::session(&state.reads, application_id, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let filter = crate::filter::EventFilter {
        application_id: Some(application_id),
        session_id: Some(id),
        ..Default::default()
    };
    let found = queries::events::page(
        &state.reads,
        &filter,
        &request(&query, state.page_size, Order::OldestFirst)?,
    )
    .await?;
    let names = queries::application_names(&state.db).await?;
    let link = |key: &str, cursor: crate::filter::Cursor| {
        format!("/sessions/{application_id}/{id}?{key}={}", cursor.encode())
    };
    html(&SessionPage {
        viewer: Some(viewer),
        id,
        application: names
            .get(&session.application_id)
            .cloned()
            .unwrap_or_default(),
        first_seen: session.first_seen.into(),
        last_seen: session.last_seen.into(),
        count: session.event_count,
        rows: found
            .rows
            .iter()
            .map(|e| EventRow::new(e, &names))
            .collect(),
        next_href: found.next.map(|c| link("after", c)),
        prev_href: found.prev.map(|c| link("before", c)),
    })
}

/// `(application id, id)` from a path; anything else is a page that does not exist.
fn parse_key(path: &(String, String)) -> Result<(Uuid, Uuid), PageError> {
    let parse = |s: &str| Uuid::parse_str(s).map_err(|_| PageError::NotFound);
    Ok((parse(&path.0)?, parse(&path.1)?))
}
