//! The dashboard: totals, ingest rate, what arrives, what is refused, how the queue is doing.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::{Duration, Utc};

use crate::State;
use crate::auth::{self, Viewer};
use crate::chart::BarChart;
use crate::error::PageError;
use crate::queries::dashboard::{self, Bucket, ReasonCount, Totals, TypeCount, Unit};
use crate::views::html;

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
    totals: Totals,
    last_minute: i64,
    last_hour: i64,
    received_day: u64,
    rejected_day: u64,
    per_minute: BarChart,
    per_hour: BarChart,
    minutes: Vec<Bucket>,
    hours: Vec<Bucket>,
    types: Vec<TypeCount>,
    reasons: Vec<ReasonRow>,
    queue: String,
    consumers: String,
    generated: String,
    /// The start of the last-day window, for links to what it counts.
    since: String,
}

fn rate(count: i64, total: u64) -> String {
    if total == 0 {
        return "0%".into();
    }
    format!("{:.2}%", count as f64 * 100.0 / total as f64)
}

fn reason_rows(reasons: Vec<ReasonCount>, received: u64) -> Vec<ReasonRow> {
    reasons
        .into_iter()
        .map(|r| ReasonRow {
            rate: rate(r.count, received),
            code: r.code,
            count: r.count,
        })
        .collect()
}

#[tracing::instrument(skip_all)]
pub async fn show(
    request: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer(&request, &state).await?;
    let db = &state.db;
    let now = Utc::now();
    let day = now - Duration::hours(24);
    let minutes = dashboard::received_per(db, Unit::Minute, 60, now).await?;
    let hours = dashboard::received_per(db, Unit::Hour, 24, now).await?;
    let (stored_day, rejected_day) = dashboard::received_since(db, day).await?;
    let received_day = stored_day + rejected_day;
    let (queue, consumers) = match state.queue.stats().await {
        Ok(stats) => (stats.messages.to_string(), stats.consumers.to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the queue's depth");
            (format!("unknown ({e})"), "unknown".into())
        }
    };
    html(&DashboardPage {
        viewer: Some(viewer),
        totals: dashboard::totals(db).await?,
        last_minute: minutes.last().map_or(0, |b| b.count),
        last_hour: minutes.iter().map(|b| b.count).sum(),
        received_day,
        rejected_day,
        per_minute: BarChart::new("Events received per minute, last hour (UTC)", &minutes),
        per_hour: BarChart::new("Events received per hour, last day (UTC)", &hours),
        minutes,
        hours,
        types: dashboard::top_types(db, day).await?,
        reasons: reason_rows(dashboard::reasons(db, day).await?, received_day),
        queue,
        consumers,
        generated: now.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        since: day.format("%Y-%m-%dT%H:%M:%S").to_string(),
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
