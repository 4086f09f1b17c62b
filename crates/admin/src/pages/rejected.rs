//! Rejected events: what was refused, from which application, and why.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use eye_entity::applications;
use uuid::Uuid;

use crate::State;
use crate::auth::{self, Viewer};
use crate::error::PageError;
use crate::filter::parse_cursor;
use crate::queries::{
    self, events::Order, events::PageRequest, rejected::Reason, rejected::RejectedQuery,
};
use crate::views::{Time, html, query_string};

pub struct RejectedRow {
    pub id: Uuid,
    pub rejected_at: Time,
    pub received_at: Time,
    pub application: String,
    pub category: String,
    pub name: String,
    pub reasons: Vec<Reason>,
    pub payload: String,
}

#[derive(Template)]
#[template(path = "rejected.html")]
struct RejectedPage {
    viewer: Option<Viewer>,
    query: RejectedQuery,
    applications: Vec<applications::Model>,
    rows: Vec<RejectedRow>,
    next_href: Option<String>,
    prev_href: Option<String>,
    first_href: String,
    today_href: String,
}

#[tracing::instrument(skip_all)]
pub async fn list(
    request: HttpRequest,
    state: web::Data<State>,
    query: web::Query<RejectedQuery>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer(&request, &state).await?;
    let query = query.into_inner();
    let page_request = PageRequest {
        after: parse_cursor(&query.after)?,
        before: parse_cursor(&query.before)?,
        limit: state.page_size,
        order: Order::NewestFirst,
    };
    let found = queries::rejected::page(&state.reads, &query.filter()?, &page_request).await?;
    let names = queries::application_names(&state.db).await?;
    let rows = found
        .rows
        .iter()
        .map(|row| RejectedRow {
            id: row.id,
            rejected_at: row.rejected_at.into(),
            received_at: row.received_at.into(),
            application: names.get(&row.application_id).cloned().unwrap_or_default(),
            category: row.category.clone(),
            name: row.name.clone(),
            reasons: queries::rejected::reasons(row),
            payload: row.payload.clone(),
        })
        .collect();
    let link = |after: String, before: String| {
        let q = RejectedQuery {
            after,
            before,
            ..query.first_page()
        };
        format!("/rejected{}", query_string(&q))
    };
    html(&RejectedPage {
        viewer: Some(viewer),
        applications: eye_entity::tokens::applications(&state.db).await?,
        rows,
        next_href: found.next.map(|c| link(c.encode(), String::new())),
        prev_href: found.prev.map(|c| link(String::new(), c.encode())),
        first_href: link(String::new(), String::new()),
        today_href: format!("/rejected?from={}", chrono::Utc::now().format("%Y-%m-%d")),
        query,
    })
}
