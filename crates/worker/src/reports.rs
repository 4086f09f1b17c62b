//! The report runner: takes report jobs from their queue one at a time and runs them
//! ([`eye_entity::report_jobs`]). A job's message is acknowledged once the job ended
//! `complete` or `failed`. If the database fails under it, it is tried again after a pause,
//! a few times; then RabbitMQ gets the message back for later (the in-process queue cannot
//! keep it: the sweep fails the job once no worker can still be running it).

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

pub struct ReportRunner {
    db: DatabaseConnection,
    consumer: Consumer,
    limits: Limits,
    stop: CancellationToken,
}

impl ReportRunner {
    pub fn new(
        db: DatabaseConnection,
        consumer: Consumer,
        settings: &Settings,
        stop: CancellationToken,
    ) -> Self {
        Self {
            db,
            consumer,
            limits: Limits::of(settings),
            stop,
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
            if !self.run(id).await {
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
            match report_jobs::run(&self.db, id, self.limits).await {
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
