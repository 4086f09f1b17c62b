//! The worker: takes messages from the queue in batches, validates every event, stores valid
//! ones with their session and invalid ones with their reasons, and acknowledges only after
//! the transaction committed.
//!
//! - [`consume`]: the loop around [`Worker::process_next_batch`], and draining on stop.
//! - [`batch`]: one batch, from message bytes to rows.
//! - [`arrival`]: what is logged of each stored envelope, by its request id.
//! - [`failure`]: what a failed write does: retry while the database is away, split on a
//!   permanent error until only the event at fault is left.
//! - [`live`]: what a stored batch shows to whoever watches live.
//! - [`dead_letters`]: moving RabbitMQ's dead-letter queue into the `dead_letters` table.
//! - [`upkeep`]: the coming months' partitions and retention, daily.
//! - [`reports`]: report jobs, from their own queue.
//! - [`validation`]: which events are valid; [`reload`]: the validators in force, swapped
//!   when the schema directory is reloaded.

mod arrival;
mod batch;
pub mod consume;
pub mod dead_letters;
mod decode;
mod failure;
mod live;
pub mod metrics;
pub mod reload;
pub mod reports;
pub mod sql;
pub mod store;
pub mod trends;
pub mod upkeep;
pub mod validation;

use std::time::Duration;

use eye_core::Settings;
use eye_core::queue::{BatchLimit, ConsumeError, Consumer, LivePublisher};
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::metrics::WorkerMetrics;
use crate::reload::Validators;
use crate::store::Written;

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub messages: usize,
    pub stored: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Envelopes or whole messages that no worker can read, kept in `dead_letters`.
    pub dead_lettered: u64,
}

impl BatchOutcome {
    fn add(&mut self, written: &Written) {
        self.stored += written.stored;
        self.duplicates += written.duplicates;
        self.rejected += written.rejected;
        self.dead_lettered += written.dead;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Queue(#[from] ConsumeError),
    #[error("stopped before the batch was stored (RabbitMQ keeps it; the in-process queue cannot)")]
    Stopped,
    #[error("a dead letter could not be stored: {0}")]
    Unstorable(String),
}

pub struct Worker {
    db: DatabaseConnection,
    consumer: Consumer,
    validators: Validators,
    batch_limit: BatchLimit,
    batch_wait: Duration,
    /// How long a stopping worker keeps retrying writes for the in-process queue.
    drain_timeout: Duration,
    stop: CancellationToken,
    metrics: WorkerMetrics,
    /// Where stored batches are announced, after their commit, best effort.
    live: LivePublisher,
    /// Whether stored events are added to the per-minute counts (`worker_rollups`).
    rollups: bool,
}

impl Worker {
    /// A worker of the built-in event types; those of `schema_dir` come with
    /// [`Worker::with_validators`], loaded once for all the workers of a process.
    pub fn new(
        db: DatabaseConnection,
        consumer: Consumer,
        settings: &Settings,
        stop: CancellationToken,
    ) -> Self {
        Self {
            db,
            live: consumer.live_publisher(),
            consumer,
            validators: Validators::builtin(settings),
            batch_limit: settings.worker_batch_limit(),
            batch_wait: settings.worker_batch_wait(),
            drain_timeout: Duration::from_secs(settings.drain_timeout_secs),
            stop,
            metrics: WorkerMetrics::default(),
            rollups: settings.worker_rollups,
        }
    }

    /// Counts what this worker does into `metrics` (shared by the workers of a process).
    pub fn with_metrics(mut self, metrics: WorkerMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Validates with `validators` (shared with the process's other workers and reloaded).
    pub fn with_validators(mut self, validators: Validators) -> Self {
        self.validators = validators;
        self
    }

    /// Waits for the next batch and handles it completely.
    pub async fn process_next_batch(&mut self) -> Result<BatchOutcome, WorkerError> {
        let batch = self
            .consumer
            .next_batch(self.batch_limit, self.batch_wait)
            .await?;
        self.handle(batch).await
    }
}
