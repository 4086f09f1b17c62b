//! Reading messages leniently: a message holds one envelope or an array of envelopes, and
//! each part that cannot be read costs only itself. An envelope that cannot be read (or has a
//! version this build does not know) becomes a dead letter; an event that cannot be read
//! becomes a rejected event of its application. The other envelopes and events go on.

use chrono::{DateTime, Utc};
use eye_core::event::ENVELOPE_VERSION;
use eye_core::queue::Delivery;
use eye_core::request_id::lenient;
use eye_core::{Event, FieldError, RequestId};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What one message turned out to hold.
pub enum Part {
    /// The start of a readable envelope holding `events` events, which follow it.
    Envelope(Context, usize),
    /// An event to validate.
    Event(Context, Event),
    /// An event that cannot even be read; kept as its raw text with the reason.
    Unreadable(Context, String, FieldError),
    /// An envelope (or whole message) that no worker of this build can read.
    Dead {
        body: Vec<u8>,
        /// Stable: `undecodable_message`, `undecodable_envelope` or `unsupported_version`.
        code: &'static str,
        reason: String,
        /// The request that sent it, when that much of the envelope can be read.
        request_id: Option<RequestId>,
    },
}

/// Where an event came from.
#[derive(Debug, Clone)]
pub struct Context {
    pub application_id: Uuid,
    pub received_at: DateTime<Utc>,
    pub request_id: Option<RequestId>,
}

/// Only the version (and the request, for the logs): what an envelope that is not ours is
/// judged by.
#[derive(Deserialize)]
struct Version {
    v: u64,
    #[serde(default, deserialize_with = "lenient")]
    request_id: Option<RequestId>,
}

#[derive(Deserialize)]
struct Header<'a> {
    v: u64,
    application_id: Uuid,
    received_at: DateTime<Utc>,
    /// Read leniently: a wrong request id never costs the envelope.
    #[serde(default, deserialize_with = "lenient")]
    request_id: Option<RequestId>,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// What a delivery holds: its envelopes, or one dead letter when its bytes could not be
/// decoded (`undecodable`, from the queue) or read as JSON.
pub fn delivery(delivery: &Delivery, parts: &mut Vec<Part>) {
    match &delivery.undecodable {
        Some(why) => dead(
            &delivery.body,
            "undecodable_message",
            format!("undecodable message: {why}"),
            None,
            parts,
        ),
        None => message(&delivery.body, parts),
    }
}

pub fn message(body: &[u8], parts: &mut Vec<Part>) {
    let envelopes: Vec<&RawValue> = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => match serde_json::from_slice(body) {
            Ok(envelopes) => envelopes,
            Err(e) => return undecodable_message(body, &e, parts),
        },
        _ => match serde_json::from_slice(body) {
            Ok(one) => vec![one],
            Err(e) => return undecodable_message(body, &e, parts),
        },
    };
    for envelope in envelopes {
        self::envelope(envelope, parts);
    }
}

fn envelope(raw: &RawValue, parts: &mut Vec<Part>) {
    let body = raw.get().as_bytes();
    let unsupported = |v: u64, request_id, parts: &mut Vec<Part>| {
        let reason = format!("envelope version {v} is not supported");
        dead(body, "unsupported_version", reason, request_id, parts);
    };
    // One pass in the usual case; the version alone is read only for an envelope that failed.
    let header = match serde_json::from_str::<Header>(raw.get()) {
        Ok(header) if header.v == u64::from(ENVELOPE_VERSION) => header,
        Ok(header) => return unsupported(header.v, header.request_id, parts),
        Err(e) => {
            let (v, request_id) = match serde_json::from_str::<Version>(raw.get()) {
                Ok(Version { v, request_id }) => (Some(v), request_id),
                Err(_) => (None, None),
            };
            return match v {
                Some(v) if v != u64::from(ENVELOPE_VERSION) => unsupported(v, request_id, parts),
                _ => {
                    let reason = format!("undecodable envelope: {e}");
                    dead(body, "undecodable_envelope", reason, request_id, parts);
                }
            };
        }
    };
    let context = Context {
        application_id: header.application_id,
        received_at: header.received_at,
        request_id: header.request_id,
    };
    parts.push(Part::Envelope(context.clone(), header.events.len()));
    for event in header.events {
        parts.push(match serde_json::from_str::<Event>(event.get()) {
            Ok(event) => Part::Event(context.clone(), event),
            Err(e) => Part::Unreadable(
                context.clone(),
                event.get().to_owned(),
                FieldError::new("", "undecodable", format!("the event cannot be read: {e}")),
            ),
        });
    }
}

