//! What a stored batch shows to whoever watches live: its events and rejected events, with
//! `data` cut to a bounded size. Built only when someone may be watching.

use eye_core::queue::{LiveBatch, LiveEvent};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::store::{EventRow, RejectedRow, Row};

/// The live view of `rows` (dead letters are not events and are left out).
pub(crate) fn batch(rows: &[Row]) -> LiveBatch {
    LiveBatch {
        events: rows
            .iter()
            .filter_map(|row| match row {
                Row::Event(event) => Some(stored(event)),
                Row::Rejected(rejected) => Some(refused(rejected)),
                Row::Dead(_) => None,
            })
            .collect(),
    }
}

fn stored(event: &EventRow) -> LiveEvent {
    let (data, truncated) = LiveEvent::cut(&event.data);
    LiveEvent {
        application_id: event.application_id,
        id: event.id,
        session_id: Some(event.session_id),
        category: event.category.clone(),
        name: event.name.clone(),
        timestamp: Some(event.timestamp),
        received_at: event.received_at,
        data,
        truncated,
        rejected: false,
        reasons: Vec::new(),
    }
}

/// What can be read back of a rejected event's payload; any of it may be missing or wrong.
#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(default)]
    session_id: Option<serde_json::Value>,
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

fn refused(rejected: &RejectedRow) -> LiveEvent {
    let payload = serde_json::from_str::<Payload>(&rejected.payload).ok();
    let text =
        |v: &Option<serde_json::Value>| v.as_ref().and_then(|v| v.as_str()).map(str::to_owned);
    let session_id = payload
        .as_ref()
        .and_then(|p| text(&p.session_id))
        .and_then(|s| Uuid::parse_str(&s).ok());
    let timestamp = payload
        .as_ref()
        .and_then(|p| text(&p.timestamp))
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    let shown = payload
        .as_ref()
        .and_then(|p| p.data)
        .map_or(rejected.payload.as_str(), RawValue::get);
    let (data, truncated) = LiveEvent::cut(shown);
    let reasons = rejected
        .reasons
        .as_array()
        .map(|reasons| {
            reasons
                .iter()
                .filter_map(|r| r.get("code").and_then(|c| c.as_str()).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    LiveEvent {
        application_id: rejected.application_id,
        id: rejected.id,
        session_id,
        category: rejected.category.clone(),
        name: rejected.name.clone(),
        timestamp,
        received_at: rejected.received_at,
        data,
        truncated,
        rejected: true,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn a_rejected_event_shows_its_reason_codes_and_what_it_carried() {
        let session = Uuid::now_v7();
        let row = RejectedRow {
            application_id: Uuid::nil(),
            id: Uuid::now_v7(),
            category: "c".into(),
            name: "n".into(),
            payload: format!(
                r#"{{"session_id":"{session}","timestamp":"2026-01-01T00:00:00Z","data":{{"x":1}}}}"#
            ),
            reasons: serde_json::json!([{"field": "timestamp", "code": "timestamp_in_past", "message": "old"}]),
            received_at: Utc::now(),
        };
        let live = batch(&[Row::Rejected(row)]);
        let event = &live.events[0];
        assert!(event.rejected);
        assert_eq!(event.reasons, ["timestamp_in_past"]);
        assert_eq!(event.session_id, Some(session));
        assert_eq!(event.data, r#"{"x":1}"#);
    }

    #[test]
    fn an_unreadable_rejected_event_shows_what_was_received() {
        let row = RejectedRow {
            application_id: Uuid::nil(),
            id: Uuid::now_v7(),
            category: String::new(),
            name: String::new(),
            payload: "not json".into(),
            reasons: serde_json::json!([{"field": "", "code": "invalid_json", "message": "?"}]),
            received_at: Utc::now(),
        };
        let live = batch(&[Row::Rejected(row)]);
        assert_eq!(live.events[0].data, "not json");
        assert_eq!(live.events[0].session_id, None);
    }
}
