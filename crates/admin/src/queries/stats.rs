//! Aggregates for the stats api: event counts summed from the per-minute rollups
//! (`event_counts`), and session statistics from `sessions`. Each is one statement (SQLite's
//! percentiles a few), under the read api's statement timeout on PostgreSQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query, SelectStatement};
use sea_orm::{DatabaseConnection, DbBackend, DbErr, QueryResult};
use uuid::Uuid;

/// The width of a counted bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Minute,
    Hour,
    Day,
}

impl Bucket {
    pub const NAMES: [&'static str; 3] = ["minute", "hour", "day"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "minute" => Some(Self::Minute),
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn width(self) -> chrono::TimeDelta {
        match self {
            Self::Minute => chrono::TimeDelta::minutes(1),
            Self::Hour => chrono::TimeDelta::hours(1),
            Self::Day => chrono::TimeDelta::days(1),
        }
    }

    /// The start of the bucket a minute falls in, as UTC text SQLite and this module read.
    fn start(self, backend: DbBackend) -> String {
        match backend {
            DbBackend::Postgres => format!("date_trunc('{}', minute, 'UTC')", self.name()),
            // SQLite keeps `2026-11-24T10:11:00+00:00`: the bucket is a prefix of the text.
            _ => match self {
                Self::Minute => "substr(minute, 1, 16) || ':00+00:00'",
                Self::Hour => "substr(minute, 1, 13) || ':00:00+00:00'",
                Self::Day => "substr(minute, 1, 10) || 'T00:00:00+00:00'",
            }
            .to_owned(),
        }
    }
}

/// What a count is grouped by besides its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Application,
    Category,
    Name,
}

impl Group {
    pub const NAMES: [&'static str; 3] = ["application", "category", "name"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "application" => Some(Self::Application),
            "category" => Some(Self::Category),
            "name" => Some(Self::Name),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn column(self) -> &'static str {
        match self {
            Self::Application => "application_id",
            Self::Category => "category",
            Self::Name => "name",
        }
    }
}

/// Which applications an aggregate covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applications {
    /// Every application (an `events:read:all` token naming none).
    All,
    One(Uuid),
}

#[derive(Debug, Clone)]
pub struct CountsRequest {
    pub applications: Applications,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket: Bucket,
    /// Distinct, in the order asked.
    pub group_by: Vec<Group>,
    pub category: Option<String>,
    pub name: Option<String>,
    /// Rows to read at most; one more means "too many".
    pub limit: u64,
}

/// One bucket's count of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountRow {
    pub start: DateTime<Utc>,
    pub application_id: Option<Uuid>,
    pub category: Option<String>,
    pub name: Option<String>,
    pub count: i64,
}

fn application_filter(select: &mut SelectStatement, applications: &Applications) {
    match applications {
        Applications::One(id) => {
            select.and_where(Expr::col(Alias::new("application_id")).eq(*id));
        }
        // The key leads with the application: naming each lets the database read each one's
        // window as a range instead of the whole table.
        Applications::All => {
            select.and_where(
                Expr::col(Alias::new("application_id")).in_subquery(
                    Query::select()
                        .column(eye_entity::applications::Column::Id)
                        .from(eye_entity::applications::Entity)
                        .to_owned(),
                ),
            );
        }
    }
}

