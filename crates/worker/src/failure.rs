//! What a failed write does. While the database is away (or busy, or full) the batch is held
//! and retried: nothing is acknowledged, so nothing is lost. On a permanent error (the
//! database refuses a value) the rows are split in halves and each half written on its own,
//! down to the single row at fault, so that one bad event costs only itself. That row then
//! takes its fallback: an event becomes a rejected event (`unstorable`, with the database's
//! message), a rejected event becomes a dead letter.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use eye_core::FieldError;
use sea_orm::DbErr;

use crate::batch::truncate;
use crate::metrics::Retry;
use crate::store::{self, DeadRow, RejectedRow, Row, Written};
use crate::{Worker, WorkerError, sql};

const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Worker {
    /// Stores every row somewhere: as given, or as its fallback.
    pub(crate) fn store(
        &self,
        mut rows: Vec<Row>,
    ) -> Pin<Box<dyn Future<Output = Result<Written, WorkerError>> + Send + '_>> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(Written::default());
            }
            let error = match self.write_with_retry(&rows).await? {
                Ok((written, took)) => {
                    self.metrics.written(&self.db, &rows, &written, took).await;
                    return Ok(written);
                }
                Err(error) => error,
            };
            if rows.len() > 1 {
                self.metrics.retried(Retry::Split);
                tracing::warn!(error = %error, rows = rows.len(),
                    "a row cannot be stored; writing the rows in halves to find it");
                let second = rows.split_off(rows.len() / 2);
                let mut written = self.store(rows).await?;
                written += self.store(second).await?;
                return Ok(written);
            }
            let Some(row) = rows.pop() else {
                return Ok(Written::default());
            };
            match fallback(row, &error) {
                Some(row) => self.store(vec![row]).await,
                None => {
                    // A dead letter is bytes and text; refusing it is not a data problem.
                    tracing::error!(error = %error, "a dead letter cannot be stored; holding the batch");
                    Err(WorkerError::Unstorable(error.to_string()))
                }
            }
        })
    }

    /// Retries while the database is unreachable or busy; the messages stay unacknowledged
    /// (and so in the queue) meanwhile. Returns the permanent error, if any.
    /// On success, also says how long the write that succeeded took.
    async fn write_with_retry(
        &self,
        rows: &[Row],
    ) -> Result<Result<(Written, Duration), DbErr>, WorkerError> {
        let mut backoff = Backoff::default();
        let mut drain_until = None;
        loop {
            let started = tokio::time::Instant::now();
            match store::write_with(&self.db, rows, self.rollups).await {
                Ok(written) => return Ok(Ok((written, started.elapsed()))),
                Err(e) if sql::is_retryable(&e) => {
                    self.metrics.retried(Retry::Database);
                    tracing::warn!(error = %e, retry_in = ?backoff.next, "database unavailable; will retry the batch");
                    if backoff.wait(&self.stop).await {
                        continue;
                    }
                    // Stopping: what the broker holds stays there, but the in-process queue has
                    // nowhere else to keep accepted events, so keep trying for a while.
                    let until = *drain_until
                        .get_or_insert_with(|| tokio::time::Instant::now() + self.drain_timeout);
                    if !self.consumer.is_in_process() || tokio::time::Instant::now() >= until {
                        return Err(WorkerError::Stopped);
                    }
                    tokio::time::sleep(backoff.next).await;
                }
                Err(e) => return Ok(Err(e)),
            }
        }
    }
}

/// Where a row the database refuses goes instead.
fn fallback(row: Row, error: &DbErr) -> Option<Row> {
    let message = database_message(error);
    match row {
        Row::Event(event) => {
            tracing::warn!(error = %message, application_id = %event.application_id,
                event_id = %event.id, "event refused by the database; kept as rejected");
            let payload = serde_json::json!({
                "id": event.id,
                "session_id": event.session_id,
                "category": event.category,
                "name": event.name,
                "timestamp": event.timestamp,
            });
            Some(Row::Rejected(RejectedRow {
                application_id: event.application_id,
                id: event.id,
                category: truncate(&event.category),
                name: truncate(&event.name),
                payload: with_raw(
                    with_raw(payload.to_string(), "data", event.data.as_str()),
                    "source",
                    event.source.as_deref(),
                ),
                reasons: serde_json::to_value([FieldError::new("", "unstorable", message)])
                    .unwrap_or_default(),
                received_at: event.received_at,
            }))
        }
        Row::Rejected(rejected) => {
            tracing::error!(error = %message, application_id = %rejected.application_id,
                "rejected event refused by the database; kept as a dead letter");
            Some(Row::Dead(DeadRow {
                body: rejected.payload.into_bytes(),
                reason: format!(
                    "rejected event of application {} could not be stored: {message}",
                    rejected.application_id
                ),
                headers: "{}".into(),
            }))
        }
        Row::Dead(_) => None,
    }
}

/// The event's fields as JSON text with `data` spliced in exactly as received.
/// `object` with `key` set to JSON text kept as it is (never through `f64`).
fn with_raw<'a>(object: String, key: &str, raw: impl Into<Option<&'a str>>) -> String {
    let Some(raw) = raw.into() else {
        return object;
    };
    let head = object.strip_suffix('}').unwrap_or(&object);
    format!(r#"{head},"{key}":{raw}}}"#)
}

/// What the database said, without the driver's wrapping; NUL characters removed so the
/// reason itself can be stored.
fn database_message(error: &DbErr) -> String {
    use sea_orm::RuntimeErr;
    let text = match error {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_database_error() {
                Some(db) => match db.code() {
                    Some(code) => format!("{} ({code})", db.message()),
                    None => db.message().to_owned(),
                },
                None => e.to_string(),
            }
        }
        other => other.to_string(),
    };
    text.replace('\0', "")
}

pub(crate) struct Backoff {
    pub(crate) next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(100),
        }
    }
}

impl Backoff {
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    /// Sleeps for the current delay and doubles it; false when stopped meanwhile.
    pub(crate) async fn wait(&mut self, stop: &tokio_util::sync::CancellationToken) -> bool {
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
    #[test]
    fn data_and_source_are_spliced_in_as_received() {
        let fields = serde_json::json!({"id": "x"}).to_string();
        let with_data = super::with_raw(fields, "data", r#"{"n":1e400,"s":"\ud800"}"#);
        assert_eq!(with_data, r#"{"id":"x","data":{"n":1e400,"s":"\ud800"}}"#);
        assert_eq!(
            super::with_raw(with_data.clone(), "source", None),
            with_data
        );
        assert_eq!(
            super::with_raw(with_data, "source", r#"{"userId":1.50}"#),
            r#"{"id":"x","data":{"n":1e400,"s":"\ud800"},"source":{"userId":1.50}}"#
        );
    }
}
