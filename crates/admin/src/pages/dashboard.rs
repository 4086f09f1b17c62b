//! The dashboard, the operator's one screen: how fast events arrive, whether the workers keep
//! up, which applications went quiet or were rate limited, what is refused, and the totals.
//! The numbers are computed at most once per [`CACHE_FOR`] per process, whoever asks: a
//! dashboard left open in many tabs costs the database what one does.

use std::collections::HashMap;
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
use crate::queries::dashboard::{
    APPLICATIONS_SHOWN, Activity, Bucket, Limited, Reader, ReasonCount, Totals, TypeCount,
};
use crate::queries::stats::{self, Applications, CountsRequest, Group};
use crate::views::{Time, html};

/// How long one computation of the numbers is shown before the next.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// Each query's limit on PostgreSQL; a part that takes longer is shown as unknown.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The numbers, each `None` when its query ran out of time.
#[derive(Debug)]
pub struct Snapshot {
    at: DateTime<Utc>,
    /// Stored events received in the last minute and the last 15 minutes.
    ingest: Option<(u64, u64)>,
    /// `received_at` of the newest stored event (inner `None`: nothing stored yet).
    newest: Option<Option<DateTime<Utc>>>,
    activity: Option<Vec<Activity>>,
    limited: Option<Vec<Limited>>,
    /// Rejections by reason, last hour.
    reasons: Option<Vec<ReasonCount>>,
    /// Events received in the last hour: stored, rejected.
    hour: Option<(u64, u64)>,
    totals: Option<Totals>,
    /// The last hour from the rollups: per minute, and per type (busiest first).
    last_hour: Option<(Vec<Bucket>, Vec<TypeCount>)>,
    hours: Option<Vec<Bucket>>,
    types: Option<Vec<TypeCount>>,
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

/// The stored events of the last `buckets` minutes or hours (the current one included) by
/// their own `timestamp`, from the rollups: per bucket, and, when `by_type`, per type, the
/// busiest first (otherwise none).
async fn from_rollups(
    db: &DatabaseConnection,
    at: DateTime<Utc>,
    bucket: stats::Bucket,
    buckets: i32,
    by_type: bool,
) -> Result<(Vec<Bucket>, Vec<TypeCount>), DbErr> {
    let current = stats::bucket_start(at, bucket);
    let from = current - bucket.width() * (buckets - 1);
    let request = CountsRequest {
        applications: Applications::All,
        from,
        to: current + bucket.width(),
        bucket,
        group_by: if by_type {
            vec![Group::Category, Group::Name]
        } else {
            Vec::new()
        },
        category: None,
        name: None,
        limit: crate::stats::MAX_ROWS,
    };
    let mut per_bucket: HashMap<DateTime<Utc>, i64> = HashMap::new();
    let mut types: HashMap<(String, String), i64> = HashMap::new();
    for row in stats::counts(db, QUERY_TIMEOUT, &request).await? {
        *per_bucket.entry(row.start).or_default() += row.count;
        let key = (
            row.category.unwrap_or_default(),
            row.name.unwrap_or_default(),
        );
        *types.entry(key).or_default() += row.count;
    }
    let label = match bucket {
        stats::Bucket::Minute => "%Y-%m-%dT%H:%M",
        _ => "%Y-%m-%dT%H",
    };
    let series = (0..buckets)
        .map(|i| {
            let start = from + bucket.width() * i;
            Bucket {
                label: start.format(label).to_string(),
                count: per_bucket.get(&start).copied().unwrap_or(0),
            }
        })
        .collect();
    let mut types: Vec<TypeCount> = types
        .into_iter()
        .map(|((category, name), count)| TypeCount {
            category,
            name,
            count,
        })
        .collect();
    types.sort_by(|a, b| (b.count, &a.category, &a.name).cmp(&(a.count, &b.category, &b.name)));
    Ok((series, types))
}

/// The parts an operator needs first run first: when the database is slow, they are the
/// ones shown.
async fn snapshot(db: &DatabaseConnection) -> Result<Snapshot, DbErr> {
    let reader = Reader::new(db, QUERY_TIMEOUT);
    let at = Utc::now();
    let minutes_ago = |n| at - chrono::Duration::minutes(n);
    let day = at - chrono::Duration::hours(24);
    let slow = &mut false;
    let last_minute = part(slow, "ingest", reader.stored_received_since(minutes_ago(1))).await?;
    let last_15 = part(
        slow,
        "ingest",
        reader.stored_received_since(minutes_ago(15)),
    )
    .await?;
    Ok(Snapshot {
        at,
        ingest: last_minute.zip(last_15),
        newest: part(slow, "newest", reader.newest_received()).await?,
        activity: part(slow, "applications", reader.activity()).await?,
        limited: part(slow, "rate limited", reader.rate_limited(minutes_ago(60))).await?,
        reasons: part(slow, "reasons", reader.reasons(minutes_ago(60))).await?,
        hour: part(slow, "last hour", reader.received_since(minutes_ago(60))).await?,
        totals: part(slow, "totals", reader.totals()).await?,
        last_hour: part(
            slow,
            "last hour by type",
            from_rollups(db, at, stats::Bucket::Minute, 60, true),
        )
        .await?,
        hours: part(
            slow,
            "per hour",
            from_rollups(db, at, stats::Bucket::Hour, 24, false),
        )
        .await?
        .map(|(hours, _)| hours),
        types: part(slow, "top types", reader.top_types(day)).await?,
    })
}

pub struct ReasonRow {
    pub code: String,
    pub count: i64,
    /// Share of all events received in the last hour, as text like `1.25%`.
    pub rate: String,
}

/// One application's line: is it sending, and was it held back.
pub struct AppRow {
    pub id: String,
    pub name: String,
    /// `sending`, `silent`, `new` (nothing yet, younger than the silence threshold) or
    /// `disabled`.
    pub state: &'static str,
    pub last: Option<Time>,
    /// How long ago `last` was, like `3 min 5 s`.
    pub ago: String,
    pub limited_requests: i64,
    pub limited_events: i64,
}

impl AppRow {
    pub fn silent(&self) -> bool {
        self.state == "silent"
    }
}

/// How far behind the workers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lag {
    /// The queue is empty.
    CaughtUp,
    /// The oldest waiting message is at most this old.
    Behind(chrono::Duration),
    Unknown,
}

