//! Report jobs. A request becomes a `reports` row (`running`) and a message on the reports
//! queue; a worker runs it into CSV chunks and marks it `complete`, or `failed` with the
//! reason. A job a worker started and never finished (the worker stopped, the database went
//! away) is delivered again and starts over as a new attempt, whose chunks never mix with an
//! earlier attempt's; after [`MAX_ATTEMPTS`] it fails. Finished reports expire
//! `report_retention_hours` later, and [`sweep`] deletes them.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Select,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{event_counts, reads, rejected_events, report_chunks, reports, sessions, tokens};

pub const RUNNING: &str = "running";
pub const COMPLETE: &str = "complete";
pub const FAILED: &str = "failed";

/// Workers that may start one job before it fails.
pub const MAX_ATTEMPTS: i32 = 3;

/// About this much CSV per stored chunk: what a worker holds, and what a download reads at once.
const CHUNK_BYTES: usize = 1 << 20;

/// Rows read per query.
const PAGE: u64 = 5_000;

/// What a report lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Events per application, category and name in the window, from the rollups.
    EventsByType,
    /// Every session whose first event is in the window.
    Sessions,
    /// Every event rejected in the window, with its reasons and payload.
    Rejections,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::EventsByType, Kind::Sessions, Kind::Rejections];

    pub fn name(self) -> &'static str {
        match self {
            Kind::EventsByType => "events_by_type",
            Kind::Sessions => "sessions",
            Kind::Rejections => "rejections",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// What people read in lists.
    pub fn title(self) -> &'static str {
        match self {
            Kind::EventsByType => "Events by type",
            Kind::Sessions => "Sessions",
            Kind::Rejections => "Rejections",
        }
    }

    /// Whether category and name narrow it (sessions have neither).
    pub fn has_types(self) -> bool {
        self != Kind::Sessions
    }

    pub fn header(self) -> &'static [&'static str] {
        match self {
            Kind::EventsByType => &["application", "category", "name", "events"],
            Kind::Sessions => &[
                "application",
                "session_id",
                "first_seen",
                "last_seen",
                "events",
                "duration_seconds",
            ],
            Kind::Rejections => &[
                "application",
                "id",
                "rejected_at",
                "received_at",
                "category",
                "name",
                "reasons",
                "payload",
            ],
        }
    }
}

/// What a report covers and who asked.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    /// `None`: every application.
    pub application_id: Option<Uuid>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub category: Option<String>,
    pub name: Option<String>,
    pub requested_by: String,
}

/// How far one job may go, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: u64,
    pub timeout: Duration,
    /// How long a finished report is kept.
    pub keep: TimeDelta,
}

impl Limits {
    pub fn of(settings: &eye_core::Settings) -> Self {
        Self {
            max_rows: settings.report_max_rows,
            timeout: settings.report_timeout(),
            keep: TimeDelta::hours(i64::from(settings.report_retention_hours)),
        }
    }
}

/// Records a new job, `running`; its message is published next.
pub async fn create(
    db: &impl ConnectionTrait,
    request: &Request,
    keep: TimeDelta,
) -> Result<reports::Model, DbErr> {
    let now = Utc::now();
    let row = reports::ActiveModel {
        id: Set(Uuid::now_v7()),
        application_id: Set(request.application_id),
        kind: Set(request.kind.name().to_owned()),
        window_from: Set(request.from),
        window_to: Set(request.to),
        category: Set(request.category.clone()),
        name: Set(request.name.clone()),
        requested_by: Set(request.requested_by.clone()),
        status: Set(RUNNING.to_owned()),
        reason: Set(None),
        attempts: Set(0),
        result_attempt: Set(None),
        row_count: Set(None),
        byte_count: Set(None),
        created_at: Set(now),
        completed_at: Set(None),
        expires_at: Set(now + keep),
    };
    reports::Entity::insert(row).exec_with_returning(db).await
}

/// Forgets a job whose message could not be queued: it was never accepted.
pub async fn withdraw(db: &impl ConnectionTrait, id: Uuid) -> Result<(), DbErr> {
    reports::Entity::delete_by_id(id).exec(db).await?;
    Ok(())
}

