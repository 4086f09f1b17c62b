//! Report jobs on the read api: ask for one (`POST /api/v1/reports`, answered `202` once its
//! job is queued), poll it, and download its CSV once complete. The Reports page asks and
//! downloads through the same functions. Jobs run on the workers
//! ([`eye_entity::report_jobs`]).

use actix_web::body::SizedStream;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_DISPOSITION, LOCATION};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{TimeDelta, Utc};
use eye_core::queue::PublishError;
use eye_entity::report_jobs::{self, Kind, Request};
use eye_entity::{applications, reports, rollups, tokens};
use sea_orm::{ConnectionTrait, EntityTrait};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::State;
use crate::filter::{FilterError, text};
use crate::read_api::{Reach, ReadError, authorize, rfc3339};

/// Largest request body: a report request is a handful of short fields.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024;

/// What a report should cover. Every field is text so that a bad value is named.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct NewReport {
    /// `events_by_type` (events per application, category and name, from the rollups),
    /// `sessions` (every session that began in the window) or `rejections` (every event
    /// rejected in the window, with its reasons and payload).
    #[schema(example = "events_by_type")]
    pub(crate) kind: Option<String>,
    /// `last_hour`, `last_day` or `last_week`, ending now. Give this or `from` and `to`;
    /// neither: the last day.
    pub(crate) window: Option<String>,
    /// UTC `YYYY-MM-DDTHH:MM[:SS]`, a date, or RFC 3339 with an offset; widened to whole
    /// minutes. Default: a day before `to`.
    pub(crate) from: Option<String>,
    /// Default: now.
    pub(crate) to: Option<String>,
    /// An application's name; a token without `events:read:all` reports on its own only.
    /// Absent: every application the token reads.
    pub(crate) application: Option<String>,
    /// Only this category (not for `sessions`).
    pub(crate) category: Option<String>,
    /// Only this name (not for `sessions`).
    pub(crate) name: Option<String>,
}

/// Why a report cannot be asked for as it is.
#[derive(Debug, thiserror::Error)]
pub enum ReportProblem {
    #[error("the body is not a report request: {0}")]
    Body(String),
    #[error("`kind` must be `events_by_type`, `sessions` or `rejections`")]
    Kind,
    #[error("`window` must be `last_hour`, `last_day` or `last_week`")]
    Window,
    #[error("give `window` or `from`/`to`, not both")]
    WindowAndRange,
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("a sessions report takes neither `category` nor `name`")]
    SessionTypes,
    #[error("no application is named `{0}`")]
    UnknownApplication(String),
    #[error("this token reports on its own application only")]
    OtherApplication,
}

fn window(name: &str) -> Option<TimeDelta> {
    match name {
        "last_hour" => Some(TimeDelta::hours(1)),
        "last_day" => Some(TimeDelta::days(1)),
        "last_week" => Some(TimeDelta::weeks(1)),
        _ => None,
    }
}

fn some_text(field: &Option<String>) -> Option<String> {
    field.as_deref().and_then(text)
}

impl NewReport {
    /// The job this asks for, for a reader who reaches `reach`.
    pub(crate) async fn request(
        &self,
        db: &impl ConnectionTrait,
        reach: Reach,
        requested_by: String,
    ) -> Result<Request, ReportError> {
        let Some(kind) = some_text(&self.kind).and_then(|k| Kind::parse(&k)) else {
            return Err(ReportProblem::Kind.into());
        };
        let (from, to) = match (some_text(&self.window), &self.from, &self.to) {
            (Some(_), from, to) if some_text(from).is_some() || some_text(to).is_some() => {
                return Err(ReportProblem::WindowAndRange.into());
            }
            (Some(name), _, _) => {
                let Some(length) = window(&name) else {
                    return Err(ReportProblem::Window.into());
                };
                let now = Utc::now();
                (rollups::minute_of(now - length), rollups::minute_from(now))
            }
            (None, from, to) => {
                crate::stats::window(from.as_deref().unwrap_or(""), to.as_deref().unwrap_or(""))
                    .map_err(ReportProblem::from)?
            }
        };
        let (category, name) = (some_text(&self.category), some_text(&self.name));
        if !kind.has_types() && (category.is_some() || name.is_some()) {
            return Err(ReportProblem::SessionTypes.into());
        }
        let asked = match some_text(&self.application) {
            None => None,
            Some(name) => match tokens::find_application(db, &name).await? {
                Some(application) => Some(application.id),
                None => return Err(ReportProblem::UnknownApplication(name).into()),
            },
        };
        let application_id = match (reach, asked) {
            (Reach::All, asked) => asked,
            (Reach::Own(own), Some(asked)) if asked != own => {
                return Err(ReportProblem::OtherApplication.into());
            }
            (Reach::Own(own), _) => Some(own),
        };
        Ok(Request {
            kind,
            application_id,
            from,
            to,
            category,
            name,
            requested_by,
        })
    }
}