/// Counts per bucket (and group), oldest bucket first; buckets with no events are absent.
/// Reads at most `limit` rows.
pub async fn counts(
    db: &DatabaseConnection,
    timeout: Duration,
    request: &CountsRequest,
) -> Result<Vec<CountRow>, DbErr> {
    let backend = db.get_database_backend();
    let mut select = Query::select();
    select
        .expr_as(
            Expr::cust(request.bucket.start(backend)),
            Alias::new("start"),
        )
        .from(eye_entity::event_counts::Entity)
        .and_where(Expr::col(Alias::new("minute")).gte(request.from))
        .and_where(Expr::col(Alias::new("minute")).lt(request.to));
    application_filter(&mut select, &request.applications);
    if let Some(category) = &request.category {
        select.and_where(Expr::col(Alias::new("category")).eq(category.as_str()));
    }
    if let Some(name) = &request.name {
        select.and_where(Expr::col(Alias::new("name")).eq(name.as_str()));
    }
    // The start is the first column: group and order by position, which both backends take
    // for an expression.
    select.add_group_by([Expr::cust("1")]);
    select.order_by_expr(Expr::cust("1"), Order::Asc);
    for group in &request.group_by {
        let column = Alias::new(group.column());
        select.column(column.clone());
        select.add_group_by([Expr::col(column.clone())]);
        select.order_by(column, Order::Asc);
    }
    select
        .expr_as(
            Expr::cust("CAST(sum(count) AS BIGINT)"),
            Alias::new("count"),
        )
        .limit(request.limit);
    let rows = super::timed(db, timeout, backend.build(&select)).await?;
    let has = |group| request.group_by.contains(&group);
    rows.iter()
        .map(|row| {
            Ok(CountRow {
                start: start_of(backend, row)?,
                application_id: if has(Group::Application) {
                    Some(row.try_get("", "application_id")?)
                } else {
                    None
                },
                category: if has(Group::Category) {
                    Some(row.try_get("", "category")?)
                } else {
                    None
                },
                name: if has(Group::Name) {
                    Some(row.try_get("", "name")?)
                } else {
                    None
                },
                count: row.try_get("", "count")?,
            })
        })
        .collect()
}

fn start_of(backend: DbBackend, row: &QueryResult) -> Result<DateTime<Utc>, DbErr> {
    if backend == DbBackend::Postgres {
        return row.try_get("", "start");
    }
    let text: String = row.try_get("", "start")?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.to_utc())
        .map_err(|e| DbErr::Custom(format!("a counted minute is not RFC 3339: {e}")))
}

/// Average and percentiles of one measure over sessions.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Spread {
    pub average: f64,
    pub p50: f64,
    pub p90: f64,
}

/// The sessions that began in a window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SessionStats {
    pub sessions: i64,
    /// `None` when there are no sessions.
    pub events: Option<Spread>,
    /// From the first event to the last, in seconds.
    pub duration: Option<Spread>,
}

