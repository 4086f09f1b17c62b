//! Reading messages leniently: a message holds one envelope or an array of envelopes, and
//! each part that cannot be read costs only itself. An envelope that cannot be read (or has a
//! version this build does not know) becomes a dead letter; an event that cannot be read
//! becomes a rejected event of its application. The other envelopes and events go on.

use chrono::{DateTime, Utc};
use eye_core::event::ENVELOPE_VERSION;
use eye_core::{Event, FieldError};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What one message turned out to hold.
pub enum Part {
    /// An event to validate.
    Event(Context, Event),
    /// An event that cannot even be read; kept as its raw text with the reason.
    Unreadable(Context, String, FieldError),
    /// An envelope (or whole message) that no worker of this build can read.
    Dead { body: Vec<u8>, reason: String },
}

/// Where an event came from.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub application_id: Uuid,
    pub received_at: DateTime<Utc>,
}

/// Only the version: what an envelope that is not ours is judged by.
#[derive(Deserialize)]
struct Version {
    v: u64,
}

#[derive(Deserialize)]
struct Header<'a> {
    v: u64,
    application_id: Uuid,
    received_at: DateTime<Utc>,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

pub fn message(body: &[u8], parts: &mut Vec<Part>) {
    let envelopes: Vec<&RawValue> = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => match serde_json::from_slice(body) {
            Ok(envelopes) => envelopes,
            Err(e) => return dead(body, format!("undecodable message: {e}"), parts),
        },
        _ => match serde_json::from_slice(body) {
            Ok(one) => vec![one],
            Err(e) => return dead(body, format!("undecodable message: {e}"), parts),
        },
    };
    for envelope in envelopes {
        self::envelope(envelope, parts);
    }
}

fn envelope(raw: &RawValue, parts: &mut Vec<Part>) {
    let body = raw.get().as_bytes();
    let unsupported = |v: u64| format!("envelope version {v} is not supported");
    // One pass in the usual case; the version alone is read only for an envelope that failed.
    let header = match serde_json::from_str::<Header>(raw.get()) {
        Ok(header) if header.v == u64::from(ENVELOPE_VERSION) => header,
        Ok(header) => return dead(body, unsupported(header.v), parts),
        Err(e) => {
            let reason = match serde_json::from_str::<Version>(raw.get()) {
                Ok(Version { v }) if v != u64::from(ENVELOPE_VERSION) => unsupported(v),
                _ => format!("undecodable envelope: {e}"),
            };
            return dead(body, reason, parts);
        }
    };
    let context = Context {
        application_id: header.application_id,
        received_at: header.received_at,
    };
    for event in header.events {
        parts.push(match serde_json::from_str::<Event>(event.get()) {
            Ok(event) => Part::Event(context, event),
            Err(e) => Part::Unreadable(
                context,
                event.get().to_owned(),
                FieldError::new("", "undecodable", format!("the event cannot be read: {e}")),
            ),
        });
    }
}

fn dead(body: &[u8], reason: String, parts: &mut Vec<Part>) {
    parts.push(Part::Dead {
        body: body.to_vec(),
        reason,
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
            .map(|p| match p {
                Part::Event(..) => "event",
                Part::Unreadable(..) => "unreadable",
                Part::Dead { .. } => "dead",
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
}