/// The queue message that asks a worker to run report `id`.
pub fn message(id: Uuid) -> Vec<u8> {
    format!(r#"{{"report_id":"{id}"}}"#).into_bytes()
}

/// The report a queue message asks for; `None` if it is not such a message.
pub fn parse_message(body: &[u8]) -> Option<Uuid> {
    #[derive(Deserialize)]
    struct Message {
        report_id: Uuid,
    }
    serde_json::from_slice::<Message>(body)
        .ok()
        .map(|m| m.report_id)
}

/// What running a job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Complete {
        rows: u64,
        bytes: u64,
    },
    Failed(String),
    /// Nothing to do: the report is gone, finished, or being run by another attempt.
    Skipped,
}

/// Why writing stopped before the end.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("too many rows")]
    TooManyRows,
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Where a report's rows are read (`reads`, a replica or the primary again) and its job and
/// CSV are written (`primary`).
#[derive(Clone, Copy)]
struct Databases<'a> {
    primary: &'a DatabaseConnection,
    reads: &'a DatabaseConnection,
}

/// Runs report `id` to its end, reading its rows from `reads` (a replica, or `db` again).
/// An `Err` is a database failing under it: the attempt counts, and the job is run again
/// when its message comes back.
pub async fn run(
    db: &DatabaseConnection,
    reads: &DatabaseConnection,
    id: Uuid,
    limits: Limits,
) -> Result<Outcome, DbErr> {
    let Some(report) = reports::Entity::find_by_id(id).one(db).await? else {
        return Ok(Outcome::Skipped);
    };
    if report.status != RUNNING {
        return Ok(Outcome::Skipped);
    }
    if report.attempts >= MAX_ATTEMPTS {
        let reason = format!(
            "{MAX_ATTEMPTS} attempts were started and none finished: a worker stopped or the \
             database failed each time"
        );
        return fail(db, id, reason, limits.keep).await;
    }
    let attempt = report.attempts + 1;
    let claimed = reports::Entity::update_many()
        .col_expr(reports::Column::Attempts, Expr::value(attempt))
        .filter(reports::Column::Id.eq(id))
        .filter(reports::Column::Status.eq(RUNNING))
        .filter(reports::Column::Attempts.eq(report.attempts))
        .exec(db)
        .await?;
    if claimed.rows_affected == 0 {
        return Ok(Outcome::Skipped);
    }
    let Some(kind) = Kind::parse(&report.kind) else {
        let reason = format!("`{}` is not a kind of report", report.kind);
        return fail(db, id, reason, limits.keep).await;
    };
    let mut csv = Chunks::new(id, attempt, limits.max_rows);
    let written = tokio::time::timeout(
        limits.timeout,
        write(
            Databases { primary: db, reads },
            &report,
            kind,
            &mut csv,
            limits,
        ),
    )
    .await;
    let reason = match written {
        Ok(Ok(())) => return complete(db, id, attempt, csv, limits.keep).await,
        Ok(Err(Stop::TooManyRows)) => format!(
            "the report would hold more than {} rows (report_max_rows): narrow its window or \
             filter it",
            limits.max_rows
        ),
        Ok(Err(Stop::Db(e))) if !reads::is_statement_timeout(&e) => return Err(e),
        Ok(Err(Stop::Db(_))) | Err(_) => format!(
            "the report took longer than {} s (report_timeout_secs) and was stopped: narrow \
             its window or filter it",
            limits.timeout.as_secs()
        ),
    };
    fail(db, id, reason, limits.keep).await
}