fn undecodable_message(body: &[u8], error: &serde_json::Error, parts: &mut Vec<Part>) {
    let reason = format!("undecodable message: {error}");
    dead(body, "undecodable_message", reason, None, parts);
}

fn dead(
    body: &[u8],
    code: &'static str,
    reason: String,
    request_id: Option<RequestId>,
    parts: &mut Vec<Part>,
) {
    parts.push(Part::Dead {
        body: body.to_vec(),
        code,
        reason,
        request_id,
    });
}

/// A stable id for an event that could not be read, so a redelivery rejects it once.
pub fn id_of_unreadable(application_id: Uuid, raw: &str) -> Uuid {
    let digest = Sha256::new()
        .chain_update(application_id.as_bytes())
        .chain_update(raw.as_bytes())
        .finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVELOPE: &str = r#"{"v":1,"application_id":"01a1fdc1-6fbb-77f0-8067-7ccf153d3375",
        "token_id":"01a1fdc1-6fbb-77f0-8067-7ccf153d3376","received_at":"2021-01-01T00:00:00Z","events":[
        {"id":"01a1fdc1-6fbb-77f0-8067-7ccf153d3377","session_id":"01a1fdc1-6fbb-77f0-8067-7ccf153d3378",
         "category":"c","name":"n","data":{},"timestamp":"2021-01-01T00:00:00Z"}]}"#;

    fn kinds(body: &str) -> Vec<&'static str> {
        let mut parts = Vec::new();
        message(body.as_bytes(), &mut parts);
        parts
            .iter()
            .filter_map(|p| match p {
                Part::Envelope(..) => None,
                Part::Event(..) => Some("event"),
                Part::Unreadable(..) => Some("unreadable"),
                Part::Dead { .. } => Some("dead"),
            })
            .collect()
    }

    #[test]
    fn a_message_holds_one_envelope_or_several() {
        assert_eq!(kinds(ENVELOPE), ["event"]);
        assert_eq!(
            kinds(&format!(" [{ENVELOPE},{ENVELOPE}]")),
            ["event", "event"]
        );
    }

    #[test]
    fn an_unknown_version_costs_only_its_own_envelope() {
        let v2 = ENVELOPE.replace(r#""v":1"#, r#""v":2"#);
        assert_eq!(
            kinds(&format!("[{ENVELOPE},{v2},{ENVELOPE}]")),
            ["event", "dead", "event"]
        );
        assert_eq!(kinds("\u{1}garbage"), ["dead"]);
    }

    #[test]
    fn an_unreadable_event_costs_only_itself() {
        let broken = ENVELOPE.replace(
            r#""events":["#,
            r#""events":[{"id":"x","timestamp":"never"},"#,
        );
        assert_eq!(kinds(&broken), ["unreadable", "event"]);
    }

    #[test]
    fn the_request_id_is_read_when_present_and_never_costs_the_envelope() {
        let request_ids = |body: &str| {
            let mut parts = Vec::new();
            message(body.as_bytes(), &mut parts);
            parts
                .into_iter()
                .map(|p| match p {
                    Part::Envelope(context, _) | Part::Event(context, _) => context.request_id,
                    Part::Unreadable(context, ..) => context.request_id,
                    Part::Dead { request_id, .. } => request_id,
                })
                .map(|id| id.map(|id| id.to_string()))
                .collect::<Vec<_>>()
        };
        let with =
            |id: &str| ENVELOPE.replace(r#""events":"#, &format!(r#""request_id":{id},"events":"#));
        let some = Some("req-7".to_owned());
        assert_eq!(request_ids(ENVELOPE), [None, None]);
        assert_eq!(
            request_ids(&with(r#""req-7""#)),
            [some.clone(), some.clone()]
        );
        assert_eq!(request_ids(&with("42")), [None, None]);
        assert_eq!(request_ids(&with(r#""not sane""#)), [None, None]);
        let v2 = with(r#""req-7""#).replace(r#""v":1"#, r#""v":2"#);
        assert_eq!(request_ids(&v2), [some]);
    }
}
