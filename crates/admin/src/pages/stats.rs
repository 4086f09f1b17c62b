//! Stats: events per minute, hour or day from the rollups, overall and for the busiest event
//! types, and what the sessions that began in the window look like, as charts drawn on the
//! server with the numbers beside them.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::{DateTime, Utc};
use eye_entity::applications;

use crate::State;
use crate::auth::{self, Viewer};
use crate::chart::BarChart;
use crate::error::PageError;
use crate::queries::dashboard::Bucket as Bar;
use crate::queries::stats::{
    self as query, Applications, Bucket, CountRow, LENGTH_BANDS, SessionStats,
};
use crate::queries::{self, is_statement_timeout};
use crate::stats::CountsQuery;
use crate::views::html;

/// Bars one chart may hold: wider windows take a wider bucket.
pub const MAX_BARS: i64 = 600;

/// Event types charted one by one, the busiest first.
pub const TYPES_CHARTED: usize = 6;

pub struct TypeSeries {
    pub category: String,
    pub name: String,
    pub total: i64,
    pub chart: BarChart,
}

#[derive(Template)]
#[template(path = "stats.html")]
struct StatsPage {
    viewer: Option<Viewer>,
    query: CountsQuery,
    applications: Vec<applications::Model>,
    bucket: &'static str,
    from: String,
    to: String,
    total: i64,
    overall: BarChart,
    bars: Vec<Bar>,
    types: Vec<TypeSeries>,
    /// Types beyond the charted ones, with their totals.
    other_types: Vec<(String, String, i64)>,
    sessions: SessionStats,
    lengths: BarChart,
    length_bands: Vec<Bar>,
}

fn label(at: DateTime<Utc>, bucket: Bucket) -> String {
    let format = match bucket {
        Bucket::Minute => "%Y-%m-%d %H:%M",
        Bucket::Hour => "%Y-%m-%d %H:00",
        Bucket::Day => "%Y-%m-%d",
    };
    at.format(format).to_string()
}

/// Every bucket of the window in order, with its count (zero when absent from `counts`).
fn series(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Bucket,
    counts: &BTreeMap<DateTime<Utc>, i64>,
) -> Vec<Bar> {
    let first = query::bucket_start(from, bucket);
    std::iter::successors(Some(first), |at| Some(*at + bucket.width()))
        .take_while(|at| *at < to)
        .map(|at| Bar {
            label: label(at, bucket),
            count: counts.get(&at).copied().unwrap_or(0),
        })
        .collect()
}

#[tracing::instrument(skip_all)]
pub async fn show(
    request: HttpRequest,
    state: web::Data<State>,
    query: web::Query<CountsQuery>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer(&request, &state).await?;
    let query = query.into_inner();
    // Always by type: the page charts the busiest ones.
    let mut asked = CountsQuery {
        group_by: "category,name".into(),
        ..query.clone()
    }
    .request(MAX_BARS)?;
    let application = query.application.trim();
    if !application.is_empty() {
        asked.applications =
            Applications::One(queries::application_id(&state.db, application).await?);
    }
    let timed_out = |e| {
        if is_statement_timeout(&e) {
            PageError::StatsTimeout(state.search_timeout)
        } else {
            PageError::Db(e)
        }
    };
    let rows = query::counts(&state.reads, state.search_timeout, &asked)
        .await
        .map_err(timed_out)?;
    if rows.len() as u64 > crate::stats::MAX_ROWS {
        return Err(crate::filter::FilterError::TooManyRows(crate::stats::MAX_ROWS).into());
    }
    let (from, to, bucket) = (asked.from, asked.to, asked.bucket);
    let mut overall = BTreeMap::new();
    let mut by_type: BTreeMap<(String, String), BTreeMap<DateTime<Utc>, i64>> = BTreeMap::new();
    for CountRow {
        start,
        category,
        name,
        count,
        ..
    } in rows
    {
        *overall.entry(start).or_default() += count;
        *by_type
            .entry((category.unwrap_or_default(), name.unwrap_or_default()))
            .or_default()
            .entry(start)
            .or_default() += count;
    }
    let mut ranked: Vec<_> = by_type
        .into_iter()
        .map(|(key, counts)| (counts.values().sum::<i64>(), key, counts))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let other_types = ranked
        .iter()
        .skip(TYPES_CHARTED)
        .map(|(total, (category, name), _)| (category.clone(), name.clone(), *total))
        .collect();
    let types = ranked
        .into_iter()
        .take(TYPES_CHARTED)
        .map(|(total, (category, name), counts)| TypeSeries {
            chart: BarChart::new(
                &format!("{category} / {name} per {} (UTC)", bucket.name()),
                &series(from, to, bucket, &counts),
            ),
            category,
            name,
            total,
        })
        .collect();
    let bars = series(from, to, bucket, &overall);

    let (sessions, bands) = (
        query::sessions(
            &state.reads,
            state.search_timeout,
            &asked.applications,
            from,
            to,
        )
        .await
        .map_err(timed_out)?,
        query::session_lengths(
            &state.reads,
            state.search_timeout,
            &asked.applications,
            from,
            to,
        )
        .await
        .map_err(timed_out)?,
    );
    let length_bands: Vec<Bar> = LENGTH_BANDS
        .iter()
        .zip(bands)
        .map(|((_, label), count)| Bar {
            label: (*label).to_owned(),
            count,
        })
        .collect();
    let page = StatsPage {
        viewer: Some(viewer),
        applications: eye_entity::tokens::applications(&state.db).await?,
        bucket: bucket.name(),
        from: label(from, Bucket::Minute),
        to: label(to, Bucket::Minute),
        total: overall.values().sum(),
        overall: BarChart::new(&format!("Events per {} (UTC)", bucket.name()), &bars),
        bars,
        types,
        other_types,
        sessions,
        lengths: BarChart::bands("Sessions by length", &length_bands),
        length_bands,
        query,
    };
    html(&page)
}
