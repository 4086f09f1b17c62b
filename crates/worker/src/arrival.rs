//! What the worker logs of each envelope once it is stored, by the request that sent it: one
//! debug line per envelope, an info line per rejected event (at most [`MAX_LOGGED`] of one
//! envelope, then one line counting the rest). Ids, counts and reason codes only, never data.

use eye_core::RequestId;
use uuid::Uuid;

use crate::decode::Context;
use crate::store::RejectedRow;

/// Rejected events of one envelope logged one by one; a bad client sends thousands at once.
pub const MAX_LOGGED: usize = 10;

pub(crate) struct Arrival {
    context: Context,
    events: usize,
    rejected: usize,
    /// The id and first reason code of the first rejected events.
    logged: Vec<(Uuid, String)>,
}

impl Arrival {
    pub(crate) fn new(context: Context, events: usize) -> Self {
        Self {
            context,
            events,
            rejected: 0,
            logged: Vec::new(),
        }
    }

    pub(crate) fn rejected(&mut self, row: &RejectedRow) {
        self.rejected += 1;
        if self.logged.len() < MAX_LOGGED {
            let code = row.reasons[0]["code"].as_str().unwrap_or("").to_owned();
            self.logged.push((row.id, code));
        }
    }

    pub(crate) fn log(&self) {
        let application_id = self.context.application_id;
        let request_id = self.context.request_id.as_ref().map(RequestId::as_str);
        tracing::debug!(%application_id, request_id, events = self.events,
            rejected = self.rejected, "envelope stored");
        for (event_id, code) in &self.logged {
            tracing::info!(%application_id, request_id, %event_id, code = code.as_str(),
                "event rejected");
        }
        let more = self.rejected - self.logged.len();
        if more > 0 {
            tracing::info!(%application_id, request_id, more,
                "more events of this request rejected; not logged one by one");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_rejected_events_is_logged_ten_by_ten_and_counted() {
        let context = Context {
            application_id: Uuid::now_v7(),
            received_at: chrono::Utc::now(),
            request_id: RequestId::parse("req-1"),
        };
        let mut arrival = Arrival::new(context, 1000);
        let row = RejectedRow {
            application_id: Uuid::now_v7(),
            id: Uuid::now_v7(),
            category: String::new(),
            name: String::new(),
            payload: "{}".into(),
            reasons: serde_json::json!([{"field": "", "code": "timestamp_in_future", "message": ""}]),
            received_at: chrono::Utc::now(),
        };
        for _ in 0..1000 {
            arrival.rejected(&row);
        }
        assert_eq!(arrival.rejected, 1000);
        assert_eq!(arrival.logged.len(), MAX_LOGGED);
        assert_eq!(arrival.logged[0].1, "timestamp_in_future");
    }
}
