//! Segment messages as events of The Eye, by the mapping documented in `docs/INTEGRATIONS.md`.
//! Every part of a message is read borrowed from the body; `properties` and `traits` become
//! `data` as they were sent (numbers exactly), the rest of the message becomes `source`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use chrono::{DateTime, Utc};
use eye_core::event::EventTimestamp;
use eye_core::{Event, FieldError};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The namespace of event ids made from a `messageId` that is not a UUID: the same message
/// sent twice gets the same id and is stored once.
pub const MESSAGE_NAMESPACE: Uuid = uuid::uuid!("5f0c3c1e-7d4b-4c1a-9a53-2b8e6f1d0e47");
/// The namespace of session ids made from an `anonymousId` (or a `userId`).
pub const SESSION_NAMESPACE: Uuid = uuid::uuid!("a8d1e0b2-3c6f-4e59-8b7a-1f4d2c9e6a30");

/// A message's `type`, from the body or implied by the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Track,
    Page,
    Screen,
    Identify,
    Group,
    Alias,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Track,
        Kind::Page,
        Kind::Screen,
        Kind::Identify,
        Kind::Group,
        Kind::Alias,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Track => "track",
            Kind::Page => "page",
            Kind::Screen => "screen",
            Kind::Identify => "identify",
            Kind::Group => "group",
            Kind::Alias => "alias",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A JSON object's members in the order sent, values left as raw JSON text.
#[derive(Default)]
pub(crate) struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Fields<'a> {
    /// The members of `raw` when it is an object.
    pub(crate) fn of(raw: &'a RawValue) -> Option<Self> {
        serde_json::from_str(raw.get()).ok()
    }

    /// The member's value, unless absent or `null`.
    pub(crate) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .filter(|v| v.get() != "null")
    }

    /// The member as a string; an error names its key when it is another type.
    pub(crate) fn str(&self, key: &str) -> Result<Option<Cow<'a, str>>, ()> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => text(raw).map(Some).ok_or(()),
        }
    }

    /// The member as a string if it is one, and nothing otherwise.
    fn str_lenient(&self, key: &str) -> Option<Cow<'a, str>> {
        self.get(key).and_then(text)
    }

    fn object(&self, key: &str) -> Option<Fields<'a>> {
        self.get(key).and_then(Fields::of)
    }

    /// The object's size as it is kept: its members as sent, without whitespace between them,
    /// and a key that held escapes as it is written again (see [`source`]).
    pub(crate) fn size(&self) -> usize {
        let key_len = |key: &Cow<'_, str>| match key {
            Cow::Borrowed(key) => key.len(),
            Cow::Owned(key) => json_string(key).len() - 2,
        };
        // `{}`, and per member its quotes, colon and comma.
        2 + self
            .0
            .iter()
            .map(|(key, value)| key_len(key) + value.get().len() + 4)
            .sum::<usize>()
    }
}

/// A member of a batch: an object's members, or something else (refused by its index).
pub(crate) enum Message<'a> {
    Object(Fields<'a>),
    NotAnObject,
}

/// A JSON string's text, borrowed unless it holds escapes.
fn text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    Text::deserialize(&mut deserializer).ok().map(|t| t.0)
}

struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(V(std::marker::PhantomData))
    }
}

fn members<'de, M: MapAccess<'de>>(mut map: M) -> Result<Fields<'de>, M::Error> {
    let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(12));
    while let Some((key, value)) = map.next_entry::<Text<'de>, &'de RawValue>()? {
        fields.push((key.0, value));
    }
    Ok(Fields(fields))
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                members(map)
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// Read in the batch's one pass, so a message is not scanned a second time for its members.
impl<'de: 'a, 'a> Deserialize<'de> for Message<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Message<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message")
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                members(map).map(Message::Object)
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Message::NotAnObject)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Message::NotAnObject)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Message::NotAnObject)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Message::NotAnObject)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Message::NotAnObject)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Message::NotAnObject)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Message::NotAnObject)
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A batch request's body; its other members are ignored.
#[derive(Deserialize)]
pub(crate) struct BatchBody<'a> {
    #[serde(borrow)]
    pub(crate) batch: Option<Vec<Message<'a>>>,
    #[serde(borrow, rename = "sentAt")]
    pub(crate) sent_at: Option<&'a RawValue>,
    #[serde(borrow, rename = "writeKey")]
    write_key: Option<Text<'a>>,
}

