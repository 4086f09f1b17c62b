//! The id that ties one request's log lines, its answer and its events' worker logs together.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The header a request id travels in, both ways.
pub const HEADER: &str = "x-request-id";

/// A request id: the client's own when it is sane, 1–64 characters of `[A-Za-z0-9._:-]`
/// (enough for a UUID or a W3C `traceparent`, nothing that could break a log line or a header),
/// otherwise a fresh UUID. Cheap to clone: every event of a request carries it in the worker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    pub const MAX_LEN: usize = 64;

    /// The id if `text` is sane, `None` otherwise (it is then never echoed anywhere).
    pub fn parse(text: &str) -> Option<Self> {
        let sane = (1..=Self::MAX_LEN).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        sane.then(|| Self(text.into()))
    }

    /// A new random id (a UUID).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("not a sane request id"))
    }
}

/// Reads an optional request id that must never cost its container: anything but a sane id
/// (a number, an object, an insane string) reads as none.
pub fn lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<RequestId>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(value.as_str().and_then(RequestId::parse))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_as_sent() {
        for id in [
            "a",
            "0f6c1b2e-9d1a-4c55-8c3e-2f1b7a9e4d10",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "svc.checkout:42_retry-1",
            &"x".repeat(64),
        ] {
            assert_eq!(RequestId::parse(id).map(|r| r.to_string()), Some(id.into()));
        }
    }

    #[test]
    fn empty_long_spaced_control_or_non_ascii_ids_are_refused() {
        for id in [
            "",
            &"x".repeat(65),
            "two words",
            "line\nbreak",
            "tab\t",
            "nul\0",
            "caf\u{e9}",
            "semi;colon",
            "quote\"",
            "slash/",
        ] {
            assert_eq!(RequestId::parse(id), None, "{id:?}");
        }
    }

    #[test]
    fn generated_ids_are_sane_and_differ() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_ne!(a, b);
        assert_eq!(RequestId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn a_wrong_request_id_reads_as_none_leniently() {
        #[derive(Deserialize)]
        struct Holder {
            #[serde(default, deserialize_with = "lenient")]
            request_id: Option<RequestId>,
        }
        let read = |json: &str| serde_json::from_str::<Holder>(json).unwrap().request_id;
        assert_eq!(read(r#"{"request_id":"ok-1"}"#).unwrap().as_str(), "ok-1");
        assert_eq!(read(r#"{}"#), None);
        assert_eq!(read(r#"{"request_id":null}"#), None);
        assert_eq!(read(r#"{"request_id":7}"#), None);
        assert_eq!(read(r#"{"request_id":"bad id"}"#), None);
    }
}
