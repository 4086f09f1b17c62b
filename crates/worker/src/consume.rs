//! The consume loop: it only loops around [`Worker::process_next_batch`]'s steps, backs off
//! while the queue is away, and on stop drains what only this process holds.

use crate::failure::Backoff;
use crate::{Worker, WorkerError};

/// How a worker ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    /// Messages the in-process queue still held at stop that were then stored.
    pub drained: usize,
    /// Messages the in-process queue still held that could not be stored (its events are
    /// lost unless written elsewhere); always 0 for RabbitMQ, which keeps what is not acked.
    pub unstored: usize,
}

impl Worker {
    /// Consumes until the stop token fires, then handles what the in-process queue still holds.
    pub async fn run_until_stopped(mut self) -> Shutdown {
        tracing::info!("worker started");
        let mut backoff = Backoff::default();
        loop {
            let batch = tokio::select! {
                () = self.stop.cancelled() => break,
                batch = self.consumer.next_batch(self.batch_limit, self.batch_wait) => batch,
            };
            let result = match batch {
                Ok(batch) => self.handle(batch).await,
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(outcome) => {
                    backoff.reset();
                    tracing::debug!(?outcome, "batch handled");
                }
                Err(WorkerError::Stopped) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "queue or database unavailable; reconnecting");
                    self.consumer.reset();
                    if !backoff.wait(&self.stop).await {
                        break;
                    }
                }
            }
        }
        let shutdown = self.drain().await;
        tracing::info!(
            drained = shutdown.drained,
            unstored = shutdown.unstored,
            "worker stopped"
        );
        shutdown
    }

    async fn drain(&mut self) -> Shutdown {
        let mut shutdown = Shutdown::default();
        loop {
            let batch = self.consumer.ready_batch(self.batch_limit);
            if batch.is_empty() {
                break;
            }
            let messages = batch.len();
            match self.handle(batch).await {
                Ok(_) => shutdown.drained += messages,
                Err(e) => {
                    shutdown.unstored += messages + self.consumer.abandon();
                    tracing::error!(error = %e, unstored = shutdown.unstored,
                        "could not store what the in-process queue held before stopping");
                    break;
                }
            }
        }
        shutdown
    }
}
