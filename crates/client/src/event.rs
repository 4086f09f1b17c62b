//! One event as the client sends it: built field by field, or taken from a JSON object.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

/// An event to send. Its id is fixed when the event is built, so every retry carries the same
/// one and the api stores the event once.
#[derive(Debug, Clone)]
pub struct Event {
    id: Uuid,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    Fields {
        session_id: Uuid,
        category: String,
        name: String,
        data: Value,
        timestamp: DateTime<Utc>,
    },
    /// A JSON object that already holds `"id"`, sent as written.
    Json(String),
}

/// Why a JSON text is not an event the client can send.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("not an event: a JSON object is expected")]
    NotAnObject,
    #[error("`id` must be a UUID string")]
    InvalidId,
}

impl Event {
    /// An event that happened now, with empty `data` and a new UUIDv7 id.
    pub fn new(session_id: Uuid, category: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: Uuid::now_v7(),
            body: Body::Fields {
                session_id,
                category: category.into(),
                name: name.into(),
                data: Value::Object(Default::default()),
                timestamp: Utc::now(),
            },
        }
    }

    /// The event's `data` object.
    pub fn data(mut self, data: Value) -> Self {
        if let Body::Fields { data: d, .. } = &mut self.body {
            *d = data;
        }
        self
    }

    /// When the event happened (default: when it was built).
    pub fn timestamp(mut self, at: DateTime<Utc>) -> Self {
        if let Body::Fields { timestamp, .. } = &mut self.body {
            *timestamp = at;
        }
        self
    }

    /// Uses this id instead of a new one (for events re-sent from elsewhere).
    pub fn id(mut self, id: Uuid) -> Self {
        self.id = id;
        if let Body::Json(json) = &mut self.body
            && let Ok(mut object) = serde_json::from_str::<serde_json::Map<String, Value>>(json)
        {
            object.insert("id".into(), Value::String(id.to_string()));
            *json = Value::Object(object).to_string();
        }
        self
    }

    /// Takes one JSON object as the api accepts it (`session_id`, `category`, `name`, `data`,
    /// `timestamp`, optional `id`). Its `id` is kept; without one, a UUIDv7 is added. Fields are
    /// otherwise sent as written: the api checks them and reports what is wrong.
    pub fn from_json(text: &str) -> Result<Self, EventError> {
        #[derive(Deserialize)]
        struct Probe<'a> {
            #[serde(borrow, default)]
            id: Option<&'a RawValue>,
        }
        let text = text.trim();
        // A struct also deserializes from an array; only objects are events.
        if !text.starts_with('{') {
            return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => Err(EventError::NotAnObject),
                Err(e) => Err(EventError::NotJson(e)),
            };
        }
        let probe: Probe = serde_json::from_str(text).map_err(EventError::NotJson)?;
        match probe.id.map(RawValue::get) {
            Some(raw) if raw != "null" => {
                let id: Uuid = serde_json::from_str(raw).map_err(|_| EventError::InvalidId)?;
                Ok(Self {
                    id,
                    body: Body::Json(text.to_owned()),
                })
            }
            // No id (or a null one): add ours so that retries keep it.
            _ => {
                let id = Uuid::now_v7();
                // `"id": null` reads as no id: rewrite the object whenever the key may be there.
                let json = if probe.id.is_some() || text.contains("\"id\"") {
                    let mut object: serde_json::Map<String, Value> =
                        serde_json::from_str(text).map_err(EventError::NotJson)?;
                    object.insert("id".into(), Value::String(id.to_string()));
                    Value::Object(object).to_string()
                } else {
                    with_id(text, id)
                };
                Ok(Self {
                    id,
                    body: Body::Json(json),
                })
            }
        }
    }

    /// The id the api stores the event under.
    pub fn event_id(&self) -> Uuid {
        self.id
    }

    /// The JSON the client posts.
    pub(crate) fn into_json(self) -> String {
        match self.body {
            Body::Json(json) => json,
            Body::Fields {
                session_id,
                category,
                name,
                data,
                timestamp,
            } => serde_json::json!({
                "id": self.id,
                "session_id": session_id,
                "category": category,
                "name": name,
                "data": data,
                "timestamp": timestamp.to_rfc3339_opts(SecondsFormat::Micros, true),
            })
            .to_string(),
        }
    }
}

/// `{"id":"…",` followed by the rest of an object that has no `id`.
fn with_id(object: &str, id: Uuid) -> String {
    let rest = object[1..].trim_start();
    let mut json = String::with_capacity(object.len() + 48);
    json.push_str("{\"id\":\"");
    json.push_str(id.as_hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    json.push('"');
    if !rest.starts_with('}') {
        json.push(',');
    }
    json.push_str(rest);
    json
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parsed(event: Event) -> Value {
        serde_json::from_str(&event.into_json()).unwrap()
    }

    #[test]
    fn an_object_without_id_gets_a_uuid_v7_and_keeps_its_fields() {
        let event = Event::from_json(r#" {"name":"a","data":{"x":1.50}} "#).unwrap();
        let id = event.event_id();
        assert_eq!(id.get_version_num(), 7);
        let json = event.into_json();
        assert!(json.contains(r#""data":{"x":1.50}"#), "{json}");
        let value: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["id"], id.to_string());
        assert_eq!(value["name"], "a");
    }

    #[test]
    fn an_empty_object_and_a_null_id_get_an_id_too() {
        let value = parsed(Event::from_json("{}").unwrap());
        assert!(value["id"].is_string());
        let event = Event::from_json(r#"{"id":null,"name":"b"}"#).unwrap();
        let id = event.event_id();
        let value = parsed(event);
        assert_eq!(value["id"], id.to_string());
        assert_eq!(value["name"], "b");
    }

    #[test]
    fn a_given_id_is_kept_and_a_wrong_one_refused() {
        let id = Uuid::new_v4();
        let event = Event::from_json(&format!(r#"{{"id":"{id}"}}"#)).unwrap();
        assert_eq!(event.event_id(), id);
        assert!(matches!(
            Event::from_json(r#"{"id":"nope"}"#),
            Err(EventError::InvalidId)
        ));
    }

    #[test]
    fn text_that_is_not_an_object_is_refused() {
        for text in ["", "nope", "[1]", "[]", "3", "\"x\"", "{\"a\":"] {
            assert!(Event::from_json(text).is_err(), "{text}");
        }
        for text in ["[{}]", "[1, 2]", "\"event\"", "null"] {
            assert!(
                matches!(Event::from_json(text), Err(EventError::NotAnObject)),
                "{text}"
            );
        }
        assert!(matches!(
            Event::from_json("{nope"),
            Err(EventError::NotJson(_))
        ));
    }

    #[test]
    fn a_built_event_has_every_field_in_utc() {
        let session = Uuid::new_v4();
        let event = Event::new(session, "page interaction", "pageview")
            .data(serde_json::json!({"path": "/"}));
        let id = event.event_id();
        let value = parsed(event);
        assert_eq!(value["id"], id.to_string());
        assert_eq!(value["session_id"], session.to_string());
        assert_eq!(value["data"]["path"], "/");
        assert!(value["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