/// The age of the oldest waiting message. The queue is first in, first out, so what waits
/// arrived after the newest stored event: its age is at most `now` − that event's
/// `received_at`. Exact while events flow steadily, an upper bound after a quiet spell.
pub fn lag(
    messages: Option<u64>,
    newest: Option<Option<DateTime<Utc>>>,
    now: DateTime<Utc>,
) -> Lag {
    match (messages, newest) {
        (Some(0), _) => Lag::CaughtUp,
        (Some(_), Some(Some(newest))) => Lag::Behind((now - newest).max(chrono::Duration::zero())),
        _ => Lag::Unknown,
    }
}

/// `42 s`, `3 min 5 s`, `2 h 10 min`, `3 days`.
pub fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..172_800 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} days", s / 86_400),
    }
}

fn app_rows(
    activity: &[Activity],
    limited: &[Limited],
    now: DateTime<Utc>,
    silent_after: chrono::Duration,
) -> Vec<AppRow> {
    let limited: HashMap<_, _> = limited.iter().map(|l| (l.application_id, l)).collect();
    activity
        .iter()
        .map(|a| {
            let quiet_since = a.last_received.unwrap_or(a.created_at);
            let state = match (a.disabled, a.last_received) {
                (true, _) => "disabled",
                _ if now - quiet_since >= silent_after => "silent",
                (false, None) => "new",
                (false, Some(_)) => "sending",
            };
            let held = limited.get(&a.id);
            AppRow {
                id: a.id.to_string(),
                name: a.name.clone(),
                state,
                last: a.last_received.map(|t| Time {
                    shown: t.format("%Y-%m-%d %H:%M:%S").to_string(),
                    ..Time::from(t)
                }),
                ago: a
                    .last_received
                    .map_or_else(|| "never".into(), |t| format!("{} ago", age(now - t))),
                limited_requests: held.map_or(0, |l| l.requests),
                limited_events: held.map_or(0, |l| l.events),
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    viewer: Option<Viewer>,
    /// Stored events received in the last minute.
    ingest_1m: String,
    /// Per minute over the last 15 minutes, one decimal.
    ingest_15m: String,
    /// Stored events received in the last 15 minutes.
    ingest_15m_count: String,
    queue: String,
    consumers: String,
    lag: String,
    /// Seconds of lag for `data-seconds`; `caught-up` or `unknown` otherwise.
    lag_seconds: String,
    total_dead_letters: String,
    rejected_hour: String,
    received_hour: String,
    limited_requests: String,
    limited_events: String,
    silent_count: usize,
    silent_minutes: i64,
    apps: Vec<AppRow>,
    /// More applications exist than are listed.
    apps_cut: bool,
    apps_shown: u64,
    reasons: Vec<ReasonRow>,
    total_events: String,
    total_sessions: String,
    total_rejected: String,
    total_applications: String,
    per_minute: BarChart,
    per_hour: BarChart,
    minutes: Vec<Bucket>,
    /// Per type over the last hour, from the rollups.
    hour_types: Vec<TypeCount>,
    hours: Vec<Bucket>,
    types: Vec<TypeCount>,
    /// Parts whose queries ran out of time, by name.
    unknown: Vec<&'static str>,
    generated: String,
    cache_secs: u64,
    refresh_secs: u64,
    /// The start of the last-hour window, for links to what it counts.
    since_hour: String,
}

/// How often the open page reloads itself.
pub const REFRESH: Duration = Duration::from_secs(30);

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
    let stats = match state.queue.stats().await {
        Ok(stats) => Ok(stats),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the queue's depth");
            Err(e)
        }
    };
    let (queue, consumers) = match &stats {
        Ok(stats) => (stats.messages.to_string(), stats.consumers.to_string()),
        Err(e) => (format!("unknown ({e})"), UNKNOWN.into()),
    };
    let now = Utc::now();
    let (lag, lag_seconds) = match lag(stats.as_ref().ok().map(|s| s.messages), numbers.newest, now)
    {
        Lag::CaughtUp => ("caught up".to_owned(), "caught-up".to_owned()),
        Lag::Behind(d) => (age(d), d.num_seconds().to_string()),
        Lag::Unknown => (UNKNOWN.to_owned(), UNKNOWN.to_owned()),
    };
    let mut unknown = Vec::new();
    for (missing, part) in [
        (numbers.ingest.is_none(), "ingest rate"),
        (numbers.newest.is_none(), "worker lag"),
        (numbers.activity.is_none(), "applications"),
        (numbers.limited.is_none(), "rate-limited requests"),
        (
            numbers.reasons.is_none() || numbers.hour.is_none(),
            "rejections",
        ),
        (numbers.totals.is_none(), "totals"),
        (numbers.last_hour.is_none(), "the last hour by type"),
        (numbers.hours.is_none(), "events per hour"),
        (numbers.types.is_none(), "top event types"),
    ] {
        if missing {
            unknown.push(part);
        }
    }
    let silent_after = chrono::Duration::minutes(state.silent_minutes);
    let mut apps = app_rows(
        numbers.activity.as_deref().unwrap_or_default(),
        numbers.limited.as_deref().unwrap_or_default(),
        numbers.at,
        silent_after,
    );
    // One more than shown is read, to know whether any were left out.
    let apps_cut = apps.len() as u64 > APPLICATIONS_SHOWN;
    apps.truncate(usize::try_from(APPLICATIONS_SHOWN).unwrap_or(usize::MAX));
    let limited = numbers.limited.as_ref().map(|l| {
        l.iter()
            .fold((0, 0), |(r, e), l| (r + l.requests, e + l.events))
    });
    let totals = numbers.totals.as_ref();
    let (minutes, hour_types) = numbers.last_hour.clone().unwrap_or_default();
    let hours = numbers.hours.clone().unwrap_or_default();
    let received_hour = numbers.hour.map(|(stored, rejected)| stored + rejected);
    html(&DashboardPage {
        viewer: Some(viewer),
        ingest_1m: shown(numbers.ingest.map(|(one, _)| one)),
        ingest_15m: shown(
            numbers
                .ingest
                .map(|(_, n)| format!("{:.1}", n as f64 / 15.0)),
        ),
        ingest_15m_count: shown(numbers.ingest.map(|(_, n)| n)),
        queue,
        consumers,
        lag,
        lag_seconds,
        total_dead_letters: shown(totals.map(|t| t.dead_letters)),
        rejected_hour: shown(numbers.hour.map(|(_, rejected)| rejected)),
        received_hour: shown(received_hour),
        limited_requests: shown(limited.map(|(r, _)| r)),
        limited_events: shown(limited.map(|(_, e)| e)),
        silent_count: apps.iter().filter(|a| a.silent()).count(),
        silent_minutes: state.silent_minutes,
        apps_cut,
        apps_shown: APPLICATIONS_SHOWN,
        apps,
        reasons: reason_rows(
            numbers.reasons.as_deref().unwrap_or_default(),
            received_hour.unwrap_or(0),
        ),
        total_events: shown(totals.map(|t| t.events)),
        total_sessions: shown(totals.map(|t| t.sessions)),
        total_rejected: shown(totals.map(|t| t.rejected)),
        total_applications: shown(totals.map(|t| t.applications)),
        per_minute: BarChart::new(
            "Events stored per minute of their time, last hour (UTC, from the rollups)",
            &minutes,
        ),
        per_hour: BarChart::new(
            "Events stored per hour of their time, last day (UTC, from the rollups)",
            &hours,
        ),
        minutes,
        hour_types,
        hours,
        types: numbers.types.clone().unwrap_or_default(),
        unknown,
        generated: numbers.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        cache_secs: CACHE_FOR.as_secs(),
        refresh_secs: REFRESH.as_secs(),
        since_hour: (numbers.at - chrono::Duration::hours(1))
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};
    use uuid::Uuid;

    use super::{Activity, Lag, age, app_rows, lag};

    #[test]
    fn rates_are_shares_of_everything_received() {
        assert_eq!(super::rate(1, 8), "12.50%");
        assert_eq!(super::rate(3, 0), "0%");
    }

    #[test]
    fn lag_is_the_newest_stored_events_age_while_messages_wait() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let newest = Some(Some(now - Duration::seconds(90)));
        assert_eq!(lag(Some(0), newest, now), Lag::CaughtUp);
        assert_eq!(lag(Some(0), None, now), Lag::CaughtUp);
        assert_eq!(
            lag(Some(3), newest, now),
            Lag::Behind(Duration::seconds(90))
        );
        assert_eq!(
            lag(Some(3), Some(None), now),
            Lag::Unknown,
            "nothing stored"
        );
        assert_eq!(lag(None, newest, now), Lag::Unknown, "queue not answering");
        let ahead = Some(Some(now + Duration::seconds(2)));
        assert_eq!(lag(Some(1), ahead, now), Lag::Behind(Duration::zero()));
    }

    #[test]
    fn ages_read_in_the_largest_useful_units() {
        assert_eq!(age(Duration::seconds(42)), "42 s");
        assert_eq!(age(Duration::seconds(185)), "3 min 5 s");
        assert_eq!(age(Duration::minutes(130)), "2 h 10 min");
        assert_eq!(age(Duration::days(3)), "3 days");
        assert_eq!(age(Duration::seconds(-5)), "0 s");
    }

    #[test]
    fn enabled_applications_quiet_past_the_threshold_are_silent() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let app = |name: &str, disabled, created_mins: i64, last_mins: Option<i64>| Activity {
            id: Uuid::new_v4(),
            name: name.into(),
            disabled,
            created_at: now - Duration::minutes(created_mins),
            last_received: last_mins.map(|m| now - Duration::minutes(m)),
        };
        let rows = app_rows(
            &[
                app("sending", false, 600, Some(5)),
                app("quiet", false, 600, Some(61)),
                app("never", false, 600, None),
                app("new", false, 2, None),
                app("off", true, 600, Some(300)),
            ],
            &[],
            now,
            Duration::minutes(60),
        );
        let states: Vec<_> = rows.iter().map(|r| (r.name.as_str(), r.state)).collect();
        assert_eq!(
            states,
            [
                ("sending", "sending"),
                ("quiet", "silent"),
                ("never", "silent"),
                ("new", "new"),
                ("off", "disabled"),
            ]
        );
        assert_eq!(rows[1].ago, "1 h 1 min ago");
        assert_eq!(rows[2].ago, "never");
    }
}
