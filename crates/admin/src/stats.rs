//! The stats api: event counts per minute, hour or day from the rollups, and what sessions
//! look like (how many, how many events, how long), for `events:read` tokens scoped as the
//! read api is. Windows are UTC and widened to the whole minutes that cover them.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use eye_entity::rollups;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::State;
use crate::filter::{FilterError, parse_time, text};
use crate::queries::stats::{self as query, Applications, Bucket, CountsRequest, Group, Spread};
use crate::queries::{self, is_statement_timeout};
use crate::read_api::{Reach, ReadError, authorize, rfc3339};

/// Buckets one answer may span: a week of minutes.
pub const MAX_BUCKETS: i64 = 7 * 24 * 60;

/// Rows one answer may hold.
pub const MAX_ROWS: u64 = 50_000;

/// The window when none is given: the last day.
const DEFAULT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The query string of the counts. Every field is text so that a bad value is named.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub(crate) struct CountsQuery {
    /// What each count is of besides its bucket: `category`, `name` and `application`,
    /// separated by commas. Empty: one count per bucket.
    pub(crate) group_by: String,
    /// `minute`, `hour` (the default) or `day`; buckets start on whole UTC minutes, hours or
    /// days.
    pub(crate) bucket: String,
    /// Events at or after this time (of the event): UTC `YYYY-MM-DDTHH:MM[:SS]`, a date, or
    /// RFC 3339 with an offset. Default: a day before `to`.
    pub(crate) from: String,
    /// Events before this time, in the same forms. Default: now.
    pub(crate) to: String,
    /// An application's name; a token without `events:read:all` reads its own only.
    pub(crate) application: String,
    /// Only this category.
    pub(crate) category: String,
    /// Only this name.
    pub(crate) name: String,
}

/// The query string of the session stats.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub(crate) struct SessionsQuery {
    /// Sessions whose first event is at or after this time, in the forms `from` of the
    /// counts takes. Default: a day before `to`.
    from: String,
    /// Sessions whose first event is before this time. Default: now.
    to: String,
    /// An application's name; a token without `events:read:all` reads its own only.
    application: String,
}

/// How many events, per bucket and group.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Counts {
    /// `minute`, `hour` or `day`.
    bucket: &'static str,
    /// The window counted, widened to whole minutes.
    #[schema(format = DateTime)]
    from: String,
    #[schema(format = DateTime)]
    to: String,
    group_by: Vec<&'static str>,
    /// Oldest bucket first, then by group; a bucket with no events is absent.
    counts: Vec<Count>,
    /// The sum of `counts`.
    total: i64,
}

/// One bucket's count of one group; a field grouped by is present, the others are not.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Count {
    /// The start of the bucket, UTC.
    #[schema(format = DateTime)]
    start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    application_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    application: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    count: i64,
}

/// What the sessions that began in a window look like.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Sessions {
    #[schema(format = DateTime)]
    from: String,
    #[schema(format = DateTime)]
    to: String,
    /// Sessions whose first event is in the window.
    sessions: i64,
    /// Events per session; `null` without sessions.
    events_per_session: Option<SpreadJson>,
    /// From a session's first event to its last, in seconds; `null` without sessions.
    duration_seconds: Option<SpreadJson>,
}

/// An average and two percentiles (interpolated between the nearest values).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Spread)]
pub(crate) struct SpreadJson {
    average: f64,
    p50: f64,
    p90: f64,
}

impl From<Spread> for SpreadJson {
    fn from(s: Spread) -> Self {
        Self {
            average: s.average,
            p50: s.p50,
            p90: s.p90,
        }
    }
}

/// `from` and `to` as given or by default, widened to whole minutes.
pub(crate) fn window(from: &str, to: &str) -> Result<(DateTime<Utc>, DateTime<Utc>), FilterError> {
    let to = parse_time("to", to)?.unwrap_or_else(Utc::now);
    let from = parse_time("from", from)?.unwrap_or(to - DEFAULT_WINDOW);
    if from > to {
        return Err(FilterError::Range);
    }
    Ok((rollups::minute_of(from), rollups::minute_from(to)))
}

fn group_by(text: &str) -> Result<Vec<Group>, FilterError> {
    let mut groups = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let group = Group::parse(part).ok_or_else(|| FilterError::GroupBy(part.to_owned()))?;
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    Ok(groups)
}

