//! The worker: takes envelopes from the queue in batches, validates every event, stores valid
//! ones with their session and invalid ones with their reasons, and acknowledges only after
//! the transaction committed.

pub mod sql;
pub mod store;
pub mod validation;

use std::time::Duration;

use eye_core::event::ENVELOPE_VERSION;
use eye_core::queue::{BatchLimit, ConsumeError, Consumer, Delivery};
use eye_core::{Envelope, Settings};
use eye_entity::{events, rejected_events};
use sea_orm::{DatabaseConnection, Set};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::store::{Rows, Written};
use crate::validation::Registry;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a stopping worker keeps retrying a write for the in-process queue.
const DRAIN_PATIENCE: Duration = Duration::from_secs(60);

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub messages: usize,
    pub stored: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Messages that could not be decoded or stored at all, sent to the dead-letter queue.
    pub dead_lettered: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Queue(#[from] ConsumeError),
    #[error("stopped before the batch was stored; it stays unacknowledged")]
    Stopped,
}

pub struct Worker {
    db: DatabaseConnection,
    consumer: Consumer,
    registry: Registry,
    batch_limit: BatchLimit,
    batch_wait: Duration,
    stop: CancellationToken,
}

impl Worker {
    pub fn new(
        db: DatabaseConnection,
        consumer: Consumer,
        settings: &Settings,
        stop: CancellationToken,
    ) -> Self {
        Self {
            db,
            consumer,
            registry: Registry::builtin(settings),
            batch_limit: settings.worker_batch_limit(),
            batch_wait: settings.worker_batch_wait(),
            stop,
        }
    }

    /// Waits for the next batch and handles it completely.
    pub async fn process_next_batch(&mut self) -> Result<BatchOutcome, WorkerError> {
        let batch = self
            .consumer
            .next_batch(self.batch_limit, self.batch_wait)
            .await?;
        self.handle(batch).await
    }

    /// Consumes until the stop token fires, then handles what the in-process queue still holds.
    pub async fn run_until_stopped(mut self) {
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
                Err(WorkerError::Queue(e)) => {
                    tracing::warn!(error = %e, "queue unavailable; reconnecting");
                    if !backoff.wait(&self.stop).await {
                        break;
                    }
                }
            }
        }
        loop {
            let batch = self.consumer.ready_batch(self.batch_limit);
            if batch.is_empty() {
                break;
            }
            if let Err(e) = self.handle(batch).await {
                tracing::error!(error = %e, "could not drain the queue before stopping");
                break;
            }
        }
        tracing::info!("worker stopped");
    }

    #[tracing::instrument(skip_all, fields(messages = batch.len()))]
    async fn handle(&mut self, batch: Vec<Delivery>) -> Result<BatchOutcome, WorkerError> {
        let mut outcome = BatchOutcome {
            messages: batch.len(),
            ..Default::default()
        };
        let mut decoded = Vec::with_capacity(batch.len());
        for delivery in batch {
            match decode(&delivery.body) {
                Ok(envelopes) => decoded.push((delivery, envelopes)),
                Err(e) => {
                    tracing::error!(error = %e, "undecodable message sent to the dead-letter queue");
                    self.consumer.dead_letter(delivery).await?;
                    outcome.dead_lettered += 1;
                }
            }
        }
        let rows = self.rows(decoded.iter().flat_map(|(_, envelopes)| envelopes));
        match self.write_with_retry(&rows).await? {
            Ok(written) => {
                outcome.add(written);
                self.consumer
                    .ack(decoded.into_iter().map(|(d, _)| d).collect())
                    .await?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "batch failed permanently; storing its messages one by one");
                self.handle_one_by_one(decoded, &mut outcome).await?;
            }
        }
        Ok(outcome)
    }

    /// Isolates the message that cannot be stored, so the others are not held back by it.
    async fn handle_one_by_one(
        &mut self,
        decoded: Vec<(Delivery, Vec<Envelope>)>,
        outcome: &mut BatchOutcome,
    ) -> Result<(), WorkerError> {
        let mut done = Vec::with_capacity(decoded.len());
        for (delivery, envelopes) in decoded {
            let rows = self.rows(envelopes.iter());
            match self.write_with_retry(&rows).await? {
                Ok(written) => {
                    outcome.add(written);
                    done.push(delivery);
                }
                Err(e) => {
                    tracing::error!(error = %e, envelopes = envelopes.len(),
                        "message cannot be stored; sent to the dead-letter queue");
                    self.consumer.dead_letter(delivery).await?;
                    outcome.dead_lettered += 1;
                }
            }
        }
        self.consumer.ack(done).await?;
        Ok(())
    }

    /// Retries while the database is unreachable or busy; the messages stay unacknowledged
    /// (and so in the queue) meanwhile. Returns the permanent error, if any.
    async fn write_with_retry(
        &self,
        rows: &Rows,
    ) -> Result<Result<Written, sea_orm::DbErr>, WorkerError> {
        let mut backoff = Backoff::default();
        let mut drain_until = None;
        loop {
            match store::write(&self.db, rows).await {
                Ok(written) => return Ok(Ok(written)),
                Err(e) if sql::is_retryable(&e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff.next, "database unavailable; will retry the batch");
                    if backoff.wait(&self.stop).await {
                        continue;
                    }
                    // Stopping: what the broker holds stays there, but the in-process queue has
                    // nowhere else to keep accepted events, so keep trying for a while.
                    let until = *drain_until
                        .get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_PATIENCE);
                    if !self.consumer.is_in_process() || tokio::time::Instant::now() >= until {
                        return Err(WorkerError::Stopped);
                    }
                    tokio::time::sleep(backoff.next).await;
                }
                Err(e) => return Ok(Err(e)),
            }
        }
    }

    fn rows<'a>(&self, envelopes: impl Iterator<Item = &'a Envelope>) -> Rows {
        let mut rows = Rows::default();
        let stored_at = eye_core::event::now();
        for envelope in envelopes {
            for event in &envelope.events {
                let data: Value = serde_json::from_str(event.data.get()).unwrap_or(Value::Null);
                let reasons = self.registry.check(event, &data, envelope.received_at);
                if reasons.is_empty() {
                    rows.events.push(events::ActiveModel {
                        id: Set(event.id),
                        application_id: Set(envelope.application_id),
                        session_id: Set(event.session_id),
                        category: Set(event.category.clone()),
                        name: Set(event.name.clone()),
                        data: Set(data),
                        timestamp: Set(event.timestamp),
                        received_at: Set(envelope.received_at),
                        stored_at: Set(stored_at),
                    });
                } else {
                    rows.rejected.push(rejected_events::ActiveModel {
                        id: Set(event.id),
                        application_id: Set(envelope.application_id),
                        category: Set(truncate(&event.category)),
                        name: Set(truncate(&event.name)),
                        payload: Set(storable(serde_json::to_value(event).unwrap_or(Value::Null))),
                        reasons: Set(serde_json::to_value(&reasons).unwrap_or(Value::Null)),
                        received_at: Set(envelope.received_at),
                        rejected_at: Set(stored_at),
                    });
                }
            }
        }
        rows
    }
}

