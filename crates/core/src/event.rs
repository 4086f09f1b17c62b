//! Events as applications send them, and the envelope the api puts on the queue.

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::RequestId;

/// Version of the envelope format written by this build.
pub const ENVELOPE_VERSION: u8 = 1;

/// One event exactly as an application posts it. Only the shape is checked here; what the
/// payload means is the worker's business.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423",
    "category": "page interaction",
    "name": "pageview",
    "data": {"host": "www.example.com", "path": "/"},
    "timestamp": "2021-01-01 09:15:27.243860"
}))]
pub struct IncomingEvent {
    /// Optional client-chosen id; posting the same id twice stores the event once.
    #[schema(required = false)]
    pub id: Option<Uuid>,
    /// The visitor's session; events of one session are shown together.
    pub session_id: Uuid,
    /// With `name`, the event's type: the worker validates `data` by it.
    pub category: String,
    pub name: String,
    /// Any JSON value; what it must hold depends on the event's type. Kept as raw JSON: the
    /// api passes it through without building a tree.
    #[schema(value_type = serde_json::Value)]
    pub data: Box<RawValue>,
    #[schema(schema_with = EventTimestamp::schema)]
    pub timestamp: EventTimestamp,
}

impl IncomingEvent {
    /// The event as it travels in an envelope, with an id assigned when the client gave none.
    pub fn into_event(self) -> Event {
        Event {
            id: self.id.unwrap_or_else(Uuid::now_v7),
            session_id: self.session_id,
            category: self.category,
            name: self.name,
            data: self.data,
            timestamp: self.timestamp.0,
            source: None,
        }
    }
}

/// An accepted event with its final id and a UTC timestamp.
#[derive(Debug, Serialize, Deserialize)]
pub struct Event {
    pub id: Uuid,
    pub session_id: Uuid,
    pub category: String,
    pub name: String,
    pub data: Box<RawValue>,
    pub timestamp: DateTime<Utc>,
    /// Where the event came from when it did not arrive in The Eye's own format: for a
    /// Segment message, the message less what went into `data`. Absent otherwise, and in
    /// envelopes written before it existed, so the version did not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Box<RawValue>>,
}

/// One message on the queue: every event of one accepted request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u8,
    pub application_id: Uuid,
    pub token_id: Uuid,
    pub received_at: DateTime<Utc>,
    /// The request that brought these events, so the worker's log lines can be found by it.
    /// Absent in envelopes written before it existed, so the version did not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    pub events: Vec<Event>,
}

/// A timestamp read from RFC 3339 (`Z` or an offset) or from the naive
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` form, which is taken as UTC. Kept to the microsecond, the
/// precision every supported database stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimestamp(pub DateTime<Utc>);

impl EventTimestamp {
    pub const EXPECTED: &'static str =
        "an RFC 3339 timestamp or `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC";

    /// Its OpenAPI schema: either form, as text.
    pub fn schema() -> utoipa::openapi::schema::Schema {
        use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
        let either = AnyOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).format(Some(
                utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime),
            )))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?$")),
            )
            .description(Some(Self::EXPECTED))
            .build();
        utoipa::openapi::schema::Schema::AnyOf(either)
    }

    pub fn parse(input: &str) -> Result<Self, String> {
        let input = input.trim();
        if let Ok(at) = DateTime::parse_from_rfc3339(input) {
            return Ok(Self(at.with_timezone(&Utc).trunc_subsecs(6)));
        }
        for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
            if let Ok(naive) = NaiveDateTime::parse_from_str(input, format) {
                return Ok(Self(naive.and_utc().trunc_subsecs(6)));
            }
        }
        Err(format!("`{input}` is not {}", Self::EXPECTED))
    }
}

/// Now, to the microsecond like every stored timestamp.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl<'de> Deserialize<'de> for EventTimestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// What is wrong with one field, as shown to clients (400 details) and stored with rejected
/// events. `code` is stable and machine-readable; `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub code: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, micros: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .unwrap_or_default()
            + chrono::Duration::microseconds(micros.into())
    }

    #[test]
    fn timestamps_in_every_accepted_form_read_as_utc() {
        let cases = [
            (
                "2021-01-01 09:15:27.243860",
                utc(2021, 1, 1, 9, 15, 27, 243_860),
            ),
            ("2021-01-01 09:15:27", utc(2021, 1, 1, 9, 15, 27, 0)),
            (
                "2021-01-01T09:15:27.243860Z",
                utc(2021, 1, 1, 9, 15, 27, 243_860),
            ),
            (
                "2021-01-01T11:15:27.243860+02:00",
                utc(2021, 1, 1, 9, 15, 27, 243_860),
            ),
            ("2021-01-01T04:15:27-05:00", utc(2021, 1, 1, 9, 15, 27, 0)),
            (
                "2021-01-01T09:15:27.243860999Z",
                utc(2021, 1, 1, 9, 15, 27, 243_860),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                EventTimestamp::parse(input),
                Ok(EventTimestamp(expected)),
                "{input}"
            );
        }
    }

    #[test]
    fn malformed_timestamps_are_refused_with_the_expected_forms() {
        for input in [
            "",
            "yesterday",
            "2021-13-01 00:00:00",
            "2021-01-01",
            "1609492527",
        ] {
            let err = EventTimestamp::parse(input).expect_err(input);
            assert!(err.contains("RFC 3339"), "{err}");
        }
    }

    #[test]
    fn an_event_without_id_gets_a_fresh_one() {
        let raw = r#"{"session_id":"e2085be5-9137-4e4e-80b5-f1ffddc25423","category":"c",
            "name":"n","data":{},"timestamp":"2021-01-01 09:15:27"}"#;
        let a: IncomingEvent = serde_json::from_str(raw).unwrap();
        let b: IncomingEvent = serde_json::from_str(raw).unwrap();
        assert_ne!(a.into_event().id, b.into_event().id);
    }

    #[test]
    fn an_envelope_without_a_request_id_reads_and_none_is_not_written() {
        let older = r#"{"v":1,"application_id":"01a1fdc1-6fbb-77f0-8067-7ccf153d3375",
            "token_id":"01a1fdc1-6fbb-77f0-8067-7ccf153d3376","received_at":"2021-01-01T00:00:00Z",
            "events":[]}"#;
        let mut envelope: Envelope = serde_json::from_str(older).unwrap();
        assert_eq!(envelope.request_id, None);
        assert!(
            !serde_json::to_string(&envelope)
                .unwrap()
                .contains("request_id")
        );
        envelope.request_id = RequestId::parse("req-1");
        let written = serde_json::to_string(&envelope).unwrap();
        assert!(written.contains(r#""request_id":"req-1""#), "{written}");
        let read: Envelope = serde_json::from_str(&written).unwrap();
        assert_eq!(read.request_id, envelope.request_id);
    }
}