async fn complete(
    db: &DatabaseConnection,
    id: Uuid,
    attempt: i32,
    mut csv: Chunks,
    keep: TimeDelta,
) -> Result<Outcome, DbErr> {
    let now = Utc::now();
    let (rows, bytes) = (csv.rows, csv.bytes);
    csv.flush(db).await?;
    let done = reports::Entity::update_many()
        .col_expr(reports::Column::Status, Expr::value(COMPLETE))
        .col_expr(reports::Column::ResultAttempt, Expr::value(attempt))
        .col_expr(reports::Column::RowCount, Expr::value(count(rows)))
        .col_expr(reports::Column::ByteCount, Expr::value(count(bytes)))
        .col_expr(reports::Column::CompletedAt, Expr::value(now))
        .col_expr(reports::Column::ExpiresAt, Expr::value(now + keep))
        .filter(reports::Column::Id.eq(id))
        .filter(reports::Column::Status.eq(RUNNING))
        .exec(db)
        .await?;
    // Whichever attempt finished first is the report. If it is this one, every other
    // attempt's chunks go; if not (the report ended meanwhile), this one's do.
    let won = done.rows_affected > 0;
    let stale = if won {
        report_chunks::Column::Attempt.ne(attempt)
    } else {
        report_chunks::Column::Attempt.eq(attempt)
    };
    report_chunks::Entity::delete_many()
        .filter(report_chunks::Column::ReportId.eq(id))
        .filter(stale)
        .exec(db)
        .await?;
    Ok(if won {
        Outcome::Complete { rows, bytes }
    } else {
        Outcome::Skipped
    })
}

/// Marks report `id` failed with `reason` and drops whatever CSV its attempts wrote.
pub async fn fail(
    db: &impl ConnectionTrait,
    id: Uuid,
    reason: String,
    keep: TimeDelta,
) -> Result<Outcome, DbErr> {
    let now = Utc::now();
    reports::Entity::update_many()
        .col_expr(reports::Column::Status, Expr::value(FAILED))
        .col_expr(reports::Column::Reason, Expr::value(reason.clone()))
        .col_expr(reports::Column::CompletedAt, Expr::value(now))
        .col_expr(reports::Column::ExpiresAt, Expr::value(now + keep))
        .filter(reports::Column::Id.eq(id))
        .filter(reports::Column::Status.eq(RUNNING))
        .exec(db)
        .await?;
    report_chunks::Entity::delete_many()
        .filter(report_chunks::Column::ReportId.eq(id))
        .exec(db)
        .await?;
    Ok(Outcome::Failed(reason))
}

/// Deletes the reports past their expiry, with their CSV, and fails the running ones that no
/// worker can still be running (older than every attempt's timeout together, with room to
/// spare): their message was lost with an in-process queue. Returns how many it deleted.
pub async fn sweep(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    limits: Limits,
) -> Result<u64, DbErr> {
    let expired = reports::Entity::delete_many()
        .filter(reports::Column::ExpiresAt.lt(now))
        .filter(reports::Column::Status.ne(RUNNING))
        .exec(db)
        .await?;
    let spare = TimeDelta::minutes(10);
    let longest = TimeDelta::from_std(limits.timeout * MAX_ATTEMPTS.unsigned_abs())
        .unwrap_or(TimeDelta::MAX / 2);
    let abandoned = reports::Entity::find()
        .filter(reports::Column::Status.eq(RUNNING))
        .filter(reports::Column::CreatedAt.lt(now - longest - spare))
        .all(db)
        .await?;
    for report in abandoned {
        let reason = "no worker finished the report in time; its job was lost".to_owned();
        fail(db, report.id, reason, limits.keep).await?;
    }
    Ok(expired.rows_affected)
}

/// The reports still running, oldest first: what an in-process queue lost when its process
/// stopped, to queue again at start.
pub async fn running(db: &impl ConnectionTrait) -> Result<Vec<Uuid>, DbErr> {
    Ok(reports::Entity::find()
        .filter(reports::Column::Status.eq(RUNNING))
        .order_by_asc(reports::Column::CreatedAt)
        .all(db)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect())
}

