//! The dashboard: totals, ingest rate, what arrives, what is refused, how the queue is doing.
//! The numbers are computed at most once per [`CACHE_FOR`] per process, whoever asks: a
//! dashboard left open in many tabs costs the database what one does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr};

use crate::State;
use crate::auth::{self, Viewer};
use crate::chart::BarChart;
use crate::error::PageError;
use crate::queries::dashboard::{Bucket, Reader, ReasonCount, Totals, TypeCount, Unit};
use crate::views::html;

/// How long one computation of the numbers is shown before the next.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// Each query's limit on PostgreSQL; a part that takes longer is shown as unknown.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The numbers, each `None` when its query ran out of time.
#[derive(Debug)]
pub struct Snapshot {
    at: DateTime<Utc>,
    totals: Option<Totals>,
    minutes: Option<Vec<Bucket>>,
    hours: Option<Vec<Bucket>>,
    types: Option<Vec<TypeCount>>,
    reasons: Option<Vec<ReasonCount>>,
    /// Events received in the last day: stored, rejected.
    day: Option<(u64, u64)>,
}

/// The last snapshot, when it was taken and in which generation. One lock: while one request
/// computes, the others wait for its result instead of querying too.
#[derive(Default)]
pub struct Cache {
    last: tokio::sync::Mutex<Option<(Instant, u64, Arc<Snapshot>)>>,
    generation: std::sync::atomic::AtomicU64,
}

impl Cache {
    async fn get(&self, db: &DatabaseConnection) -> Result<Arc<Snapshot>, DbErr> {
        let mut cached = self.last.lock().await;
        let generation = self.generation();
        if let Some((taken, of, snapshot)) = cached.as_ref()
            && taken.elapsed() < CACHE_FOR
            && *of == generation
        {
            return Ok(snapshot.clone());
        }
        let snapshot = Arc::new(snapshot(db).await?);
        *cached = Some((Instant::now(), generation, snapshot.clone()));
        Ok(snapshot)
    }

