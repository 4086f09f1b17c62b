//! The trends publisher: every worker process runs one; each [`TICK`] it offers to publish
//! the last whole minute, and the database elects one of them per minute
//! ([`eye_entity::trends::claim`]). A minute is published [`SETTLE`] after it ended, so the
//! events the workers were still storing then are in it; what arrives later is in the rollups
//! (the dashboard, the stats api) but not in the trend already sent.
//!
//! Publishing waits for the broker's confirm inside the claiming transaction: a trend the
//! broker refused leaves the mark where it was, and the next tick tries the minute again.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use eye_core::queue::{PublishError, Trend, TrendPublisher};
use eye_entity::{reads, rollups, trends};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, TransactionTrait};
use tokio_util::sync::CancellationToken;

/// How often a worker offers to publish.
pub const TICK: Duration = Duration::from_secs(5);
/// How long after a minute ends it is published.
pub const SETTLE: TimeDelta = TimeDelta::seconds(10);
/// How long counting a minute's pages may take before the trend goes without them.
const PAGES_TIMEOUT: Duration = Duration::from_secs(10);

/// What one offer came to.
#[derive(Debug)]
pub enum Outcome {
    /// This worker published the minute.
    Published(Trend),
    /// Another worker holds the lock, or published the minute already.
    NotElected,
}

#[derive(Debug, thiserror::Error)]
pub enum TrendError {
    #[error("the database failed: {0}")]
    Db(#[from] DbErr),
    #[error("the broker did not take the trend: {0}")]
    Publish(#[from] PublishError),
}

pub struct TrendRunner {
    db: DatabaseConnection,
    publisher: TrendPublisher,
}

/// The last minute to publish at `now`.
pub fn due(now: DateTime<Utc>) -> DateTime<Utc> {
    rollups::minute_of(now - SETTLE) - TimeDelta::minutes(1)
}

impl TrendRunner {
    pub fn new(db: DatabaseConnection, publisher: TrendPublisher) -> Self {
        Self { db, publisher }
    }

    /// Offers each [`TICK`] until `stop`.
    pub async fn run_until_stopped(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.offer(due(Utc::now())).await {
                Ok(Outcome::Published(trend)) => {
                    tracing::debug!(minute = %trend.minute, "trend published");
                    failing = false;
                }
                Ok(Outcome::NotElected) => failing = false,
                // Said once while it lasts, not every tick.
                Err(error) if !failing => {
                    tracing::warn!(%error, "could not publish the trend; trying again");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Publishes `minute` unless another worker holds the lock or published it already.
    pub async fn offer(&self, minute: DateTime<Utc>) -> Result<Outcome, TrendError> {
        let txn = self.db.begin().await?;
        if !trends::claim(&txn, minute).await? {
            return Ok(Outcome::NotElected);
        }
        let counts = trends::counts(&txn, minute).await?;
        let pages = pages(&txn, minute).await?;
        let trend = Trend {
            minute,
            published_at: Utc::now(),
            counts,
            pages_counted: pages.is_some(),
            top_pages: pages.unwrap_or_default(),
        };
        self.publisher.publish(&trend).await?;
        txn.commit().await?;
        Ok(Outcome::Published(trend))
    }
}

/// The minute's top pages, or none when counting them took longer than [`PAGES_TIMEOUT`]
/// (PostgreSQL; a savepoint keeps the claim's transaction usable).
async fn pages(
    txn: &sea_orm::DatabaseTransaction,
    minute: DateTime<Utc>,
) -> Result<Option<Vec<eye_core::queue::TopPage>>, DbErr> {
    let savepoint = txn.begin().await?;
    if savepoint.get_database_backend() == DbBackend::Postgres {
        let millis = PAGES_TIMEOUT.as_millis();
        savepoint
            .execute_unprepared(&format!("SET LOCAL statement_timeout = {millis}"))
            .await?;
    }
    match trends::top_pages(&savepoint, minute).await {
        Ok(pages) => {
            savepoint.commit().await?;
            Ok(Some(pages))
        }
        Err(e) if reads::is_statement_timeout(&e) => {
            tracing::warn!(%minute, "counting the top pages took too long; the trend goes without them");
            savepoint.rollback().await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