impl BatchOutcome {
    fn add(&mut self, written: Written) {
        self.stored += written.stored;
        self.duplicates += written.duplicates;
        self.rejected += written.rejected;
    }
}

/// A message holds one envelope, or an array of envelopes when the api coalesced requests.
fn decode(body: &[u8]) -> Result<Vec<Envelope>, String> {
    let envelopes = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(body).map_err(|e| e.to_string())?,
        _ => vec![serde_json::from_slice::<Envelope>(body).map_err(|e| e.to_string())?],
    };
    if let Some(other) = envelopes.iter().find(|e| e.v != ENVELOPE_VERSION) {
        return Err(format!("envelope version {} is not supported", other.v));
    }
    Ok(envelopes)
}

/// The rejected event as stored: NUL characters, which PostgreSQL's jsonb refuses (and which
/// may be why the event was rejected), become U+FFFD so that the rejection itself is kept.
fn storable(value: Value) -> Value {
    const NUL: char = '\0';
    match value {
        Value::String(s) if s.contains(NUL) => Value::String(s.replace(NUL, "\u{fffd}")),
        Value::Array(items) => Value::Array(items.into_iter().map(storable).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    (
                        if k.contains(NUL) {
                            k.replace(NUL, "\u{fffd}")
                        } else {
                            k
                        },
                        storable(v),
                    )
                })
                .collect(),
        ),
        other => other,
    }
}

/// Category and name of a rejected event are kept for filtering, cut to fit their columns
/// (the full values stay in the payload).
fn truncate(value: &str) -> String {
    value.replace('\0', "").chars().take(128).collect()
}

struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(100),
        }
    }
}

impl Backoff {
    fn reset(&mut self) {
        *self = Self::default();
    }

    /// Sleeps for the current delay and doubles it; false when stopped meanwhile.
    async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    const ENVELOPE: &str = r#"{"v":1,"application_id":"01a1fdc1-6fbb-77f0-8067-7ccf153d3375",
        "token_id":"01a1fdc1-6fbb-77f0-8067-7ccf153d3376","received_at":"2021-01-01T00:00:00Z","events":[]}"#;

    #[test]
    fn a_message_holds_one_envelope_or_several() {
        assert_eq!(decode(ENVELOPE.as_bytes()).unwrap().len(), 1);
        assert_eq!(
            decode(format!(" [{ENVELOPE},{ENVELOPE}]").as_bytes())
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let v2 = ENVELOPE.replace(r#""v":1"#, r#""v":2"#);
        assert!(decode(v2.as_bytes()).unwrap_err().contains("version 2"));
        assert!(decode(b"\x00\x01").is_err());
    }
}