impl<'a> BatchBody<'a> {
    pub(crate) fn write_key(&self) -> Option<&str> {
        self.write_key.as_ref().map(|k| k.0.as_ref())
    }
}

/// What one request shares among its messages.
pub(crate) struct Receipt<'a> {
    pub(crate) received_at: DateTime<Utc>,
    /// The batch's `sentAt`, for messages that carry none of their own.
    pub(crate) sent_at: Option<&'a RawValue>,
    /// The last visitor's session: a browser's batch is one visitor's, and each session id
    /// otherwise costs a SHA-1.
    pub(crate) last_visitor: RefCell<Option<(String, Uuid)>>,
}

/// The event a message becomes, or the problems that stop it, each named under its place in
/// the batch (`batch[3].`; `index` is `None` for a single message).
pub(crate) fn event(
    message: &Fields<'_>,
    implied: Option<Kind>,
    receipt: &Receipt<'_>,
    index: Option<usize>,
) -> Result<Event, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut error = |field: &str, code: &str, message: String| {
        let field = match index {
            Some(index) => format!("batch[{index}].{field}"),
            None => field.to_owned(),
        };
        errors.push(FieldError::new(field, code, message));
    };
    let kind = match (implied, message.str("type")) {
        (Some(kind), _) => Some(kind),
        (None, Ok(Some(name))) => Kind::parse(&name).or_else(|| {
            error(
                "type",
                "invalid_value",
                format!("`{name}` is not one of track, page, screen, identify, group, alias"),
            );
            None
        }),
        (None, Ok(None)) => {
            error("type", "required", "type is required in a batch".into());
            None
        }
        (None, Err(())) => {
            error("type", "invalid_type", "type must be a string".into());
            None
        }
    };
    let id = match message.str("messageId") {
        Ok(Some(id)) => {
            Uuid::parse_str(&id).unwrap_or_else(|_| Uuid::new_v5(&MESSAGE_NAMESPACE, id.as_bytes()))
        }
        Ok(None) => Uuid::now_v7(),
        Err(()) => {
            error(
                "messageId",
                "invalid_type",
                "messageId must be a string".into(),
            );
            Uuid::nil()
        }
    };
    // `context` is read only for what it may hold: a page's url, a session id.
    let context = message
        .get("context")
        .filter(|raw| kind == Some(Kind::Page) || may_hold(raw, "sessionId"))
        .and_then(Fields::of)
        .unwrap_or_default();
    let properties = message.object("properties");
    let session_id = session(
        message,
        &context,
        properties.as_ref(),
        &receipt.last_visitor,
    )
    .unwrap_or_else(|| {
        error(
            "anonymousId",
            "required",
            "anonymousId or userId is required".into(),
        );
        Uuid::nil()
    });
    let timestamp = match timestamp(message, receipt) {
        Ok(at) => at,
        Err((field, why)) => {
            error(field, "invalid_timestamp", why);
            receipt.received_at
        }
    };
    let (category, name) = match kind {
        Some(Kind::Track) => match message.str("event") {
            Ok(Some(event)) => {
                let category = properties
                    .as_ref()
                    .and_then(|p| p.str_lenient("category"))
                    .map_or_else(|| "track".to_owned(), Cow::into_owned);
                (category, event.into_owned())
            }
            Ok(None) => {
                error(
                    "event",
                    "required",
                    "event is required in a track call".into(),
                );
                Default::default()
            }
            Err(()) => {
                error("event", "invalid_type", "event must be a string".into());
                Default::default()
            }
        },
        Some(Kind::Page) => ("page interaction".to_owned(), "pageview".to_owned()),
        Some(Kind::Screen) => (
            "screen".to_owned(),
            message
                .str_lenient("name")
                .filter(|n| !n.is_empty())
                .map_or_else(|| "screen".to_owned(), Cow::into_owned),
        ),
        Some(other) => (other.as_str().to_owned(), other.as_str().to_owned()),
        None => Default::default(),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let kind = kind.unwrap_or(Kind::Track);
    let data_key = match kind {
        Kind::Identify | Kind::Group => "traits",
        _ => "properties",
    };
    // Raw values are copied as they are: only new text is parsed again.
    let data = match (kind, message.get(data_key)) {
        (Kind::Page, Some(raw)) => match &properties {
            Some(props) => raw_value(page_data(raw, props, &context)),
            None => raw.to_owned(),
        },
        (Kind::Page, None) => raw_value(page_data(empty(), &Fields::default(), &context)),
        (_, Some(raw)) => raw.to_owned(),
        (_, None) => empty().to_owned(),
    };
    let source = Source {
        message,
        kind,
        data_key,
    };
    Ok(Event {
        id,
        session_id,
        category,
        name,
        data,
        timestamp,
        // Written by serde_json from raw values, so never parsed again; cannot fail.
        source: serde_json::value::to_raw_value(&source).ok(),
    })
}