/// Percentiles interpolate between the two nearest values, as PostgreSQL's
/// `percentile_cont` does; SQLite reads those two values by their rank.
pub async fn sessions(
    db: &DatabaseConnection,
    timeout: Duration,
    applications: &Applications,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<SessionStats, DbErr> {
    let backend = db.get_database_backend();
    let duration = duration(backend);
    let window = |select: &mut SelectStatement| sessions_began(select, applications, from, to);
    let mut select = Query::select();
    select
        .expr_as(Expr::cust("count(*)"), Alias::new("sessions"))
        .expr_as(
            Expr::cust("CAST(avg(event_count) AS DOUBLE PRECISION)"),
            Alias::new("events_average"),
        )
        .expr_as(
            Expr::cust(format!("CAST(avg({duration}) AS DOUBLE PRECISION)")),
            Alias::new("duration_average"),
        );
    if backend == DbBackend::Postgres {
        for (measure, expression) in [("events", "event_count"), ("duration", duration)] {
            for p in [50, 90] {
                select.expr_as(
                    Expr::cust(format!(
                        "percentile_cont(0.{p}) WITHIN GROUP (ORDER BY {expression})"
                    )),
                    Alias::new(format!("{measure}_p{p}")),
                );
            }
        }
    }
    window(&mut select);
    let rows = super::timed(db, timeout, backend.build(&select)).await?;
    let row = rows
        .first()
        .ok_or_else(|| DbErr::Custom("an aggregate answers one row".into()))?;
    let sessions: i64 = row.try_get("", "sessions")?;
    if sessions == 0 {
        return Ok(SessionStats::default());
    }
    let average = |measure: &str| row.try_get::<f64>("", &format!("{measure}_average"));
    let (events, duration) = if backend == DbBackend::Postgres {
        let p = |measure: &str, p: u32| row.try_get::<f64>("", &format!("{measure}_p{p}"));
        (
            Spread {
                average: average("events")?,
                p50: p("events", 50)?,
                p90: p("events", 90)?,
            },
            Spread {
                average: average("duration")?,
                p50: p("duration", 50)?,
                p90: p("duration", 90)?,
            },
        )
    } else {
        let mut spreads = Vec::new();
        for (measure, expression) in [("events", "event_count"), ("duration", duration)] {
            let at = |p| {
                let mut select = Query::select();
                select.expr_as(
                    Expr::cust(format!("CAST({expression} AS DOUBLE PRECISION)")),
                    Alias::new("value"),
                );
                window(&mut select);
                percentile(db, timeout, select, sessions, p)
            };
            spreads.push(Spread {
                average: average(measure)?,
                p50: at(0.5).await?,
                p90: at(0.9).await?,
            });
        }
        (spreads[0], spreads[1])
    };
    Ok(SessionStats {
        sessions,
        events: Some(events),
        duration: Some(duration),
    })
}

/// The `p` percentile of the `value` of `select`'s `n` rows, interpolated between the two
/// values around its rank.
async fn percentile(
    db: &DatabaseConnection,
    timeout: Duration,
    mut select: SelectStatement,
    n: i64,
    p: f64,
) -> Result<f64, DbErr> {
    let rank = p * (n - 1) as f64;
    let below = rank.floor();
    select
        .order_by_expr(Expr::cust("1"), Order::Asc)
        .offset(below as u64)
        .limit(2);
    let rows = super::timed(db, timeout, db.get_database_backend().build(&select)).await?;
    let values = rows
        .iter()
        .map(|row| row.try_get::<f64>("", "value"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match values.as_slice() {
        [low, high, ..] => low + (high - low) * (rank - below),
        [only] => *only,
        [] => 0.0,
    })
}

/// A session's length in seconds, from its first event to its last.
fn duration(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => {
            "CAST(extract(epoch FROM last_seen - first_seen) AS DOUBLE PRECISION)"
        }
        _ => "(julianday(last_seen) - julianday(first_seen)) * 86400.0",
    }
}

/// The sessions of `applications` whose first event is in the window.
fn sessions_began(
    select: &mut SelectStatement,
    applications: &Applications,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) {
    select
        .from(eye_entity::sessions::Entity)
        .and_where(Expr::col(Alias::new("first_seen")).gte(from))
        .and_where(Expr::col(Alias::new("first_seen")).lt(to));
    application_filter(select, applications);
}

/// The bands of the session-length histogram: each holds lengths below its bound, in seconds,
/// and at or above the previous one's; the last holds the rest.
pub const LENGTH_BANDS: [(f64, &str); 7] = [
    (1.0, "under 1 s"),
    (10.0, "1–10 s"),
    (60.0, "10 s–1 min"),
    (300.0, "1–5 min"),
    (900.0, "5–15 min"),
    (3600.0, "15 min–1 h"),
    (f64::INFINITY, "1 h or more"),
];

/// How many sessions that began in the window fall in each of [`LENGTH_BANDS`].
pub async fn session_lengths(
    db: &DatabaseConnection,
    timeout: Duration,
    applications: &Applications,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<[i64; LENGTH_BANDS.len()], DbErr> {
    let backend = db.get_database_backend();
    let length = duration(backend);
    let mut band = String::from("CASE");
    for (i, (bound, _)) in LENGTH_BANDS.iter().enumerate() {
        if bound.is_finite() {
            band.push_str(&format!(" WHEN {length} < {bound:.1} THEN {i}"));
        } else {
            band.push_str(&format!(" ELSE {i} END"));
        }
    }
    let mut select = Query::select();
    select
        .expr_as(Expr::cust(band), Alias::new("band"))
        .expr_as(Expr::cust("count(*)"), Alias::new("sessions"));
    sessions_began(&mut select, applications, from, to);
    select.add_group_by([Expr::cust("1")]);
    let mut bands = [0; LENGTH_BANDS.len()];
    for row in super::timed(db, timeout, backend.build(&select)).await? {
        let band: i32 = row.try_get("", "band")?;
        if let Some(n) = usize::try_from(band).ok().and_then(|b| bands.get_mut(b)) {
            *n = row.try_get("", "sessions")?;
        }
    }
    Ok(bands)
}

/// The start of the bucket `at` falls in, UTC.
pub fn bucket_start(at: DateTime<Utc>, bucket: Bucket) -> DateTime<Utc> {
    use chrono::DurationRound;
    at.duration_trunc(bucket.width()).unwrap_or(at)
}