/// Chunk `seq` of a complete report's CSV; `None` past the last.
pub async fn chunk(
    db: &impl ConnectionTrait,
    report: &reports::Model,
    seq: i32,
) -> Result<Option<String>, DbErr> {
    let Some(attempt) = report.result_attempt else {
        return Ok(None);
    };
    Ok(report_chunks::Entity::find_by_id((report.id, attempt, seq))
        .one(db)
        .await?
        .map(|c| c.body))
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The CSV being written: lines gather up to [`CHUNK_BYTES`], then go to the database.
struct Chunks {
    report_id: Uuid,
    attempt: i32,
    seq: i32,
    buffer: String,
    rows: u64,
    bytes: u64,
    max_rows: u64,
}

impl Chunks {
    fn new(report_id: Uuid, attempt: i32, max_rows: u64) -> Self {
        Self {
            report_id,
            attempt,
            seq: 0,
            buffer: String::new(),
            rows: 0,
            bytes: 0,
            max_rows,
        }
    }

    fn header(&mut self, fields: &[&str]) {
        let line = eye_core::csv::line(fields);
        self.bytes += line.len() as u64;
        self.buffer.push_str(&line);
    }

    async fn row<S: AsRef<str>>(
        &mut self,
        db: &impl ConnectionTrait,
        fields: &[S],
    ) -> Result<(), Stop> {
        self.rows += 1;
        if self.rows > self.max_rows {
            return Err(Stop::TooManyRows);
        }
        let line = eye_core::csv::line(fields);
        self.bytes += line.len() as u64;
        self.buffer.push_str(&line);
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush(db).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, db: &impl ConnectionTrait) -> Result<(), DbErr> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = report_chunks::ActiveModel {
            report_id: Set(self.report_id),
            attempt: Set(self.attempt),
            seq: Set(self.seq),
            body: Set(std::mem::take(&mut self.buffer)),
        };
        report_chunks::Entity::insert(chunk)
            .exec_without_returning(db)
            .await?;
        self.seq += 1;
        Ok(())
    }
}

/// Writes every row of `report` into `csv`, application by application (by name).
async fn write(
    db: Databases<'_>,
    report: &reports::Model,
    kind: Kind,
    csv: &mut Chunks,
    limits: Limits,
) -> Result<(), Stop> {
    let names: HashMap<Uuid, String> = tokens::applications(db.primary)
        .await?
        .into_iter()
        .map(|a| (a.id, a.name))
        .collect();
    let mut applications: Vec<(&String, Uuid)> = names
        .iter()
        .filter(|(id, _)| report.application_id.is_none_or(|only| only == **id))
        .map(|(id, name)| (name, *id))
        .collect();
    applications.sort();
    csv.header(kind.header());
    for (name, application) in applications {
        match kind {
            Kind::EventsByType => by_type(db, report, application, name, csv, limits).await?,
            Kind::Sessions => sessions_of(db, report, application, name, csv, limits).await?,
            Kind::Rejections => rejections_of(db, report, application, name, csv, limits).await?,
        }
    }
    Ok(())
}

/// `select` narrowed to one application and to the report's window on `time`.
fn covered<E: EntityTrait>(
    select: Select<E>,
    report: &reports::Model,
    (column, application): (E::Column, Uuid),
    time: E::Column,
) -> Select<E> {
    select
        .filter(column.eq(application))
        .filter(time.gte(report.window_from))
        .filter(time.lt(report.window_to))
}