impl CountsQuery {
    /// What to count, for every application until narrowed; refused past `max_buckets`.
    pub(crate) fn request(&self, max_buckets: i64) -> Result<CountsRequest, FilterError> {
        let bucket = match text(&self.bucket) {
            None => Bucket::Hour,
            Some(name) => Bucket::parse(&name).ok_or(FilterError::Bucket)?,
        };
        let (from, to) = window(&self.from, &self.to)?;
        let width = bucket.width().num_minutes();
        let buckets = ((to - from).num_minutes() + width - 1) / width;
        if buckets > max_buckets {
            return Err(FilterError::TooManyBuckets {
                buckets,
                bucket: bucket.name(),
                max: max_buckets,
            });
        }
        Ok(CountsRequest {
            applications: Applications::All,
            from,
            to,
            bucket,
            group_by: group_by(&self.group_by)?,
            category: text(&self.category),
            name: text(&self.name),
            limit: MAX_ROWS + 1,
        })
    }
}

/// The applications a request covers, with every application's name; `None` when it named
/// one the token may not read.
async fn applications(
    state: &State,
    reach: Reach,
    asked: &str,
) -> Result<(Option<Applications>, HashMap<Uuid, String>), ReadError> {
    let names = queries::application_names(&state.db).await?;
    let covered = match reach.narrow(text(asked), &names) {
        None => None,
        Some(None) => Some(Applications::All),
        Some(Some(name)) => Some(Applications::One(
            names
                .iter()
                .find(|(_, n)| **n == name)
                .map_or(Uuid::nil(), |(id, _)| *id),
        )),
    };
    Ok((covered, names))
}

fn timed_out(state: &State) -> impl Fn(sea_orm::DbErr) -> ReadError + '_ {
    |e| {
        if is_statement_timeout(&e) {
            ReadError::StatsTimeout(state.search_timeout)
        } else {
            ReadError::Db(e)
        }
    }
}

/// Events counted per bucket, from the per-minute rollups the workers keep as they store.
#[utoipa::path(
    get,
    path = "/api/v1/stats/counts",
    tag = "stats",
    operation_id = "count_events",
    params(CountsQuery),
    responses((status = 200, description = "Counts per bucket and group, oldest first.", body = Counts)),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn counts(
    request: HttpRequest,
    state: web::Data<State>,
    query: web::Query<CountsQuery>,
) -> Result<HttpResponse, ReadError> {
    let grant = authorize(&state, &request).await?;
    let asked = query.request(MAX_BUCKETS)?;
    let (covered, names) = applications(&state, Reach::of(&grant), &query.application).await?;
    let rows = match covered {
        None => Vec::new(),
        Some(applications) => {
            let asked = CountsRequest {
                applications,
                ..asked.clone()
            };
            query::counts(&state.reads, state.search_timeout, &asked)
                .await
                .map_err(timed_out(&state))?
        }
    };
    if rows.len() as u64 > MAX_ROWS {
        return Err(FilterError::TooManyRows(MAX_ROWS).into());
    }
    let counts: Vec<Count> = rows
        .into_iter()
        .map(|row| Count {
            start: rfc3339(row.start),
            application: row.application_id.and_then(|id| names.get(&id).cloned()),
            application_id: row.application_id,
            category: row.category,
            name: row.name,
            count: row.count,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Counts {
        bucket: asked.bucket.name(),
        from: rfc3339(asked.from),
        to: rfc3339(asked.to),
        group_by: asked.group_by.iter().map(|g| g.name()).collect(),
        total: counts.iter().map(|c| c.count).sum(),
        counts,
    }))
}

/// How many sessions began in a window, how many events they hold and how long they last.
#[utoipa::path(
    get,
    path = "/api/v1/stats/sessions",
    tag = "stats",
    operation_id = "session_stats",
    params(SessionsQuery),
    responses((status = 200, description = "The sessions that began in the window.", body = Sessions)),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn sessions(
    request: HttpRequest,
    state: web::Data<State>,
    query: web::Query<SessionsQuery>,
) -> Result<HttpResponse, ReadError> {
    let grant = authorize(&state, &request).await?;
    let (from, to) = window(&query.from, &query.to)?;
    let (covered, _) = applications(&state, Reach::of(&grant), &query.application).await?;
    let stats = match covered {
        None => query::SessionStats::default(),
        Some(applications) => {
            query::sessions(&state.reads, state.search_timeout, &applications, from, to)
                .await
                .map_err(timed_out(&state))?
        }
    };
    Ok(HttpResponse::Ok().json(Sessions {
        from: rfc3339(from),
        to: rfc3339(to),
        sessions: stats.sessions,
        events_per_session: stats.events.map(Into::into),
        duration_seconds: stats.duration.map(Into::into),
    }))
}
