//! Live: events of every application as they are stored, without reloading. The page only
//! draws the filters and an empty table; `/static/live.js` fills it from `/live/stream`, which
//! the browser opens with the admin session (an `EventSource` cannot send a token).

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use eye_entity::applications;

use crate::State;
use crate::auth::{self, Viewer};
use crate::error::PageError;
use crate::live::{self, LiveFilter, StreamQuery};
use crate::queries;

/// Rows the page keeps; older ones leave as new ones come.
const ROWS: usize = 200;

#[derive(Template)]
#[template(path = "live.html")]
struct LivePage {
    viewer: Option<Viewer>,
    query: StreamQuery,
    applications: Vec<applications::Model>,
    stream_href: String,
    rows: usize,
}

#[tracing::instrument(skip_all)]
pub async fn show(
    request: HttpRequest,
    state: web::Data<State>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer(&request, &state).await?;
    let query = query.into_inner();
    // Checked here too, so a wrong filter shows on the page rather than as a dead stream.
    LiveFilter::parse(&query, live::Applications::All)?;
    let stream_href = match request.query_string() {
        "" => "/live/stream".to_owned(),
        filters => format!("/live/stream?{filters}"),
    };
    let page = LivePage {
        viewer: Some(viewer),
        query,
        applications: eye_entity::tokens::applications(&state.db).await?,
        stream_href,
        rows: ROWS,
    };
    crate::views::html(&page)
}

/// The page's stream: every application, as the admin sees them all.
#[tracing::instrument(skip_all)]
pub async fn stream(
    request: HttpRequest,
    state: web::Data<State>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    auth::viewer(&request, &state).await?;
    let names = queries::application_names(&state.db)
        .await
        .map_err(PageError::from)?;
    let filter = LiveFilter::parse(&query, live::named(&query.application, &names))
        .map_err(PageError::from)?;
    Ok(live::stream(&state.live, state.db.clone(), filter, names).await?)
}
