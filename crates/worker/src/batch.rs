//! One batch: decode every message, validate every event, store the rows, then acknowledge.

use eye_core::queue::Delivery;
use eye_core::{Event, FieldError};
use serde_json::Value;

use crate::arrival::Arrival;
use crate::decode::{self, Context, Part};
use crate::store::{DeadRow, EventRow, RejectedRow, Row};
use crate::validation::Registry;
use crate::{BatchOutcome, Worker, WorkerError};

impl Worker {
    #[tracing::instrument(skip_all, fields(messages = batch.len()))]
    pub(crate) async fn handle(
        &mut self,
        batch: Vec<Delivery>,
    ) -> Result<BatchOutcome, WorkerError> {
        let mut outcome = BatchOutcome {
            messages: batch.len(),
            ..Default::default()
        };
        let mut parts = Vec::new();
        let mut rows = Vec::new();
        let mut arrivals = Vec::new();
        // One registry for the whole batch, however a reload goes meanwhile.
        let registry = self.validators.current();
        for delivery in &batch {
            decode::delivery(delivery, &mut parts);
            for part in parts.drain(..) {
                rows.extend(self.row(part, &registry, &mut arrivals, || delivery.headers_json()));
            }
        }
        let events = rows.iter().filter(|r| !matches!(r, Row::Dead(_))).count();
        let oldest = rows.iter().filter_map(Row::received_at).min();
        let live = if self.live.wants().await {
            Some(crate::live::batch(&rows))
        } else {
            None
        };
        outcome.add(&self.store(rows).await?);
        self.consumer.ack(batch).await?;
        if let Some(live) = live {
            self.live.publish(live);
        }
        self.metrics.batch(outcome.messages, events, oldest);
        arrivals.iter().for_each(Arrival::log);
        Ok(outcome)
    }

    /// The row of one part; an envelope has none but is noted in `arrivals` for the logs.
    fn row(
        &self,
        part: Part,
        registry: &Registry,
        arrivals: &mut Vec<Arrival>,
        headers: impl FnOnce() -> String,
    ) -> Option<Row> {
        let row = match part {
            Part::Envelope(context, events) => {
                arrivals.push(Arrival::new(context, events));
                return None;
            }
            Part::Event(context, event) => {
                let reasons = registry.check(&event, context.received_at);
                if reasons.is_empty() {
                    Row::Event(EventRow {
                        application_id: context.application_id,
                        id: event.id,
                        session_id: event.session_id,
                        category: event.category,
                        name: event.name,
                        // The received text itself, not a copy of it.
                        data: Box::<str>::from(event.data).into(),
                        timestamp: event.timestamp,
                        source: event.source.map(|s| Box::<str>::from(s).into()),
                        received_at: context.received_at,
                    })
                } else {
                    Row::Rejected(rejected(&context, &event, reasons))
                }
            }
            Part::Unreadable(context, raw, reason) => Row::Rejected(RejectedRow {
                application_id: context.application_id,
                id: decode::id_of_unreadable(context.application_id, &raw),
                category: String::new(),
                name: String::new(),
                payload: raw,
                reasons: reasons_json(&[reason]),
                received_at: context.received_at,
            }),
            Part::Dead {
                body,
                code,
                reason,
                request_id,
            } => {
                let request_id = request_id.as_ref().map(eye_core::RequestId::as_str);
                tracing::error!(code, %reason, request_id, bytes = body.len(),
                    "message kept in dead_letters");
                Row::Dead(DeadRow {
                    body,
                    reason,
                    headers: headers(),
                })
            }
        };
        // An envelope's events follow it, so a rejected one belongs to the last.
        if let (Row::Rejected(rejected), Some(arrival)) = (&row, arrivals.last_mut()) {
            arrival.rejected(rejected);
        }
        Some(row)
    }
}

/// The event as it travelled, as JSON text (its `data` exactly as received).
pub(crate) fn rejected(context: &Context, event: &Event, reasons: Vec<FieldError>) -> RejectedRow {
    RejectedRow {
        application_id: context.application_id,
        id: event.id,
        category: truncate(&event.category),
        name: truncate(&event.name),
        payload: serde_json::to_string(event).unwrap_or_default(),
        reasons: reasons_json(&reasons),
        received_at: context.received_at,
    }
}

fn reasons_json(reasons: &[FieldError]) -> Value {
    serde_json::to_value(reasons).unwrap_or(Value::Null)
}

/// Category and name of a rejected event are kept for filtering, cut to fit their columns
/// (the full values stay in the payload).
pub(crate) fn truncate(value: &str) -> String {
    value.replace('\0', "").chars().take(128).collect()
}
