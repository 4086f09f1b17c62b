//! The consume loop: it only loops around [`Worker::process_next_batch`]'s steps, backs off
//! while the queue is away, and on stop drains what only this process holds.

use crate::failure::Backoff;
use crate::metrics::Retry;
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
        // Messages of the in-process queue held when the database gave out at stop.
        let mut held = None;
        loop {
            let batch = tokio::select! {
                () = self.stop.cancelled() => break,
                batch = self.consumer.next_batch(self.batch_limit, self.batch_wait) => batch,
            };
            let messages = batch.as_ref().map_or(0, Vec::len);
            let result = match batch {
                Ok(batch) => self.handle(batch).await,
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(outcome) => {
                    backoff.reset();
                    tracing::debug!(?outcome, "batch handled");
                }
                Err(WorkerError::Stopped) => {
                    held = Some(messages);
                    break;
                }
                Err(e) => {
                    self.metrics.retried(Retry::Queue);
                    tracing::warn!(error = %e, "queue or database unavailable; reconnecting");
                    self.consumer.reset();
                    if !backoff.wait(&self.stop).await {
                        break;
                    }
                }
            }
        }
        let shutdown = match held {
            // The database already failed for the whole drain timeout: what the in-process
            // queue holds cannot be stored now.
            Some(messages) if self.consumer.is_in_process() => Shutdown {
                drained: 0,
                unstored: messages + self.consumer.abandon(),
            },
            _ => self.drain().await,
        };
        if shutdown.unstored > 0 {
            tracing::error!(
                unstored = shutdown.unstored,
                "stopped with accepted messages that could not be stored; they are lost"
            );
        }
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