/// Why a report could not be started or read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Problem(#[from] ReportProblem),
    #[error("no report has this id (reports are deleted once they expire)")]
    NotFound,
    #[error("the report is still running; ask again in a moment")]
    Running,
    #[error("the report failed: {0}")]
    Failed(String),
    #[error("this admin has no queue to run reports on: set amqp_url")]
    NoQueue,
    #[error("the report could not be queued ({0}); nothing was started: try again")]
    Publish(PublishError),
    #[error("the database could not answer")]
    Db(#[from] sea_orm::DbErr),
}

impl ReportError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ReportError::Problem(ReportProblem::OtherApplication) => "application_forbidden",
            ReportError::Problem(_) => "invalid_report",
            ReportError::NotFound => "not_found",
            ReportError::Running => "report_running",
            ReportError::Failed(_) => "report_failed",
            ReportError::NoQueue => "reports_unavailable",
            ReportError::Publish(e) => e.code(),
            ReportError::Db(_) => "database_unavailable",
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ReportError::Problem(ReportProblem::OtherApplication) => StatusCode::FORBIDDEN,
            ReportError::Problem(_) => StatusCode::BAD_REQUEST,
            ReportError::NotFound => StatusCode::NOT_FOUND,
            ReportError::Running | ReportError::Failed(_) => StatusCode::CONFLICT,
            ReportError::NoQueue | ReportError::Publish(_) | ReportError::Db(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// Records the job and queues it. If the queue does not confirm it, the job is withdrawn: a
/// refused request leaves nothing to run later.
pub(crate) async fn start(state: &State, request: &Request) -> Result<reports::Model, ReportError> {
    let publisher = state.reports.as_ref().ok_or(ReportError::NoQueue)?;
    let report = report_jobs::create(&state.db, request, state.report_limits.keep).await?;
    match publisher.publish(&report_jobs::message(report.id)).await {
        Ok(()) => {
            tracing::info!(report = %report.id, kind = %report.kind, "report asked for");
            Ok(report)
        }
        // It may have reached the queue: the job stays, and runs or fails like any other.
        Err(e @ PublishError::Unconfirmed(_)) => Err(ReportError::Publish(e)),
        Err(e) => {
            report_jobs::withdraw(&state.db, report.id).await?;
            Err(ReportError::Publish(e))
        }
    }
}

/// Report `id` if it exists, has not expired, and `reach` may read it.
pub(crate) async fn visible(
    state: &State,
    id: Uuid,
    reach: Reach,
) -> Result<reports::Model, ReportError> {
    let report = reports::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or(ReportError::NotFound)?;
    let expired = report.status != report_jobs::RUNNING && report.expires_at < Utc::now();
    let readable = match reach {
        Reach::All => true,
        Reach::Own(own) => report.application_id == Some(own),
    };
    if expired || !readable {
        return Err(ReportError::NotFound);
    }
    Ok(report)
}

/// The CSV of a complete report, streamed chunk by chunk with its length announced, so a
/// download cut short is seen as such.
pub(crate) fn download(state: &State, report: reports::Model) -> Result<HttpResponse, ReportError> {
    match report.status.as_str() {
        report_jobs::COMPLETE => {}
        report_jobs::FAILED => {
            return Err(ReportError::Failed(report.reason.unwrap_or_default()));
        }
        _ => return Err(ReportError::Running),
    }
    let length = u64::try_from(report.byte_count.unwrap_or(0)).unwrap_or(0);
    let filename = format!("eye-{}-{}.csv", report.kind, report.id);
    let db = state.db.clone();
    let chunks = futures_util::stream::try_unfold(0, move |seq| {
        let (db, report) = (db.clone(), report.clone());
        async move {
            let chunk = report_jobs::chunk(&db, &report, seq)
                .await
                .map_err(actix_web::error::ErrorServiceUnavailable)?;
            Ok::<_, actix_web::Error>(chunk.map(|body| (Bytes::from(body), seq + 1)))
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .body(SizedStream::new(length, chunks)))
}

/// A report's id from its path: what is not a UUID names no report.
pub(crate) fn report_id(text: &str) -> Result<Uuid, ReportError> {
    Uuid::parse_str(text).map_err(|_| ReportError::NotFound)
}

/// A report job as the api shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Report)]
pub(crate) struct ReportJson {
    id: Uuid,
    /// `events_by_type`, `sessions` or `rejections`.
    kind: String,
    /// `running`, `complete` or `failed`.
    status: String,
    /// The application covered; absent for every application.
    #[serde(skip_serializing_if = "Option::is_none")]
    application_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    application: Option<String>,
    #[schema(format = DateTime)]
    from: String,
    #[schema(format = DateTime)]
    to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    completed_at: Option<String>,
    /// When the report and its CSV are deleted.
    #[schema(format = DateTime)]
    expires_at: String,
    /// Rows in the CSV, header aside, once complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<i64>,
    /// Size of the CSV in bytes, once complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<i64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Where the CSV is downloaded, once complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    csv: Option<String>,
}

impl ReportJson {
    fn of(report: reports::Model, application: Option<String>) -> Self {
        let complete = report.status == report_jobs::COMPLETE;
        Self {
            csv: complete.then(|| format!("/api/v1/reports/{}/csv", report.id)),
            id: report.id,
            kind: report.kind,
            status: report.status,
            application_id: report.application_id,
            application,
            from: rfc3339(report.window_from),
            to: rfc3339(report.window_to),
            category: report.category,
            name: report.name,
            created_at: rfc3339(report.created_at),
            completed_at: report.completed_at.map(rfc3339),
            expires_at: rfc3339(report.expires_at),
            rows: report.row_count,
            bytes: report.byte_count,
            reason: report.reason,
        }
    }
}

async fn report_json(state: &State, report: reports::Model) -> Result<ReportJson, ReadError> {
    let application = match report.application_id {
        None => None,
        Some(id) => applications::Entity::find_by_id(id)
            .one(&state.db)
            .await?
            .map(|a| a.name),
    };
    Ok(ReportJson::of(report, application))
}

/// The report `id` names, if the request's token may read it.
async fn readable(
    state: &State,
    request: &HttpRequest,
    id: &str,
) -> Result<reports::Model, ReadError> {
    let grant = authorize(state, request).await?;
    Ok(visible(state, report_id(id)?, Reach::of(&grant)).await?)
}

/// Starts a report job; poll the answer's `Location` until it is `complete` or `failed`.
#[utoipa::path(
    post,
    path = "/api/v1/reports",
    tag = "reports",
    operation_id = "create_report",
    request_body(content = NewReport, content_type = "application/json"),
    responses((status = 202, description = "The job is queued; it runs on a worker.", body = ReportJson,
        headers(("Location" = String, description = "Where to poll the report")))),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn create(
    request: HttpRequest,
    state: web::Data<State>,
    body: web::Bytes,
) -> Result<HttpResponse, ReadError> {
    let grant = authorize(&state, &request).await?;
    let asked: NewReport = serde_json::from_slice(&body)
        .map_err(|e| ReportError::Problem(ReportProblem::Body(e.to_string())))?;
    let requested_by = format!("token of {}", grant.application_name);
    let job = asked
        .request(&state.db, Reach::of(&grant), requested_by)
        .await?;
    let report = start(&state, &job).await?;
    let location = format!("/api/v1/reports/{}", report.id);
    Ok(HttpResponse::Accepted()
        .insert_header((LOCATION, location))
        .json(report_json(&state, report).await?))
}

/// A report job: `running`, `complete` with its CSV's address, or `failed` with the reason.
#[utoipa::path(
    get,
    path = "/api/v1/reports/{id}",
    tag = "reports",
    operation_id = "get_report",
    params(("id" = Uuid, Path, description = "The report's id")),
    responses((status = 200, description = "The report's state.", body = ReportJson)),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn show(
    request: HttpRequest,
    state: web::Data<State>,
    id: web::Path<String>,
) -> Result<HttpResponse, ReadError> {
    let report = readable(&state, &request, &id).await?;
    Ok(HttpResponse::Ok().json(report_json(&state, report).await?))
}

/// A complete report's CSV, with a header line.
#[utoipa::path(
    get,
    path = "/api/v1/reports/{id}/csv",
    tag = "reports",
    operation_id = "download_report",
    params(("id" = Uuid, Path, description = "The report's id")),
    responses((status = 200, description = "The CSV.", content_type = "text/csv", body = String)),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn csv(
    request: HttpRequest,
    state: web::Data<State>,
    id: web::Path<String>,
) -> Result<HttpResponse, ReadError> {
    let report = readable(&state, &request, &id).await?;
    Ok(download(&state, report)?)
}
