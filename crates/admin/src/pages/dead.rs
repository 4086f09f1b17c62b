//! Dead letters: messages no worker could read, with replay and discard, the same operations
//! as `eye dead`. Replay publishes through this process's queue publisher, as the api would.

use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use eye_core::queue::PublishError;
use eye_entity::dead::{self, Selection, Summary};
use serde::Deserialize;
use uuid::Uuid;

use super::CsrfForm;
use crate::State;
use crate::auth::{self, Viewer};
use crate::error::PageError;
use crate::filter::{Cursor, parse_cursor};
use crate::views::{Time, html};

/// How much of a body the detail page shows; a message can be megabytes.
const SHOWN_BYTES: usize = 256 * 1024;
/// Dead letters one "Replay all" publishes, oldest first; the rest wait for the next click (or
/// `eye dead replay --all`), so a request stays short.
const REPLAY_ALL_AT_ONCE: u64 = 1000;

pub struct DeadRow {
    pub id: Uuid,
    pub last: Time,
    pub first: Time,
    pub count: i64,
    pub reason: String,
    pub size: i64,
}

impl From<Summary> for DeadRow {
    fn from(s: Summary) -> Self {
        Self {
            id: s.id,
            last: s.last_dead_at.into(),
            first: s.first_dead_at.into(),
            count: s.count,
            reason: s.reason,
            size: s.size,
        }
    }
}

#[derive(Template)]
#[template(path = "dead_letters.html")]
struct ListPage {
    viewer: Option<Viewer>,
    csrf: String,
    rows: Vec<DeadRow>,
    total: u64,
    next_href: Option<String>,
    paged: bool,
    notice: Option<String>,
    can_replay: bool,
}

#[derive(Template)]
#[template(path = "dead_letter.html")]
struct DetailPage {
    viewer: Option<Viewer>,
    csrf: String,
    row: DeadRow,
    headers: String,
    body: String,
    body_cut: bool,
    can_replay: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    after: String,
    #[serde(default)]
    replayed: Option<u64>,
    #[serde(default)]
    dead_again: Option<u64>,
    #[serde(default)]
    discarded: Option<u64>,
}

impl ListQuery {
    fn notice(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(n) = self.replayed {
            parts.push(format!(
                "{n} replayed: back on the queue and removed from this list."
            ));
        }
        if let Some(n) = self.dead_again.filter(|n| *n > 0) {
            parts.push(format!(
                "{n} published but dead-lettered again at once, so kept (the count went up)."
            ));
        }
        if let Some(n) = self.discarded {
            parts.push(format!("{n} discarded."));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

#[tracing::instrument(skip_all)]
pub async fn list(
    request: HttpRequest,
    state: web::Data<State>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer(&request, &state).await?;
    let after = parse_cursor(&query.after)?;
    let (rows, next) =
        dead::list(&state.db, state.page_size, after.map(|c| (c.time, c.id))).await?;
    html(&ListPage {
        csrf: viewer.csrf.clone(),
        viewer: Some(viewer),
        rows: rows.into_iter().map(DeadRow::from).collect(),
        total: dead::count(&state.db).await?,
        next_href: next
            .map(|(time, id)| format!("/dead-letters?after={}", Cursor { time, id }.encode())),
        paged: after.is_some(),
        notice: query.notice(),
        can_replay: state.publisher.is_some(),
    })
}

#[tracing::instrument(skip_all)]
pub async fn detail(
    request: HttpRequest,
    state: web::Data<State>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer(&request, &state).await?;
    let row = dead::find(&state.db, id.into_inner())
        .await?
        .ok_or(PageError::NotFound)?;
    let headers = serde_json::from_str::<serde_json::Value>(&row.headers)
        .and_then(|h| serde_json::to_string_pretty(&h))
        .unwrap_or_else(|_| row.headers.clone());
    let body_cut = row.body.len() > SHOWN_BYTES;
    let body = String::from_utf8_lossy(&row.body[..row.body.len().min(SHOWN_BYTES)]).into_owned();
    html(&DetailPage {
        csrf: viewer.csrf.clone(),
        viewer: Some(viewer),
        row: DeadRow {
            id: row.id,
            last: row.last_dead_at.into(),
            first: row.first_dead_at.into(),
            count: row.count,
            reason: row.reason,
            size: i64::try_from(row.body.len()).unwrap_or(i64::MAX),
        },
        headers,
        body,
        body_cut,
        can_replay: state.publisher.is_some(),
    })
}

#[tracing::instrument(skip_all)]
pub async fn replay_one(
    request: HttpRequest,
    state: web::Data<State>,
    id: web::Path<Uuid>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer_posting(&request, &state, &form.csrf).await?;
    let id = id.into_inner();
    let done = replay(&state, &Selection::Ids(vec![id])).await?;
    if !done.unknown.is_empty() {
        return Err(PageError::NotFound);
    }
    tracing::info!(user = %viewer.username, dead_letter = %id, "dead letter replayed");
    Ok(back(&done))
}

#[tracing::instrument(skip_all)]
pub async fn replay_all(
    request: HttpRequest,
    state: web::Data<State>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer_posting(&request, &state, &form.csrf).await?;
    let done = replay(&state, &Selection::Oldest(REPLAY_ALL_AT_ONCE)).await?;
    tracing::info!(user = %viewer.username, replayed = done.replayed.len(), "dead letters replayed");
    Ok(back(&done))
}

#[tracing::instrument(skip_all)]
pub async fn discard(
    request: HttpRequest,
    state: web::Data<State>,
    id: web::Path<Uuid>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer_posting(&request, &state, &form.csrf).await?;
    let id = id.into_inner();
    if dead::discard(&state.db, &[id]).await? == 0 {
        return Err(PageError::NotFound);
    }
    state.dashboard.forget();
    tracing::info!(user = %viewer.username, dead_letter = %id, "dead letter discarded");
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, "/dead-letters?discarded=1"))
        .finish())
}

/// Replays through the process's publisher; a failed publish is an error page saying what was
/// already done, the failed row and the rest staying in the table.
async fn replay(
    state: &State,
    selection: &Selection,
) -> Result<dead::Replayed<PublishError>, PageError> {
    let publisher = state.publisher.as_ref().ok_or_else(|| {
        PageError::Replay("this admin has no queue to publish to; set amqp_url".into())
    })?;
    let mut done = dead::replay(&state.db, selection, async |body: &[u8]| {
        publisher.publish(body).await
    })
    .await?;
    state.dashboard.forget();
    match done.failed.take() {
        Some((id, e)) => Err(PageError::Replay(format!(
            "dead letter {id} could not be published ({e}); it is kept. {} replayed before it.",
            done.replayed.len()
        ))),
        None => Ok(done),
    }
}

fn back(done: &dead::Replayed<PublishError>) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((
            LOCATION,
            format!(
                "/dead-letters?replayed={}&dead_again={}",
                done.replayed.len(),
                done.dead_again.len()
            ),
        ))
        .finish()
}
