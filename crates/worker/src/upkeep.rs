//! What a worker does once a day beside storing: create the coming months' partitions, remove
//! what is older than `retention_days` when it is set, and give a month of many stragglers
//! its own partition. Several workers may each do it; the
//! database serialises their partition changes and a second run finds nothing to do.

use std::time::Duration;

use chrono::Utc;
use eye_entity::partitions;
use sea_orm::{DatabaseConnection, DbErr};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DAILY: Duration = Duration::from_secs(24 * 3600);
/// After a failed run (the database away, a lock not granted in time).
const RETRY: Duration = Duration::from_secs(3600);

/// Runs [`once`] now and then daily until `stop`.
pub fn spawn(
    db: DatabaseConnection,
    retention_days: Option<u32>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // A stopping worker does not wait for a run (a long delete on SQLite): what it
            // did not finish is done by the next.
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                outcome = once(&db, retention_days) => outcome,
            };
            let wait = match outcome {
                Ok(()) => DAILY,
                Err(error) => {
                    tracing::warn!(%error, "partition upkeep failed; trying again in an hour");
                    RETRY
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// Creates missing partitions ahead, applies retention, then adopts stragglers (after
/// retention, so that no partition is made for rows about to go), logging what changed.
pub async fn once(db: &DatabaseConnection, retention_days: Option<u32>) -> Result<(), DbErr> {
    let now = Utc::now();
    let cutoff = retention_days.map(|days| now - chrono::TimeDelta::days(i64::from(days)));
    let created = partitions::create_ahead(db, now, cutoff).await?;
    if !created.is_empty() {
        tracing::info!(?created, "partitions created ahead");
    }
    if let Some(cutoff) = cutoff {
        let removed = partitions::apply_retention(db, cutoff).await?;
        tracing::info!(
            %cutoff,
            dropped = ?removed.partitions,
            events = removed.events,
            rejected_events = removed.rejected_events,
            sessions = removed.sessions,
            "retention applied"
        );
    }
    let adopted = partitions::adopt_stragglers(db).await?;
    if !adopted.is_empty() {
        tracing::info!(?adopted, "partitions created for stragglers");
    }
    Ok(())
}
