//! Moving RabbitMQ's dead-letter queue into the `dead_letters` table, where operators see,
//! replay or discard each message. A message is acknowledged only after the row committed, and
//! the queue is dead-lettered `at-least-once` (a broker policy), so none is dropped on the way.

use std::time::Duration;

use eye_core::queue::{BatchLimit, Consumer};
use sea_orm::{DatabaseConnection, TransactionTrait};
use tokio_util::sync::CancellationToken;

use crate::WorkerError;
use crate::failure::Backoff;
use crate::metrics::WorkerMetrics;
use crate::store::{self, DeadRow};

pub struct DeadLetterMover {
    db: DatabaseConnection,
    consumer: Consumer,
    stop: CancellationToken,
    metrics: WorkerMetrics,
}

impl DeadLetterMover {
    pub fn new(db: DatabaseConnection, consumer: Consumer, stop: CancellationToken) -> Self {
        Self {
            db,
            consumer,
            stop,
            metrics: WorkerMetrics::default(),
        }
    }

    /// Counts the dead letters it moves into `metrics`.
    pub fn with_metrics(mut self, metrics: WorkerMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Waits for dead letters and moves them; returns how many.
    pub async fn move_next_batch(&mut self) -> Result<usize, WorkerError> {
        let batch = self
            .consumer
            .next_batch(BatchLimit::messages(64), Duration::from_millis(20))
            .await?;
        let rows: Vec<DeadRow> = batch
            .iter()
            .map(|delivery| {
                let headers = delivery.headers_json();
                DeadRow {
                    body: delivery.body.clone(),
                    reason: reason(&headers),
                    headers,
                }
            })
            .collect();
        let result = async {
            let txn = self.db.begin().await?;
            store::record_dead(&txn, &rows.iter().collect::<Vec<_>>()).await?;
            txn.commit().await
        }
        .await;
        if let Err(e) = result {
            return Err(WorkerError::Unstorable(e.to_string()));
        }
        let moved = batch.len();
        self.consumer.ack(batch).await?;
        self.metrics.dead_letters("broker", moved as u64);
        tracing::warn!(
            moved,
            "dead-lettered messages moved to the dead_letters table"
        );
        Ok(moved)
    }

    pub async fn run_until_stopped(mut self) {
        let mut backoff = Backoff::default();
        let stop = self.stop.clone();
        loop {
            let result = tokio::select! {
                () = stop.cancelled() => break,
                result = self.move_next_batch() => result,
            };
            match result {
                Ok(_) => backoff.reset(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not move dead letters; will retry");
                    self.consumer.reset();
                    if !backoff.wait(&stop).await {
                        break;
                    }
                }
            }
        }
    }
}

/// Why RabbitMQ dead-lettered the message, from its first `x-death` entry.
fn reason(headers: &str) -> String {
    let headers: serde_json::Value = serde_json::from_str(headers).unwrap_or_default();
    let death = &headers["x-death"][0];
    match (death["reason"].as_str(), death["queue"].as_str()) {
        (Some("delivery_limit"), Some(queue)) => {
            format!("delivered too often from {queue} without being stored (delivery limit)")
        }
        (Some(reason), Some(queue)) => format!("dead-lettered from {queue}: {reason}"),
        _ => "dead-lettered by the broker".into(),
    }
}