/// `text` as a JSON string, quoted and escaped.
fn json_string(text: &str) -> String {
    // Writing a string into a String cannot fail.
    serde_json::to_string(text).unwrap_or_default()
}

fn empty() -> &'static RawValue {
    // A valid JSON literal; cannot fail.
    serde_json::from_str("{}").unwrap_or(RawValue::NULL)
}

fn raw_value(text: String) -> Box<RawValue> {
    // Built from raw JSON values and serialized keys, so always valid JSON.
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Whether the JSON text `raw` may hold the member `key`: it does not when neither the key
/// nor an escape (which could spell it) is in it.
fn may_hold(raw: &RawValue, key: &str) -> bool {
    let text = raw.get();
    text.contains(key) || text.contains('\\')
}

/// `context.sessionId` or `properties.session_id` when a UUID; else made from `anonymousId`,
/// or `userId` when there is none (the same visitor stays in one session).
fn session(
    message: &Fields<'_>,
    context: &Fields<'_>,
    properties: Option<&Fields<'_>>,
    last_visitor: &RefCell<Option<(String, Uuid)>>,
) -> Option<Uuid> {
    let given = context
        .str_lenient("sessionId")
        .or_else(|| properties.and_then(|p| p.str_lenient("session_id")))
        .and_then(|s| Uuid::parse_str(&s).ok());
    if given.is_some() {
        return given;
    }
    for key in ["anonymousId", "userId"] {
        if let Some(raw) = message.get(key) {
            let value = text(raw).unwrap_or(Cow::Borrowed(raw.get()));
            if !value.is_empty() {
                let name = format!("{key}:{value}");
                let mut last = last_visitor.borrow_mut();
                if let Some((visitor, id)) = last.as_ref()
                    && *visitor == name
                {
                    return Some(*id);
                }
                let id = Uuid::new_v5(&SESSION_NAMESPACE, name.as_bytes());
                *last = Some((name, id));
                return Some(id);
            }
        }
    }
    None
}

/// When the event happened, corrected for the client's clock as Segment does: the receipt
/// time less how long before sending it happened (`sentAt - originalTimestamp`), else the
/// message's `timestamp`, else the receipt time.
fn timestamp(
    message: &Fields<'_>,
    receipt: &Receipt<'_>,
) -> Result<DateTime<Utc>, (&'static str, String)> {
    let read = |field: &'static str,
                raw: Option<&RawValue>|
     -> Result<Option<DateTime<Utc>>, (&'static str, String)> {
        let Some(raw) = raw.filter(|r| r.get() != "null") else {
            return Ok(None);
        };
        let value = text(raw).ok_or((field, format!("{field} must be a string")))?;
        EventTimestamp::parse(&value)
            .map(|t| Some(t.0))
            .map_err(|why| (field, why))
    };
    let sent = read("sentAt", message.get("sentAt").or(receipt.sent_at))?;
    let original = read("originalTimestamp", message.get("originalTimestamp"))?;
    if let (Some(sent), Some(original)) = (sent, original) {
        return receipt
            .received_at
            .checked_sub_signed(sent - original)
            .ok_or((
                "originalTimestamp",
                "sentAt and originalTimestamp are too far apart".into(),
            ));
    }
    Ok(read("timestamp", message.get("timestamp"))?.unwrap_or(receipt.received_at))
}

/// The page's properties with `host` and `path` added when they are missing, from
/// `properties.url`/`properties.path`, else from `context.page`; the properties are kept
/// as sent beside them.
fn page_data(raw: &RawValue, properties: &Fields<'_>, context: &Fields<'_>) -> String {
    let page = context.object("page").unwrap_or_default();
    let url_of = |fields: &Fields<'_>| {
        fields
            .str_lenient("url")
            .and_then(|u| url::Url::parse(&u).ok())
    };
    let (properties_url, page_url) = (url_of(properties), url_of(&page));
    let mut added = Vec::new();
    if properties.get("host").is_none() {
        let host = [&properties_url, &page_url]
            .into_iter()
            .flatten()
            .find_map(|u| {
                let host = u.host_str()?;
                Some(match u.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_owned(),
                })
            });
        added.extend(host.map(|h| ("host", h)));
    }
    if properties.get("path").is_none() {
        let path = properties_url
            .as_ref()
            .map(|u| u.path().to_owned())
            .or_else(|| page.str_lenient("path").map(Cow::into_owned))
            .or_else(|| page_url.as_ref().map(|u| u.path().to_owned()));
        added.extend(path.map(|p| ("path", p)));
    }
    let text = raw.get().trim();
    let Some(rest) = text.strip_prefix('{') else {
        return text.to_owned();
    };
    let mut out = String::with_capacity(text.len() + 64);
    out.push('{');
    for (i, (key, value)) in added.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(r#""{key}":"#));
        out.push_str(&json_string(value));
    }
    if !added.is_empty() && !rest.trim_start().starts_with('}') {
        out.push(',');
    }
    out.push_str(rest);
    out
}

