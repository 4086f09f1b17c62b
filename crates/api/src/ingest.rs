//! `POST /v1/events`: shape checks, then one persistent message per request, answered with
//! 202 only once the broker confirmed it.

use std::io::Read;

use actix_web::http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use eye_auth::Grant;
use eye_core::event::ENVELOPE_VERSION;
use eye_core::queue::PublishError;
use eye_core::token::Scope;
use eye_core::{Envelope, FieldError, IncomingEvent};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::State;
use crate::problem::ApiError;

/// At most this many field errors are listed in one 400.
pub(crate) const MAX_REPORTED_ERRORS: usize = 50;

/// Every event was queued and the broker confirmed it: it will be stored (or, if invalid,
/// kept with the rejected events).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The events' ids in the order sent: the client's own, or new ones.
    pub(crate) ids: Vec<Uuid>,
}

/// Sends events: one event object or an array of them, answered with 202 once the broker
/// confirmed them. The body may be gzip (`Content-Encoding: gzip`). Needs `events:write`.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    operation_id = "post_events",
    request_body(content = crate::openapi::Events, content_type = "application/json"),
    params(
        ("Content-Encoding" = Option<String>, Header,
         description = "`gzip` for a compressed body; `identity` or none for plain JSON.")
    ),
    responses((status = 202, description = "Queued and confirmed.", body = Accepted)),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(application_id, events))]
pub async fn post_events(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let grant = state.gate.authorize(&request, Scope::EventsWrite).await?;
    tracing::Span::current().record(
        "application_id",
        tracing::field::display(grant.application_id),
    );
    check_content_type(&request)?;
    let gzip = is_gzip(&request)?;
    let limits = &state.limits;
    let body = read_body(&request, payload, limits.max_request_bytes).await?;
    state.metrics.body(body.len());
    // The publish deadline counts from here, so a slow upload does not eat into it.
    let arrived = tokio::time::Instant::now();
    let inflated;
    let body: &[u8] = if gzip {
        inflated = gunzip(&body, limits.max_request_bytes)?;
        &inflated
    } else {
        &body
    };
    let events = parse_events(body, limits)?;
    tracing::Span::current().record("events", events.len());
    let received_at = eye_core::event::now();
    let ids = queue(&request, &state, &grant, events, arrived, received_at).await?;
    Ok(HttpResponse::Accepted().json(Accepted { ids }))
}

/// The steps every route shares once it holds a grant and events: the rate limits, then one
/// envelope of `grant`'s application queued and confirmed; answers the events' ids.
/// `arrived` is when the body was read, which starts the publish deadline.
pub(crate) async fn queue(
    request: &HttpRequest,
    state: &State,
    grant: &Grant,
    events: Vec<eye_core::Event>,
    arrived: tokio::time::Instant,
    received_at: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Uuid>, ApiError> {
    // At most `max_events_per_request` events, far below u32::MAX.
    let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
    if grant.is_publishable() {
        let address = state.proxies.origin(request).address;
        if let Err(refusal) = state
            .address_limiter
            .check(grant.application_id, address, count)
        {
            state.metrics.rate_limited(&grant.application_name);
            return Err(ApiError::address(refusal));
        }
    }
    if let Err(refusal) = state.rate_limiter.check(grant, count) {
        state.metrics.rate_limited(&grant.application_name);
        return Err(refusal.into());
    }
    let count = events.len();
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    // Sized once for what is written (ids, times and punctuation are about 200 bytes an event),
    // rather than grown by doubling and copying.
    let size = 256
        + events
            .iter()
            .map(|e| {
                200 + e.category.len()
                    + e.name.len()
                    + e.data.get().len()
                    + e.source.as_ref().map_or(0, |s| s.get().len())
            })
            .sum::<usize>();
    let envelope = Envelope {
        v: ENVELOPE_VERSION,
        application_id: grant.application_id,
        token_id: grant.token_id,
        received_at,
        request_id: eye_http::current_request_id(),
        events,
    };
    let mut message = Vec::with_capacity(size);
    serde_json::to_writer(&mut message, &envelope)
        .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    match state.outbox.send(message, arrived).await {
        Ok(()) => {
            state.metrics.accepted(&grant.application_name, count);
            Ok(ids)
        }
        Err(e) => {
            state.metrics.not_published(&e);
            match e {
                // The events may be stored after all: the ids let a retry store them once.
                PublishError::Unconfirmed(reason) => Err(ApiError::Unconfirmed { reason, ids }),
                e => Err(e.into()),
            }
        }
    }
}

/// The configurable bounds on a request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: usize,
    pub max_event_bytes: usize,
    pub max_request_bytes: usize,
}

