//! The JSON read api for programs, with `events:read` tokens: the same filters and cursors as
//! the pages. A token reads its own application's data only, unless its row also grants
//! `events:read:all`. Errors are `application/problem+json` like the ingestion api's.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use eye_auth::{AuthError, Grant};
use eye_core::token::Scope;
use eye_entity::{events, rejected_events};
use eye_http::Problem;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::State;
use crate::filter::{Cursor, EventFilter, EventQuery, FilterError, parse_cursor, parse_limit};
use crate::live::{self, Applications, LiveFilter, StreamQuery};
use crate::metrics::ReadApplication;
use crate::queries::events::{Order, PageRequest, SearchError};
use crate::queries::{self, rejected::RejectedQuery};

pub fn routes(config: &mut web::ServiceConfig) {
    // A query string that does not even parse (a field given twice) is a problem like any bad
    // filter, not actix's plain-text 400.
    let query = web::QueryConfig::default()
        .error_handler(|error, _| ReadError::Query(error.to_string()).into());
    config.service(
        web::scope("/api/v1")
            .app_data(query)
            .route("/events", web::get().to(list_events))
            .route("/events/stream", web::get().to(stream_events))
            .route("/trends/stream", web::get().to(crate::trends::stream))
            .route("/sessions/{id}", web::get().to(session))
            .route("/rejected-events", web::get().to(list_rejected))
            .route("/stats/counts", web::get().to(crate::stats::counts))
            .route("/stats/sessions", web::get().to(crate::stats::sessions))
            .service(
                web::resource("/reports")
                    .app_data(web::PayloadConfig::new(crate::reports::MAX_BODY_BYTES))
                    .route(web::post().to(crate::reports::create)),
            )
            .route("/reports/{id}", web::get().to(crate::reports::show))
            .route("/reports/{id}/csv", web::get().to(crate::reports::csv)),
    );
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("the query string is not valid: {0}")]
    Query(String),
    #[error("`application_id` is not a UUID")]
    ApplicationId,
    #[error(
        "this token reads every application: name the session's application with `?application_id=`"
    )]
    ApplicationRequired,
    #[error("no session has this id")]
    NotFound,
    #[error(transparent)]
    SearchTimeout(SearchError),
    #[error(
        "the statistics took longer than {} s and were stopped: narrow the window or group by \
         less, and try again",
        .0.as_secs_f64()
    )]
    StatsTimeout(std::time::Duration),
    #[error("the database could not answer")]
    Db(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Stream(#[from] live::StreamError),
    #[error(transparent)]
    Report(#[from] crate::reports::ReportError),
}

impl From<SearchError> for ReadError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Db(e) => ReadError::Db(e),
            timeout @ SearchError::Timeout(_) => ReadError::SearchTimeout(timeout),
        }
    }
}

impl ReadError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ReadError::Auth(e) => e.code(),
            ReadError::Filter(_) | ReadError::Query(_) | ReadError::ApplicationId => {
                "invalid_filter"
            }
            ReadError::ApplicationRequired => "application_required",
            ReadError::NotFound => "not_found",
            ReadError::SearchTimeout(_) => "search_timeout",
            ReadError::StatsTimeout(_) => "stats_timeout",
            ReadError::Db(_) => "database_unavailable",
            ReadError::Stream(_) => "live_unavailable",
            ReadError::Report(e) => e.code(),
        }
    }
}

