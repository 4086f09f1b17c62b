//! Reports: ask for a report job, follow it while it runs, download its CSV. The same jobs
//! as `POST /api/v1/reports`, for every application.

use std::collections::HashMap;

use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::Utc;
use eye_entity::report_jobs::{self, Kind};
use eye_entity::{applications, reports};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Deserialize;
use uuid::Uuid;

use crate::State;
use crate::auth::{self, Viewer};
use crate::error::PageError;
use crate::read_api::Reach;
use crate::reports::{NewReport, download, report_id, start, visible};
use crate::views::{Time, html};

/// Reports listed, newest first.
const LISTED: u64 = 50;

pub struct ReportRow {
    pub id: Uuid,
    pub created: Time,
    pub kind: &'static str,
    pub application: String,
    pub from: String,
    pub to: String,
    pub filters: String,
    pub requested_by: String,
    pub status: String,
    pub reason: String,
    pub rows: Option<i64>,
    pub bytes: Option<i64>,
    pub expires: Time,
}

#[derive(Template)]
#[template(path = "reports.html")]
struct ReportsPage {
    viewer: Option<Viewer>,
    csrf: String,
    applications: Vec<applications::Model>,
    kinds: Vec<(&'static str, &'static str)>,
    rows: Vec<ReportRow>,
    /// Whether a report is still running: the page then reloads itself.
    running: bool,
    /// Whether this admin can queue jobs at all.
    can_start: bool,
    started: Option<Uuid>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    started: String,
}

fn minute(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

fn row(report: reports::Model, names: &HashMap<Uuid, String>) -> ReportRow {
    let filters = [("category", &report.category), ("name", &report.name)]
        .into_iter()
        .filter_map(|(field, value)| value.as_ref().map(|v| format!("{field} = {v}")))
        .collect::<Vec<_>>()
        .join(", ");
    ReportRow {
        id: report.id,
        created: report.created_at.into(),
        kind: Kind::parse(&report.kind).map_or("?", Kind::title),
        application: match report.application_id {
            None => "every application".into(),
            Some(id) => names.get(&id).cloned().unwrap_or_else(|| id.to_string()),
        },
        from: minute(report.window_from),
        to: minute(report.window_to),
        filters,
        requested_by: report.requested_by,
        status: report.status,
        reason: report.reason.unwrap_or_default(),
        rows: report.row_count,
        bytes: report.byte_count,
        expires: report.expires_at.into(),
    }
}

#[tracing::instrument(skip_all)]
pub async fn list(
    request: HttpRequest,
    state: web::Data<State>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer(&request, &state).await?;
    let applications = eye_entity::tokens::applications(&state.db).await?;
    let names: HashMap<Uuid, String> = applications
        .iter()
        .map(|a| (a.id, a.name.clone()))
        .collect();
    let shown = reports::Entity::find()
        .filter(
            Condition::any()
                .add(reports::Column::Status.eq(report_jobs::RUNNING))
                .add(reports::Column::ExpiresAt.gte(Utc::now())),
        )
        .order_by_desc(reports::Column::CreatedAt)
        .limit(LISTED)
        .all(&state.db)
        .await?;
    let rows: Vec<ReportRow> = shown.into_iter().map(|r| row(r, &names)).collect();
    html(&ReportsPage {
        csrf: viewer.csrf.clone(),
        viewer: Some(viewer),
        applications,
        kinds: Kind::ALL.iter().map(|k| (k.name(), k.title())).collect(),
        running: rows.iter().any(|r| r.status == report_jobs::RUNNING),
        rows,
        can_start: state.reports.is_some(),
        started: Uuid::parse_str(&query.started).ok(),
    })
}

/// The form's fields, as the api's request; `window` is empty for a custom window.
#[derive(Debug, Deserialize)]
pub struct StartForm {
    csrf: String,
    kind: String,
    #[serde(default)]
    window: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    application: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    name: String,
}

impl StartForm {
    fn report(&self) -> NewReport {
        NewReport {
            kind: Some(self.kind.clone()),
            window: Some(self.window.clone()),
            from: Some(self.from.clone()),
            to: Some(self.to.clone()),
            application: Some(self.application.clone()),
            category: Some(self.category.clone()),
            name: Some(self.name.clone()),
        }
    }
}

#[tracing::instrument(skip_all)]
pub async fn create(
    request: HttpRequest,
    state: web::Data<State>,
    form: web::Form<StartForm>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer_posting(&request, &state, &form.csrf).await?;
    let requested_by = format!("admin user {}", viewer.username);
    let job = form
        .report()
        .request(&state.db, Reach::All, requested_by)
        .await?;
    let report = start(&state, &job).await?;
    tracing::info!(user = %viewer.username, report = %report.id, "report asked for from the panel");
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, format!("/reports?started={}", report.id)))
        .finish())
}

#[tracing::instrument(skip_all)]
pub async fn csv(
    request: HttpRequest,
    state: web::Data<State>,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    auth::viewer(&request, &state).await?;
    let report = visible(&state, report_id(&id)?, Reach::All).await?;
    Ok(download(&state, report)?)
}
