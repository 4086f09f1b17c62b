//! The report runner: takes report jobs from their queue one at a time and runs them
//! ([`eye_entity::report_jobs`]). A job's message is acknowledged once the job ended
//! `complete` or `failed`. If the database fails under it, it is tried again after a pause,
//! a few times; then the runner waits [`Pause`] (growing while the database stays away) and
//! RabbitMQ gets the message back for later, at most `delivery_limit` times by the queue's
//! policy (the in-process queue cannot keep it; in both cases the sweep fails the job once
//! no worker can still be running it).

use std::time::Duration;

use chrono::Utc;
use eye_core::Settings;
use eye_core::queue::{BatchLimit, Consumer, Delivery};
use eye_entity::report_jobs::{self, Limits, Outcome};
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::failure::Backoff;

/// Tries of one job in a row while the database fails.
const TRIES: u32 = 5;

/// How often expired reports are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// How long the runner waits after giving up on a job because the database kept failing:
/// from 1 s, doubling each time it gives up again, up to a minute; back to 1 s once a job
/// ends. Without it a redelivered job would be tried again at once, every few seconds, for
/// as long as the database is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause(Duration);

impl Pause {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    /// The wait now, and the next one.
    pub fn take(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        now
    }
}

impl Default for Pause {
    fn default() -> Self {
        Self(Self::FIRST)
    }
}

pub struct ReportRunner {
    db: DatabaseConnection,
    /// Where the reports' queries read: a replica, or `db` again.
    reads: DatabaseConnection,
    consumer: Consumer,
    limits: Limits,
    stop: CancellationToken,
    pause: Pause,
}

impl ReportRunner {
    pub fn new(
        db: DatabaseConnection,
        reads: DatabaseConnection,
        consumer: Consumer,
        settings: &Settings,
        stop: CancellationToken,
    ) -> Self {
        Self {
            db,
            reads,
            consumer,
            limits: Limits::of(settings),
            stop,
            pause: Pause::default(),
        }
    }

    /// Runs jobs until `stop`; a job running then is left to its message's next delivery.
    pub async fn run_until_stopped(mut self) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        let mut backoff = Backoff::default();
        loop {
            let batch = tokio::select! {
                () = self.stop.cancelled() => return,
                _ = sweep.tick() => {
                    self.sweep().await;
                    continue;
                }
                batch = self.consumer.next_batch(BatchLimit::messages(1), Duration::ZERO) => batch,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "the reports queue is unavailable; reconnecting");
                    self.consumer.reset();
                    if !backoff.wait(&self.stop).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            let stop = self.stop.clone();
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.handle(batch) => {}
            }
        }
    }

    async fn sweep(&self) {
        match report_jobs::sweep(&self.db, Utc::now(), self.limits).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired reports deleted"),
            Err(error) => tracing::warn!(%error, "could not delete expired reports"),
        }
    }

    async fn handle(&mut self, batch: Vec<Delivery>) {
        for delivery in &batch {
            let Some(id) = report_jobs::parse_message(&delivery.body) else {
                tracing::warn!(
                    bytes = delivery.body.len(),
                    "a message on the reports queue is not a report job; dropped"
                );
                continue;
            };
            if self.run(id).await {
                self.pause = Pause::default();
            } else {
                let wait = self.pause.take();
                tracing::warn!(report = %id, ?wait, "giving the report job back after a pause");
                tokio::select! {
                    () = self.stop.cancelled() => {}
                    () = tokio::time::sleep(wait) => {}
                }
                // RabbitMQ redelivers what was not acknowledged once the connection is gone.
                self.consumer.reset();
                if !self.consumer.is_in_process() {
                    return;
                }
            }
        }
        if let Err(error) = self.consumer.ack(batch).await {
            tracing::warn!(%error, "a report job could not be acknowledged; it will run again");
        }
    }

    /// Runs report `id`, trying again while the database fails; false if it never ended.
    async fn run(&self, id: uuid::Uuid) -> bool {
        let mut backoff = Backoff::default();
        for _ in 0..TRIES {
            match report_jobs::run(&self.db, &self.reads, id, self.limits).await {
                Ok(outcome) => {
                    match outcome {
                        Outcome::Complete { rows, bytes } => {
                            tracing::info!(report = %id, rows, bytes, "report complete");
                        }
                        Outcome::Failed(reason) => {
                            tracing::warn!(report = %id, %reason, "report failed");
                        }
                        Outcome::Skipped => {
                            tracing::debug!(report = %id, "report already finished or gone")
                        }
                    }
                    return true;
                }
                Err(error) => {
                    tracing::warn!(report = %id, %error, "the database failed under a report; trying again");
                    if !backoff.wait(&self.stop).await {
                        return false;
                    }
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_from_a_second_to_a_minute() {
        let mut pause = Pause::default();
        let waits: Vec<u64> = (0..9).map(|_| pause.take().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