impl ResponseError for ReadError {
    fn status_code(&self) -> StatusCode {
        match self {
            ReadError::Auth(e) => e.status_code(),
            ReadError::Filter(_)
            | ReadError::Query(_)
            | ReadError::ApplicationId
            | ReadError::ApplicationRequired => StatusCode::BAD_REQUEST,
            ReadError::NotFound => StatusCode::NOT_FOUND,
            ReadError::SearchTimeout(_) | ReadError::StatsTimeout(_) | ReadError::Db(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ReadError::Stream(e) => e.status_code(),
            ReadError::Report(e) => e.status(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ReadError::Auth(e) => return e.error_response(),
            ReadError::Stream(e) => return e.error_response(),
            _ => {}
        }
        let status = self.status_code();
        eye_http::problem::log(status, self.code(), self);
        let title = status.canonical_reason().unwrap_or("Error");
        Problem::new(status, title, self.code(), self.to_string()).response()
    }
}

/// A stored event.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Event)]
pub(crate) struct EventJson<'a> {
    id: Uuid,
    application_id: Uuid,
    application: Option<&'a str>,
    session_id: Uuid,
    category: &'a str,
    name: &'a str,
    /// `data` exactly as stored (numbers as sent, never through `f64`).
    #[schema(value_type = Value)]
    data: &'a serde_json::value::RawValue,
    /// When it happened, RFC 3339 in UTC to the microsecond.
    #[schema(format = DateTime)]
    timestamp: String,
    /// When the api took it.
    #[schema(format = DateTime)]
    received_at: String,
    /// For an event mapped from another format (a Segment message), that message less what
    /// went into `data`: its `context`, `userId`, `anonymousId` and the rest. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    source: Option<&'a serde_json::value::RawValue>,
}

/// The request's grant to read, noted on the request for the metrics.
pub(crate) async fn authorize(state: &State, request: &HttpRequest) -> Result<Grant, ReadError> {
    let grant = state.gate.authorize(request, Scope::EventsRead).await?;
    request
        .extensions_mut()
        .insert(ReadApplication(grant.application_name.clone()));
    Ok(grant)
}

/// Stored JSON text as a raw JSON value; the database only ever holds valid JSON.
fn raw(text: &str) -> &serde_json::value::RawValue {
    serde_json::from_str(text).unwrap_or(serde_json::value::RawValue::NULL)
}

pub(crate) fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn event_json<'a>(e: &'a events::Model, names: &'a HashMap<Uuid, String>) -> EventJson<'a> {
    EventJson {
        id: e.id,
        application_id: e.application_id,
        application: names.get(&e.application_id).map(String::as_str),
        session_id: e.session_id,
        category: &e.category,
        name: &e.name,
        data: raw(&e.data),
        timestamp: rfc3339(e.timestamp),
        received_at: rfc3339(e.received_at),
        source: e.source.as_deref().map(raw),
    }
}

/// Which applications a read token sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// `events:read:all`: every application.
    All,
    /// The token's own application only.
    Own(Uuid),
}

impl Reach {
    pub(crate) fn of(grant: &Grant) -> Self {
        if grant.allows(Scope::EventsReadAll) {
            Reach::All
        } else {
            Reach::Own(grant.application_id)
        }
    }

    /// The application filter (a name) a request reads with: its own application when it named
    /// none. `None` when it named another application, which this token cannot see.
    pub(crate) fn narrow(
        self,
        asked: Option<String>,
        names: &HashMap<Uuid, String>,
    ) -> Option<Option<String>> {
        match self {
            Reach::All => Some(asked),
            Reach::Own(id) => {
                let own = names.get(&id)?;
                match asked {
                    Some(asked) if asked != *own => None,
                    _ => Some(Some(own.clone())),
                }
            }
        }
    }

    /// The application whose session `asked` names; a token that reads every application
    /// must name one, since two applications may use the same session id.
    fn session_application(self, asked: Option<Uuid>) -> Result<Uuid, ReadError> {
        match (self, asked) {
            (Reach::All, Some(asked)) => Ok(asked),
            (Reach::All, None) => Err(ReadError::ApplicationRequired),
            (Reach::Own(own), Some(asked)) if asked != own => Err(ReadError::NotFound),
            (Reach::Own(own), _) => Ok(own),
        }
    }
}

fn empty_page(key: &'static str) -> HttpResponse {
    HttpResponse::Ok().json(Listing::<Value> {
        session: None,
        key,
        rows: Vec::new(),
        next_cursor: None,
        prev_cursor: None,
    })
}

fn encode(cursor: Option<Cursor>) -> Option<String> {
    cursor.map(|c| c.encode())
}

fn page_request(
    after: &str,
    before: &str,
    limit: &str,
    max: u64,
    order: Order,
) -> Result<PageRequest, FilterError> {
    Ok(PageRequest {
        after: parse_cursor(after)?,
        before: parse_cursor(before)?,
        limit: parse_limit(limit, max)?,
        order,
    })
}