    /// Forgets the numbers after this admin changed them (a discard, a replay), so the next
    /// dashboard shows the change rather than what was true a moment ago. Never waits for a
    /// dashboard being computed.
    pub fn forget(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Runs one part unless an earlier one ran out of time (the database is slow now: the page
/// shows what it has rather than wait for every part in turn). A part that runs out of time
/// is `None`; a database that does not answer is an error.
async fn part<T>(
    slow: &mut bool,
    name: &str,
    query: impl Future<Output = Result<T, DbErr>>,
) -> Result<Option<T>, DbErr> {
    if *slow {
        return Ok(None);
    }
    match query.await {
        Ok(value) => Ok(Some(value)),
        Err(e) if crate::queries::is_statement_timeout(&e) => {
            tracing::warn!(part = name, "a dashboard query took too long");
            *slow = true;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

async fn snapshot(db: &DatabaseConnection) -> Result<Snapshot, DbErr> {
    let reader = Reader::new(db, QUERY_TIMEOUT);
    let at = Utc::now();
    let day = at - chrono::Duration::hours(24);
    let slow = &mut false;
    Ok(Snapshot {
        at,
        totals: part(slow, "totals", reader.totals()).await?,
        minutes: part(
            slow,
            "per minute",
            reader.received_per(Unit::Minute, 60, at),
        )
        .await?,
        hours: part(slow, "per hour", reader.received_per(Unit::Hour, 24, at)).await?,
        types: part(slow, "top types", reader.top_types(day)).await?,
        reasons: part(slow, "reasons", reader.reasons(day)).await?,
        day: part(slow, "last day", reader.received_since(day)).await?,
    })
}

pub struct ReasonRow {
    pub code: String,
    pub count: i64,
    /// Share of all events received in the last day, as text like `1.25%`.
    pub rate: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    viewer: Option<Viewer>,
    total_events: String,
    total_sessions: String,
    total_rejected: String,
    total_dead_letters: String,
    total_applications: String,
    last_minute: String,
    last_hour: String,
    received_day: String,
    rejected_day: String,
    per_minute: BarChart,
    per_hour: BarChart,
    minutes: Vec<Bucket>,
    hours: Vec<Bucket>,
    types: Vec<TypeCount>,
    reasons: Vec<ReasonRow>,
    /// Parts whose queries ran out of time, by name.
    unknown: Vec<&'static str>,
    queue: String,
    consumers: String,
    generated: String,
    cache_secs: u64,
    /// The start of the last-day window, for links to what it counts.
    since: String,
}

fn rate(count: i64, total: u64) -> String {
    if total == 0 {
        return "0%".into();
    }
    format!("{:.2}%", count as f64 * 100.0 / total as f64)
}

fn reason_rows(reasons: &[ReasonCount], received: u64) -> Vec<ReasonRow> {
    reasons
        .iter()
        .map(|r| ReasonRow {
            rate: rate(r.count, received),
            code: r.code.clone(),
            count: r.count,
        })
        .collect()
}

const UNKNOWN: &str = "unknown";

fn shown<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| UNKNOWN.to_owned(), |v| v.to_string())
}

#[tracing::instrument(skip_all)]
pub async fn show(
    request: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer(&request, &state).await?;
    let numbers = state.dashboard.get(&state.db).await?;
    let (queue, consumers) = match state.queue.stats().await {
        Ok(stats) => (stats.messages.to_string(), stats.consumers.to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the queue's depth");
            (format!("unknown ({e})"), "unknown".into())
        }
    };
    let mut unknown = Vec::new();
    for (missing, part) in [
        (numbers.totals.is_none(), "totals"),
        (numbers.minutes.is_none(), "events per minute"),
        (numbers.hours.is_none(), "events per hour"),
        (numbers.types.is_none(), "top event types"),
        (
            numbers.reasons.is_none() || numbers.day.is_none(),
            "rejections",
        ),
    ] {
        if missing {
            unknown.push(part);
        }
    }
    let totals = numbers.totals.as_ref();
    let minutes = numbers.minutes.clone().unwrap_or_default();
    let hours = numbers.hours.clone().unwrap_or_default();
    let received_day = numbers.day.map(|(stored, rejected)| stored + rejected);
    html(&DashboardPage {
        viewer: Some(viewer),
        total_events: shown(totals.map(|t| t.events)),
        total_sessions: shown(totals.map(|t| t.sessions)),
        total_rejected: shown(totals.map(|t| t.rejected)),
        total_dead_letters: shown(totals.map(|t| t.dead_letters)),
        total_applications: shown(totals.map(|t| t.applications)),
        last_minute: shown(
            numbers
                .minutes
                .as_ref()
                .and_then(|m| m.last())
                .map(|b| b.count),
        ),
        last_hour: shown(
            numbers
                .minutes
                .as_ref()
                .map(|m| m.iter().map(|b| b.count).sum::<i64>()),
        ),
        received_day: shown(received_day),
        rejected_day: shown(numbers.day.map(|(_, rejected)| rejected)),
        per_minute: BarChart::new("Events received per minute, last hour (UTC)", &minutes),
        per_hour: BarChart::new("Events received per hour, last day (UTC)", &hours),
        minutes,
        hours,
        types: numbers.types.clone().unwrap_or_default(),
        reasons: reason_rows(
            numbers.reasons.as_deref().unwrap_or_default(),
            received_day.unwrap_or(0),
        ),
        unknown,
        queue,
        consumers,
        generated: numbers.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        cache_secs: CACHE_FOR.as_secs(),
        since: (numbers.at - chrono::Duration::hours(24))
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_are_shares_of_everything_received() {
        assert_eq!(super::rate(1, 8), "12.50%");
        assert_eq!(super::rate(3, 0), "0%");
    }
}