fn check_content_type(request: &HttpRequest) -> Result<(), ApiError> {
    if request
        .content_type()
        .eq_ignore_ascii_case("application/json")
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Whether the body is `application/json` or `text/plain` (what browsers send to avoid a
/// preflight), whatever its parameters (`charset=UTF-8`).
pub(crate) fn is_json_or_text(request: &HttpRequest) -> bool {
    let media_type = request.content_type();
    media_type.eq_ignore_ascii_case("application/json")
        || media_type.eq_ignore_ascii_case("text/plain")
}

pub(crate) fn is_gzip(request: &HttpRequest) -> Result<bool, ApiError> {
    let Some(encoding) = request.headers().get(CONTENT_ENCODING) else {
        return Ok(false);
    };
    let encoding = encoding.to_str().unwrap_or("").trim();
    if encoding.eq_ignore_ascii_case("gzip") {
        Ok(true)
    } else if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        Ok(false)
    } else {
        Err(ApiError::UnsupportedEncoding(encoding.to_owned()))
    }
}

pub(crate) async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(4096).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(ApiError::Read)?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Decompresses without ever holding more than `limit` bytes.
pub(crate) fn gunzip(compressed: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    let read = flate2::read::GzDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|_| ApiError::InvalidGzip)?;
    if read > limit {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(body)
}

/// One event object or an array of them, each checked for shape and size.
pub fn parse_events(body: &[u8], limits: &Limits) -> Result<Vec<eye_core::Event>, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let (raw, batched): (Vec<&RawValue>, bool) = match first {
        Some(b'[') => (serde_json::from_slice(body).map_err(invalid_json)?, true),
        Some(b'{') => (
            vec![serde_json::from_slice(body).map_err(invalid_json)?],
            false,
        ),
        Some(_) => return Err(ApiError::NotAnEvent),
        None => return Err(ApiError::InvalidJson("the body is empty".into())),
    };
    if raw.is_empty() {
        return Err(ApiError::NotAnEvent);
    }
    if raw.len() > limits.max_events {
        return Err(ApiError::TooManyEvents(limits.max_events));
    }
    let mut events = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    for (index, raw) in raw.into_iter().enumerate() {
        if raw.get().len() > limits.max_event_bytes {
            return Err(ApiError::EventTooLarge {
                index,
                limit: limits.max_event_bytes,
            });
        }
        let prefix = if batched {
            format!("[{index}].")
        } else {
            String::new()
        };
        let mut deserializer = serde_json::Deserializer::from_str(raw.get());
        match serde_path_to_error::deserialize::<_, IncomingEvent>(&mut deserializer) {
            Ok(event) => events.push(event.into_event()),
            Err(e) if errors.len() < MAX_REPORTED_ERRORS => errors.push(field_error(&prefix, &e)),
            Err(_) => {}
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(ApiError::InvalidEvents(errors))
    }
}

pub(crate) fn invalid_json(error: serde_json::Error) -> ApiError {
    ApiError::InvalidJson(error.to_string())
}

/// Names the field and gives a stable code for a shape error.
fn field_error(prefix: &str, error: &serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let message = error.inner().to_string();
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    if let Some(missing) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        return FieldError::new(
            format!("{prefix}{missing}"),
            "required",
            format!("{missing} is required"),
        );
    }
    let path = error.path().to_string();
    let code = match path.as_str() {
        _ if message.starts_with("invalid type") => "invalid_type",
        "timestamp" => "invalid_timestamp",
        "id" | "session_id" => "invalid_uuid",
        _ => "invalid_value",
    };
    let field = if path == "." {
        prefix.trim_end_matches('.').to_owned()
    } else {
        format!("{prefix}{path}")
    };
    FieldError::new(field, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_events: 3,
        max_event_bytes: 400,
        max_request_bytes: 4096,
    };
    const VALID: &str = r#"{"session_id":"e2085be5-9137-4e4e-80b5-f1ffddc25423","category":"page interaction",
        "name":"pageview","data":{"host":"h","path":"/"},"timestamp":"2021-01-01 09:15:27.243860"}"#;

    fn errors(body: &str) -> Vec<(String, String)> {
        match parse_events(body.as_bytes(), &LIMITS) {
            Err(ApiError::InvalidEvents(errors)) => {
                errors.into_iter().map(|e| (e.field, e.code)).collect()
            }
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn one_event_or_an_array_of_them_is_accepted() {
        assert_eq!(parse_events(VALID.as_bytes(), &LIMITS).unwrap().len(), 1);
        let batch = format!("[{VALID},{VALID}]");
        let events = parse_events(batch.as_bytes(), &LIMITS).unwrap();
        assert_eq!(events.len(), 2);
        assert_ne!(events[0].id, events[1].id);
    }

    #[test]
    fn shape_errors_name_the_field_and_a_stable_code() {
        let cases = [
            (
                r#"{"category":"c","name":"n","data":{},"timestamp":"2021-01-01 00:00:00"}"#,
                "session_id",
                "required",
            ),
            (
                r#"{"session_id":"nope","category":"c","name":"n","data":{},"timestamp":"2021-01-01 00:00:00"}"#,
                "session_id",
                "invalid_uuid",
            ),
            (
                r#"{"session_id":"e2085be5-9137-4e4e-80b5-f1ffddc25423","category":7,"name":"n","data":{},"timestamp":"2021-01-01 00:00:00"}"#,
                "category",
                "invalid_type",
            ),
            (
                r#"{"session_id":"e2085be5-9137-4e4e-80b5-f1ffddc25423","category":"c","name":"n","data":{},"timestamp":"soon"}"#,
                "timestamp",
                "invalid_timestamp",
            ),
            (
                r#"{"session_id":"e2085be5-9137-4e4e-80b5-f1ffddc25423","category":"c","name":"n","timestamp":"2021-01-01 00:00:00"}"#,
                "data",
                "required",
            ),
        ];
        for (body, field, code) in cases {
            assert_eq!(
                errors(body),
                [(field.to_owned(), code.to_owned())],
                "{body}"
            );
        }
    }

    #[test]
    fn errors_in_a_batch_carry_the_index_of_the_event() {
        let body = format!(r#"[{VALID},{{"category":"c"}}]"#);
        let found = errors(&body);
        assert!(
            found.contains(&("[1].session_id".into(), "required".into())),
            "{found:?}"
        );
    }

    #[test]
    fn bodies_that_are_not_events_or_too_big_are_refused() {
        assert!(matches!(
            parse_events(b"[]", &LIMITS),
            Err(ApiError::NotAnEvent)
        ));
        assert!(matches!(
            parse_events(b"\"hi\"", &LIMITS),
            Err(ApiError::NotAnEvent)
        ));
        assert!(matches!(
            parse_events(b"{", &LIMITS),
            Err(ApiError::InvalidJson(_))
        ));
        let four = format!("[{VALID},{VALID},{VALID},{VALID}]");
        assert!(matches!(
            parse_events(four.as_bytes(), &LIMITS),
            Err(ApiError::TooManyEvents(3))
        ));
        let big = VALID.replace(
            r#""path":"/""#,
            &format!(r#""path":"/{}""#, "x".repeat(400)),
        );
        assert!(matches!(
            parse_events(big.as_bytes(), &LIMITS),
            Err(ApiError::EventTooLarge { index: 0, .. })
        ));
    }

    #[test]
    fn gzip_bombs_stop_at_the_limit() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![b' '; 1 << 20]).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 4096);
        assert!(matches!(
            gunzip(&bomb, 4096),
            Err(ApiError::PayloadTooLarge(4096))
        ));
        assert!(matches!(
            gunzip(b"not gzip", 4096),
            Err(ApiError::InvalidGzip)
        ));
    }
}