/// Events matching the filters, newest first; `after=<next_cursor>` gives the next page.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "read",
    operation_id = "list_events",
    params(EventQuery),
    responses((status = 200, description = "A page of events, newest first.", body = crate::openapi::EventsPage)),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn list_events(
    request: HttpRequest,
    state: web::Data<State>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, ReadError> {
    let grant = authorize(&state, &request).await?;
    let mut filter = query.filter()?;
    let paging = page_request(
        &query.after,
        &query.before,
        &query.limit,
        state.page_size,
        Order::NewestFirst,
    )?;
    let names = queries::application_names(&state.db).await?;
    let Some(application) = Reach::of(&grant).narrow(filter.application.take(), &names) else {
        return Ok(empty_page("events"));
    };
    filter.application = application;
    let found =
        queries::events::search(&state.reads, &filter, &paging, state.search_timeout).await?;
    let events: Vec<_> = found.rows.iter().map(|e| event_json(e, &names)).collect();
    Ok(HttpResponse::Ok().json(Listing {
        session: None,
        key: "events",
        rows: events,
        next_cursor: encode(found.next),
        prev_cursor: encode(found.prev),
    }))
}

/// Events and rejected events as they are stored, as Server-Sent Events (`event: event` or
/// `event: rejected`, the JSON in `data:`), filtered like the listing.
#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    tag = "read",
    operation_id = "stream_events",
    params(StreamQuery),
    responses((
        status = 200,
        description = "Server-Sent Events as they are stored: `event: event` or `event: rejected` with the event as JSON in `data:`; `: keep-alive` comments every 15 s; `event: dropped` (the client read too slowly) or `event: closed` (the admin stops) end the stream.",
        content_type = "text/event-stream",
        body = String
    )),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn stream_events(
    request: HttpRequest,
    state: web::Data<State>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ReadError> {
    let (applications, names) = stream_reach(&state, &request, &query.application).await?;
    let filter = LiveFilter::parse(&query, applications)?;
    Ok(live::stream(&state.live, state.db.clone(), filter, names).await?)
}

/// The applications a stream shows: those the token reads, narrowed to `asked` (a name, or
/// empty for all of them); with every application's name.
pub(crate) async fn stream_reach(
    state: &State,
    request: &HttpRequest,
    asked: &str,
) -> Result<(Applications, HashMap<Uuid, String>), ReadError> {
    let grant = authorize(state, request).await?;
    let names = queries::application_names(&state.db).await?;
    let asked = Some(asked.trim().to_owned()).filter(|a| !a.is_empty());
    let applications = match Reach::of(&grant).narrow(asked, &names) {
        None => Applications::None,
        Some(None) => Applications::All,
        Some(Some(name)) => live::named(&name, &names),
    };
    Ok((applications, names))
}

/// The query string of one session's page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
struct SessionQuery {
    /// Whose session (an application id): required with an `events:read:all` token.
    #[param(format = Uuid)]
    application_id: String,
    /// `next_cursor` of the previous page, for the next one (also accepted as `cursor`).
    after: String,
    /// `prev_cursor` of a page, for the page before it.
    before: String,
    /// Rows per page, from 1 to `admin_page_size`.
    limit: String,
}

/// One session of one application with its events in time order, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}",
    tag = "read",
    operation_id = "get_session",
    params(("id" = Uuid, Path, description = "The session's id."), SessionQuery),
    responses((status = 200, description = "The session and a page of its events, oldest first.", body = crate::openapi::SessionPage)),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn session(
    request: HttpRequest,
    state: web::Data<State>,
    id: web::Path<String>,
    query: web::Query<SessionQuery>,
) -> Result<HttpResponse, ReadError> {
    let grant = authorize(&state, &request).await?;
    let id = Uuid::parse_str(&id).map_err(|_| ReadError::Filter(FilterError::Session))?;
    let asked = match query.application_id.trim() {
        "" => None,
        text => Some(Uuid::parse_str(text).map_err(|_| ReadError::ApplicationId)?),
    };
    let application_id = Reach::of(&grant).session_application(asked)?;
    let session = queries::events::session(&state.reads, application_id, id)
        .await?
        .ok_or(ReadError::NotFound)?;
    let names = queries::application_names(&state.db).await?;
    let filter = EventFilter {
        application_id: Some(application_id),
        session_id: Some(id),
        ..Default::default()
    };
    let paging = page_request(
        &query.after,
        &query.before,
        &query.limit,
        state.page_size,
        Order::OldestFirst,
    )?;
    let found = queries::events::page(&state.reads, &filter, &paging).await?;
    let events: Vec<_> = found.rows.iter().map(|e| event_json(e, &names)).collect();
    Ok(HttpResponse::Ok().json(Listing {
        session: Some(json!({
            "id": session.id,
            "application_id": session.application_id,
            "application": names.get(&session.application_id),
            "first_seen": rfc3339(session.first_seen),
            "last_seen": rfc3339(session.last_seen),
            "event_count": session.event_count,
        })),
        key: "events",
        rows: events,
        next_cursor: encode(found.next),
        prev_cursor: encode(found.prev),
    }))
}

/// An event the worker refused, with why.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = RejectedEvent)]
pub(crate) struct RejectedJson<'a> {
    id: Uuid,
    application_id: Uuid,
    application: Option<&'a str>,
    category: &'a str,
    name: &'a str,
    /// The event exactly as kept, not re-read through a lossy tree.
    #[schema(value_type = Value)]
    payload: &'a serde_json::value::RawValue,
    /// What is wrong with it: `[{field, code, message}]`.
    #[schema(value_type = Vec<eye_core::FieldError>)]
    reasons: &'a Value,
    #[schema(format = DateTime)]
    received_at: String,
    #[schema(format = DateTime)]
    rejected_at: String,
}

fn rejected_json<'a>(
    row: &'a rejected_events::Model,
    names: &'a HashMap<Uuid, String>,
) -> RejectedJson<'a> {
    RejectedJson {
        id: row.id,
        application_id: row.application_id,
        application: names.get(&row.application_id).map(String::as_str),
        category: &row.category,
        name: &row.name,
        payload: raw(&row.payload),
        reasons: &row.reasons,
        received_at: rfc3339(row.received_at),
        rejected_at: rfc3339(row.rejected_at),
    }
}

