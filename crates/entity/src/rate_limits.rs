//! Per-application rate limits: what `eye app limit` and the admin panel set, and the counts of
//! what the apis refused for them.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use eye_core::rate_limit::{Rate, RateLimit};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set,
};
use uuid::Uuid;

use crate::tokens::{TokenOpError, find_application};
use crate::{applications, rate_limited};

/// How long the per-minute counts of refused requests are kept.
pub const KEEP_REFUSED: TimeDelta = TimeDelta::days(1);

/// The application's own limit, or `None` when it uses the default. A row whose columns do
/// not make a limit (set by hand) counts as no override.
pub fn override_of(app: &applications::Model) -> Option<RateLimit> {
    let events = u32::try_from(app.rate_limit_events?).ok()?;
    let period_secs = u32::try_from(app.rate_limit_period_secs?).ok()?;
    let burst = u64::try_from(app.rate_limit_burst?).ok()?;
    RateLimit::new(Rate::new(events, period_secs)?, burst).ok()
}

/// Gives the application a limit of its own (`Some`) or returns it to the default (`None`).
/// Every api applies it within `token_refresh_ms`.
pub async fn set(
    db: &impl ConnectionTrait,
    name: &str,
    limit: Option<RateLimit>,
) -> Result<applications::Model, TokenOpError> {
    let app = find_application(db, name)
        .await?
        .ok_or_else(|| TokenOpError::NoSuchApplication(name.to_owned()))?;
    let mut app: applications::ActiveModel = app.into();
    app.rate_limit_events = Set(limit.map(|l| i64::from(l.rate.events())));
    app.rate_limit_period_secs = Set(limit.map(|l| i64::from(l.rate.period_secs())));
    app.rate_limit_burst = Set(limit.map(|l| i64::from(l.burst.get())));
    Ok(app.update(db).await?)
}

/// What one api refused for one application since it last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub application_id: Uuid,
    pub requests: i64,
    pub events: i64,
}

/// The start of the minute holding `at`.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

/// Adds to the refused counts of `minute`: each api adds what it refused, so the rows hold
/// the sum over every api.
pub async fn add_refused(
    db: &impl ConnectionTrait,
    minute: DateTime<Utc>,
    refused: &[Refused],
) -> Result<(), DbErr> {
    if refused.is_empty() {
        return Ok(());
    }
    let rows = refused.iter().map(|r| rate_limited::ActiveModel {
        application_id: Set(r.application_id),
        minute: Set(minute),
        requests: Set(r.requests),
        events: Set(r.events),
    });
    let add = |column: rate_limited::Column, name: &str| {
        Expr::col((rate_limited::Entity, column)).add(Expr::cust(format!("excluded.{name}")))
    };
    rate_limited::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([
                rate_limited::Column::ApplicationId,
                rate_limited::Column::Minute,
            ])
            .value(
                rate_limited::Column::Requests,
                add(rate_limited::Column::Requests, "requests"),
            )
            .value(
                rate_limited::Column::Events,
                add(rate_limited::Column::Events, "events"),
            )
            .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Deletes the counts older than [`KEEP_REFUSED`].
pub async fn prune_refused(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<u64, DbErr> {
    let result = rate_limited::Entity::delete_many()
        .filter(rate_limited::Column::Minute.lt(minute_of(now) - KEEP_REFUSED))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}