/// The message less what went into `data` and less the write key, with the implied `type`
/// in place of a missing or null one; each value as sent.
struct Source<'m, 'a> {
    message: &'m Fields<'a>,
    kind: Kind,
    data_key: &'m str,
}

impl Serialize for Source<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        let implied = self.message.get("type").is_none();
        if implied {
            map.serialize_entry("type", self.kind.as_str())?;
        }
        for (key, value) in &self.message.0 {
            if key == self.data_key || key == "writeKey" || (implied && key == "type") {
                continue;
            }
            map.serialize_entry(key.as_ref(), value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn received() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    fn map(message: &str, implied: Option<Kind>) -> Result<Event, Vec<(String, String)>> {
        let raw: &RawValue = serde_json::from_str(message).unwrap();
        let fields = Fields::of(raw).unwrap();
        let receipt = Receipt {
            received_at: received(),
            sent_at: None,
            last_visitor: Default::default(),
        };
        event(&fields, implied, &receipt, Some(0))
            .map_err(|e| e.into_iter().map(|e| (e.field, e.code)).collect())
    }

    fn json(raw: &RawValue) -> serde_json::Value {
        serde_json::from_str(raw.get()).unwrap()
    }

    #[test]
    fn a_null_type_is_replaced_by_the_implied_one_not_repeated() {
        let event = map(
            r#"{"type":null,"event":"e","anonymousId":"a"}"#,
            Some(Kind::Track),
        )
        .unwrap();
        let source = event.source.as_deref().unwrap().get();
        assert_eq!(source, r#"{"type":"track","event":"e","anonymousId":"a"}"#);
    }

    #[test]
    fn a_message_is_measured_as_it_is_kept() {
        let raw: &RawValue = serde_json::from_str(
            r#"{ "a\u0001\u0002": "x",  "\u0041": 1, "type" : "track", "b": [1, 2] }"#,
        )
        .unwrap();
        let fields = Fields::of(raw).unwrap();
        let source = Source {
            message: &fields,
            kind: Kind::Track,
            data_key: "properties",
        };
        let kept = serde_json::to_string(&source).unwrap();
        assert_eq!(
            kept,
            r#"{"a\u0001\u0002":"x","A":1,"type":"track","b":[1, 2]}"#
        );
        // Counted with a comma after every member, the last one too.
        assert_eq!(fields.size(), kept.len() + 1);
    }

    #[test]
    fn a_track_call_is_named_by_its_event_and_keeps_its_properties_exactly() {
        let event = map(
            r#"{"type":"track","event":"Order Completed","messageId":"m-1","anonymousId":"a1",
               "properties":{"category":"checkout","total":19.990,"big":12345678901234567890},
               "context":{"ip":"10.0.0.1"},"writeKey":"secret"}"#,
            None,
        )
        .unwrap();
        assert_eq!(event.category, "checkout");
        assert_eq!(event.name, "Order Completed");
        assert_eq!(
            event.data.get(),
            r#"{"category":"checkout","total":19.990,"big":12345678901234567890}"#
        );
        assert_eq!(event.id, Uuid::new_v5(&MESSAGE_NAMESPACE, b"m-1"));
        let source = json(event.source.as_deref().unwrap());
        assert_eq!(source["anonymousId"], "a1");
        assert_eq!(source["context"]["ip"], "10.0.0.1");
        assert!(source.get("properties").is_none(), "{source}");
        assert!(source.get("writeKey").is_none(), "the key is never stored");
        let no_category = map(
            r#"{"event":"Signed Up","userId":"u","properties":{"category":7}}"#,
            Some(Kind::Track),
        )
        .unwrap();
        assert_eq!(no_category.category, "track");
        assert_eq!(
            json(no_category.source.as_deref().unwrap())["type"],
            "track"
        );
    }

    #[test]
    fn visitors_of_one_batch_each_keep_their_own_session() {
        let receipt = Receipt {
            received_at: received(),
            sent_at: None,
            last_visitor: Default::default(),
        };
        let sessions: Vec<Uuid> = ["a1", "a1", "a2", "a1"]
            .iter()
            .map(|visitor| {
                let message =
                    format!(r#"{{"type":"track","event":"e","anonymousId":"{visitor}"}}"#);
                let raw: &RawValue = serde_json::from_str(&message).unwrap();
                let fields = Fields::of(raw).unwrap();
                event(&fields, None, &receipt, Some(0)).unwrap().session_id
            })
            .collect();
        let alone = |visitor: &str| {
            let message = format!(r#"{{"type":"track","event":"e","anonymousId":"{visitor}"}}"#);
            map(&message, None).unwrap().session_id
        };
        assert_eq!(
            sessions,
            [alone("a1"), alone("a1"), alone("a2"), alone("a1")]
        );
        assert_ne!(sessions[0], sessions[2]);
    }

    #[test]
    fn a_uuid_message_id_is_the_id_and_a_session_comes_from_the_visitor() {
        let id = "0b0c3e5e-9c4b-4d43-a0d6-8e2f1e1f7a11";
        let a = map(
            &format!(r#"{{"type":"identify","messageId":"{id}","anonymousId":"a1","traits":{{"plan":"pro"}}}}"#),
            None,
        )
        .unwrap();
        assert_eq!(a.id.to_string(), id);
        assert_eq!(
            (a.category.as_str(), a.name.as_str()),
            ("identify", "identify")
        );
        assert_eq!(a.data.get(), r#"{"plan":"pro"}"#);
        let b = map(
            r#"{"type":"alias","anonymousId":"a1","previousId":"old"}"#,
            None,
        )
        .unwrap();
        assert_eq!(a.session_id, b.session_id, "one visitor, one session");
        assert_eq!(b.data.get(), "{}");
        assert_eq!(json(b.source.as_deref().unwrap())["previousId"], "old");
        let user = map(r#"{"type":"group","userId":"a1","groupId":"g"}"#, None).unwrap();
        assert_ne!(
            user.session_id, a.session_id,
            "a user id is not an anonymous id"
        );
        let session = "6a3c1f0e-1a2b-4c3d-8e9f-0a1b2c3d4e5f";
        let given = map(
            &format!(r#"{{"type":"screen","name":"Home","userId":"u","context":{{"sessionId":"{session}"}}}}"#),
            None,
        )
        .unwrap();
        assert_eq!(given.session_id.to_string(), session);
        assert_eq!(
            (given.category.as_str(), given.name.as_str()),
            ("screen", "Home")
        );
    }

    #[test]
    fn a_page_gets_host_and_path_from_its_url_or_the_context() {
        let from_url = map(
            r#"{"type":"page","anonymousId":"a","properties":{"url":"https://shop.example:8443/pricing?x=1","title":"Pricing"}}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            (from_url.category.as_str(), from_url.name.as_str()),
            ("page interaction", "pageview")
        );
        assert_eq!(
            json(&from_url.data),
            serde_json::json!({"host": "shop.example:8443", "path": "/pricing",
                "url": "https://shop.example:8443/pricing?x=1", "title": "Pricing"})
        );
        let from_context = map(
            r#"{"anonymousId":"a","context":{"page":{"url":"https://blog.example/a/b","path":"/a/b"}}}"#,
            Some(Kind::Page),
        )
        .unwrap();
        assert_eq!(
            from_context.data.get(),
            r#"{"host":"blog.example","path":"/a/b"}"#
        );
        let own = map(
            r#"{"type":"page","anonymousId":"a","properties":{"host":"mine","path":"/p","n":1.0}}"#,
            None,
        )
        .unwrap();
        assert_eq!(own.data.get(), r#"{"host":"mine","path":"/p","n":1.0}"#);
        let nothing = map(r#"{"type":"page","anonymousId":"a"}"#, None).unwrap();
        assert_eq!(
            nothing.data.get(),
            "{}",
            "the worker then names what is missing"
        );
    }

    #[test]
    fn the_time_is_corrected_for_the_clients_clock() {
        let corrected = map(
            r#"{"type":"track","event":"e","anonymousId":"a","timestamp":"2001-01-01T00:00:00Z",
               "originalTimestamp":"2030-01-01T00:00:00Z","sentAt":"2030-01-01T00:00:05.5Z"}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            corrected.timestamp,
            received() - chrono::Duration::milliseconds(5500)
        );
        let given = map(
            r#"{"type":"track","event":"e","anonymousId":"a","timestamp":"2026-11-20 08:00:00"}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            given.timestamp,
            Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap()
        );
        let none = map(r#"{"type":"track","event":"e","anonymousId":"a"}"#, None).unwrap();
        assert_eq!(none.timestamp, received());
    }

    #[test]
    fn problems_are_named_by_field_with_a_stable_code() {
        let cases = [
            (
                r#"{"event":"e","anonymousId":"a"}"#,
                "batch[0].type",
                "required",
            ),
            (
                r#"{"type":"click","anonymousId":"a"}"#,
                "batch[0].type",
                "invalid_value",
            ),
            (
                r#"{"type":"track","anonymousId":"a"}"#,
                "batch[0].event",
                "required",
            ),
            (
                r#"{"type":"track","event":1,"anonymousId":"a"}"#,
                "batch[0].event",
                "invalid_type",
            ),
            (
                r#"{"type":"track","event":"e"}"#,
                "batch[0].anonymousId",
                "required",
            ),
            (
                r#"{"type":"track","event":"e","userId":"u","messageId":5}"#,
                "batch[0].messageId",
                "invalid_type",
            ),
            (
                r#"{"type":"track","event":"e","userId":"u","timestamp":"soon"}"#,
                "batch[0].timestamp",
                "invalid_timestamp",
            ),
            (
                r#"{"type":"track","event":"e","userId":"u","sentAt":"x","originalTimestamp":"2020-01-01T00:00:00Z"}"#,
                "batch[0].sentAt",
                "invalid_timestamp",
            ),
        ];
        for (message, field, code) in cases {
            assert_eq!(
                map(message, None).unwrap_err(),
                [(field.to_owned(), code.to_owned())],
                "{message}"
            );
        }
    }
}