/// A page of rows under `key`, with the cursors around it. Serialized as it stands (never
/// through `serde_json::Value`), so raw JSON in the rows stays exactly as stored.
struct Listing<T> {
    session: Option<Value>,
    key: &'static str,
    rows: Vec<T>,
    next_cursor: Option<String>,
    prev_cursor: Option<String>,
}

impl<T: Serialize> Serialize for Listing<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        if let Some(session) = &self.session {
            map.serialize_entry("session", session)?;
        }
        map.serialize_entry(self.key, &self.rows)?;
        map.serialize_entry("next_cursor", &self.next_cursor)?;
        map.serialize_entry("prev_cursor", &self.prev_cursor)?;
        map.end()
    }
}

/// Rejected events, newest first, by application and reason code.
#[utoipa::path(
    get,
    path = "/api/v1/rejected-events",
    tag = "read",
    operation_id = "list_rejected_events",
    params(RejectedQuery),
    responses((status = 200, description = "A page of rejected events, newest first.", body = crate::openapi::RejectedPage)),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn list_rejected(
    request: HttpRequest,
    state: web::Data<State>,
    query: web::Query<RejectedQuery>,
) -> Result<HttpResponse, ReadError> {
    let grant = authorize(&state, &request).await?;
    let mut filter = query.filter()?;
    let paging = page_request(
        &query.after,
        &query.before,
        &query.limit,
        state.page_size,
        Order::NewestFirst,
    )?;
    let names = queries::application_names(&state.db).await?;
    let Some(application) = Reach::of(&grant).narrow(filter.application.take(), &names) else {
        return Ok(empty_page("rejected_events"));
    };
    filter.application = application;
    let found = queries::rejected::page(&state.reads, &filter, &paging).await?;
    let rows: Vec<_> = found
        .rows
        .iter()
        .map(|r| rejected_json(r, &names))
        .collect();
    Ok(HttpResponse::Ok().json(Listing {
        session: None,
        key: "rejected_events",
        rows,
        next_cursor: encode(found.next),
        prev_cursor: encode(found.prev),
    }))
}