/// `select` narrowed to the report's category and name, when it names them.
fn of_types<E: EntityTrait>(
    mut select: Select<E>,
    report: &reports::Model,
    (category, name): (E::Column, E::Column),
) -> Select<E> {
    if let Some(wanted) = &report.category {
        select = select.filter(category.eq(wanted.as_str()));
    }
    if let Some(wanted) = &report.name {
        select = select.filter(name.eq(wanted.as_str()));
    }
    select
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn by_type(
    db: Databases<'_>,
    report: &reports::Model,
    application: Uuid,
    name: &str,
    csv: &mut Chunks,
    limits: Limits,
) -> Result<(), Stop> {
    use event_counts::Column;
    let select = covered(
        event_counts::Entity::find(),
        report,
        (Column::ApplicationId, application),
        Column::Minute,
    );
    let select = of_types(select, report, (Column::Category, Column::Name))
        .select_only()
        .column(Column::Category)
        .column(Column::Name)
        .column_as(Expr::cust("CAST(SUM(count) AS BIGINT)"), "count")
        .group_by(Column::Category)
        .group_by(Column::Name)
        .order_by_asc(Column::Category)
        .order_by_asc(Column::Name)
        .limit(limits.max_rows.saturating_add(1))
        .into_tuple::<(String, String, i64)>();
    let transaction = reads::bounded(db.reads, limits.timeout).await?;
    let rows = select.all(&transaction).await?;
    transaction.commit().await?;
    for (category, event_name, count) in rows {
        csv.row(
            db.primary,
            &[name, &category, &event_name, &count.to_string()],
        )
        .await?;
    }
    Ok(())
}

async fn sessions_of(
    db: Databases<'_>,
    report: &reports::Model,
    application: Uuid,
    name: &str,
    csv: &mut Chunks,
    limits: Limits,
) -> Result<(), Stop> {
    use sessions::Column;
    let select = covered(
        sessions::Entity::find(),
        report,
        (Column::ApplicationId, application),
        Column::FirstSeen,
    );
    let key = |s: &sessions::Model| (s.first_seen, s.id);
    let line = |s: &sessions::Model| {
        let duration = (s.last_seen - s.first_seen).num_milliseconds();
        vec![
            name.to_owned(),
            s.id.to_string(),
            time(s.first_seen),
            time(s.last_seen),
            s.event_count.to_string(),
            format!("{:.3}", duration as f64 / 1000.0),
        ]
    };
    by_pages(
        db,
        select,
        (Column::FirstSeen, Column::Id),
        key,
        line,
        csv,
        limits,
    )
    .await
}

/// Every row of `select` into `csv`, read a page at a time in order of (`time`, `id`) from
/// where the last page ended (`key`), each written as `line` makes it.
async fn by_pages<E: EntityTrait>(
    db: Databases<'_>,
    select: Select<E>,
    (time, id): (E::Column, E::Column),
    key: impl Fn(&E::Model) -> (DateTime<Utc>, Uuid),
    line: impl Fn(&E::Model) -> Vec<String>,
    csv: &mut Chunks,
    limits: Limits,
) -> Result<(), Stop> {
    let mut after: Option<(DateTime<Utc>, Uuid)> = None;
    loop {
        let mut page = select.clone();
        if let Some((at, last)) = after {
            page = page.filter(
                Expr::tuple([Expr::col(time), Expr::col(id)])
                    .gt(Expr::tuple([Expr::val(at), Expr::val(last)])),
            );
        }
        let page = page.order_by_asc(time).order_by_asc(id).limit(PAGE);
        let transaction = reads::bounded(db.reads, limits.timeout).await?;
        let rows = page.all(&transaction).await?;
        transaction.commit().await?;
        for row in &rows {
            csv.row(db.primary, &line(row)).await?;
        }
        match rows.last() {
            Some(last) if rows.len() as u64 == PAGE => after = Some(key(last)),
            _ => return Ok(()),
        }
    }
}

/// The reason codes of a rejected event, separated by `;`.
fn reason_codes(reasons: &serde_json::Value) -> String {
    reasons
        .as_array()
        .map(|reasons| {
            reasons
                .iter()
                .filter_map(|r| r.get("code").and_then(|c| c.as_str()))
                .collect::<Vec<_>>()
                .join(";")
        })
        .unwrap_or_default()
}

async fn rejections_of(
    db: Databases<'_>,
    report: &reports::Model,
    application: Uuid,
    name: &str,
    csv: &mut Chunks,
    limits: Limits,
) -> Result<(), Stop> {
    use rejected_events::Column;
    let select = covered(
        rejected_events::Entity::find(),
        report,
        (Column::ApplicationId, application),
        Column::RejectedAt,
    );
    let select = of_types(select, report, (Column::Category, Column::Name));
    let key = |r: &rejected_events::Model| (r.rejected_at, r.id);
    let line = |r: &rejected_events::Model| {
        vec![
            name.to_owned(),
            r.id.to_string(),
            time(r.rejected_at),
            time(r.received_at),
            r.category.clone(),
            r.name.clone(),
            reason_codes(&r.reasons),
            r.payload.clone(),
        ]
    };
    by_pages(
        db,
        select,
        (Column::RejectedAt, Column::Id),
        key,
        line,
        csv,
        limits,
    )
    .await
}
