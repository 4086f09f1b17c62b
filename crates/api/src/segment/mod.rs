//! The Segment HTTP API (`/v1/batch`, `/v1/track`, `/v1/page`, …), so that applications
//! already carrying a Segment or RudderStack SDK can point its host at The Eye. Messages are
//! mapped to events (see [`map`]) and queued exactly as `POST /v1/events` queues them: the
//! answer, `200 {"success": true}` because several SDKs accept nothing else, comes only after
//! the broker's confirm, and refusals keep their problem+json status codes so SDKs retry a
//! 503 and drop a 400.

pub mod map;

use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use eye_core::FieldError;
use eye_core::token::Scope;
use serde::Serialize;

use crate::State;
use crate::ingest::{self, MAX_REPORTED_ERRORS};
use crate::problem::ApiError;
use map::{BatchBody, Fields, Kind, Message, Receipt};

/// Segment's bounds: a batch request and one message.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// What every Segment endpoint answers once the broker confirmed.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Success {
    #[schema(example = true)]
    success: bool,
}

/// Sends a batch of Segment messages of any type (`{"batch": [...], "sentAt": ...}`), as
/// Segment's and RudderStack's SDKs do. Also served on `/v1/import` and `/v1/b`. The write
/// key (an ingestion token) goes as the Basic-auth user name, as `writeKey` in the body or as
/// a bearer token. `Content-Type: text/plain` is accepted as JSON, so that browsers need no
/// preflight; the body may be gzip. At most 500 KB a batch and 32 KB a message.
#[utoipa::path(
    post,
    path = "/v1/batch",
    tag = "segment",
    operation_id = "segment_batch",
    request_body(content = crate::openapi::SegmentBatch, content_type = "application/json"),
    responses((status = 200, description = "Every message was queued and the broker confirmed.",
               body = Success)),
    security(("basic" = []), ("bearer" = []))
)]
pub async fn batch(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    receive(request, payload, state, None).await
}

/// Sends one `track` message: an action, stored as an event of category
/// `properties.category` (or `track`) named by `event`. Also served on `/v1/t`.
#[utoipa::path(post, path = "/v1/track", tag = "segment", operation_id = "segment_track",
    request_body(content = crate::openapi::SegmentMessage, content_type = "application/json"),
    responses((status = 200, description = "Queued and confirmed.", body = Success)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn track(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    receive(request, payload, state, Some(Kind::Track)).await
}

/// Sends one `page` message, stored as `page interaction` / `pageview` with `host` and
/// `path` taken from the page's url. Also served on `/v1/p`.
#[utoipa::path(post, path = "/v1/page", tag = "segment", operation_id = "segment_page",
    request_body(content = crate::openapi::SegmentMessage, content_type = "application/json"),
    responses((status = 200, description = "Queued and confirmed.", body = Success)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn page(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    receive(request, payload, state, Some(Kind::Page)).await
}

/// Sends one `screen` message (category `screen`, named by `name`). Also served on `/v1/s`.
#[utoipa::path(post, path = "/v1/screen", tag = "segment", operation_id = "segment_screen",
    request_body(content = crate::openapi::SegmentMessage, content_type = "application/json"),
    responses((status = 200, description = "Queued and confirmed.", body = Success)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn screen(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    receive(request, payload, state, Some(Kind::Screen)).await
}

/// Sends one `identify` message (category and name `identify`, `data` = the traits). Also
/// served on `/v1/i`.
#[utoipa::path(post, path = "/v1/identify", tag = "segment", operation_id = "segment_identify",
    request_body(content = crate::openapi::SegmentMessage, content_type = "application/json"),
    responses((status = 200, description = "Queued and confirmed.", body = Success)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn identify(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    receive(request, payload, state, Some(Kind::Identify)).await
}

/// Sends one `group` message (category and name `group`, `data` = the traits). Also served
/// on `/v1/g`.
#[utoipa::path(post, path = "/v1/group", tag = "segment", operation_id = "segment_group",
    request_body(content = crate::openapi::SegmentMessage, content_type = "application/json"),
    responses((status = 200, description = "Queued and confirmed.", body = Success)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn group(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    receive(request, payload, state, Some(Kind::Group)).await
}

/// Sends one `alias` message (category and name `alias`; `previousId` is kept in `source`).
/// Also served on `/v1/a`.
#[utoipa::path(post, path = "/v1/alias", tag = "segment", operation_id = "segment_alias",
    request_body(content = crate::openapi::SegmentMessage, content_type = "application/json"),
    responses((status = 200, description = "Queued and confirmed.", body = Success)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn alias(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    receive(request, payload, state, Some(Kind::Alias)).await
}

/// Every path served, with the handler's kind: Segment's names and the one-letter ones its
/// browser library posts to.
pub fn routes(config: &mut web::ServiceConfig) {
    for path in ["/v1/batch", "/v1/import", "/v1/b"] {
        config.route(path, web::post().to(batch));
    }
    config
        .route("/v1/track", web::post().to(track))
        .route("/v1/t", web::post().to(track))
        .route("/v1/page", web::post().to(page))
        .route("/v1/p", web::post().to(page))
        .route("/v1/screen", web::post().to(screen))
        .route("/v1/s", web::post().to(screen))
        .route("/v1/identify", web::post().to(identify))
        .route("/v1/i", web::post().to(identify))
        .route("/v1/group", web::post().to(group))
        .route("/v1/g", web::post().to(group))
        .route("/v1/alias", web::post().to(alias))
        .route("/v1/a", web::post().to(alias));
}

#[tracing::instrument(skip_all, fields(application_id, events))]
async fn receive(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
    implied: Option<Kind>,
) -> Result<HttpResponse, ApiError> {
    // A key in a header is checked before the body is read; one in the body after.
    let mut grant = match header_key(&request)? {
        Some(key) => Some(
            state
                .gate
                .authorize_key(&key, eye_auth::origin(&request), Scope::EventsWrite)
                .await?,
        ),
        None => None,
    };
    check_content_type(&request)?;
    let gzip = ingest::is_gzip(&request)?;
    let limits = &state.limits;
    let body_limit = limits.max_request_bytes.min(MAX_BATCH_BYTES);
    let body = ingest::read_body(&request, payload, body_limit).await?;
    state.metrics.body(body.len());
    let arrived = tokio::time::Instant::now();
    let received_at = eye_core::event::now();
    let inflated;
    let body: &[u8] = if gzip {
        inflated = ingest::gunzip(&body, body_limit)?;
        &inflated
    } else {
        &body
    };
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => return Err(ApiError::NotAnEvent),
        None => return Err(ApiError::InvalidJson("the body is empty".into())),
    }
    // A batch is read in one pass, its messages as their members; a single message likewise.
    let (messages, sent_at, key_in_body) = match implied {
        None => {
            let top: BatchBody = serde_json::from_slice(body).map_err(ingest::invalid_json)?;
            let key = top.write_key().map(str::to_owned);
            (batch_of(top.batch)?, top.sent_at, key)
        }
        Some(_) => {
            let top: Fields = serde_json::from_slice(body).map_err(ingest::invalid_json)?;
            let key = top.str("writeKey").ok().flatten().map(|k| k.into_owned());
            (vec![Message::Object(top)], None, key)
        }
    };
    let grant = match grant.take() {
        Some(grant) => grant,
        None => match key_in_body {
            Some(key) => {
                state
                    .gate
                    .authorize_key(&key, eye_auth::origin(&request), Scope::EventsWrite)
                    .await?
            }
            None => return Err(ApiError::MissingWriteKey),
        },
    };
    tracing::Span::current().record(
        "application_id",
        tracing::field::display(grant.application_id),
    );
    if messages.len() > limits.max_events {
        return Err(ApiError::TooManyEvents(limits.max_events));
    }
    let receipt = Receipt {
        received_at,
        sent_at,
        last_visitor: Default::default(),
    };
    let message_limit = limits.max_event_bytes.min(MAX_MESSAGE_BYTES);
    let mut events = Vec::with_capacity(messages.len());
    let mut errors = Vec::new();
    for (index, message) in messages.into_iter().enumerate() {
        let Message::Object(message) = message else {
            errors.push(FieldError::new(
                format!("batch[{index}]"),
                "invalid_type",
                "a message must be a JSON object",
            ));
            continue;
        };
        if message.size() > message_limit {
            return Err(ApiError::EventTooLarge {
                index,
                limit: message_limit,
            });
        }
        let index = implied.is_none().then_some(index);
        match map::event(&message, implied, &receipt, index) {
            Ok(event) => events.push(event),
            Err(found) => errors.extend(found),
        }
    }
    if !errors.is_empty() {
        errors.truncate(MAX_REPORTED_ERRORS);
        return Err(ApiError::InvalidEvents(errors));
    }
    tracing::Span::current().record("events", events.len());
    ingest::queue(&request, &state, &grant, events, arrived, received_at).await?;
    Ok(HttpResponse::Ok().json(Success { success: true }))
}

/// The messages of a batch body.
fn batch_of(batch: Option<Vec<Message<'_>>>) -> Result<Vec<Message<'_>>, ApiError> {
    match batch {
        None => Err(ApiError::InvalidEvents(vec![FieldError::new(
            "batch",
            "required",
            "batch is required: an array of messages",
        )])),
        Some(messages) if messages.is_empty() => Err(ApiError::NotAnEvent),
        Some(messages) => Ok(messages),
    }
}

/// `application/json`, `text/plain` (what browsers send to avoid a preflight) or nothing.
fn check_content_type(request: &HttpRequest) -> Result<(), ApiError> {
    if !request.headers().contains_key(CONTENT_TYPE) || ingest::is_json_or_text(request) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// The write key from `Authorization`: the Basic user name (or the password when the user
/// name is empty), or a bearer token.
fn header_key(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get(AUTHORIZATION) else {
        return Ok(None);
    };
    let invalid = || ApiError::Auth(eye_auth::AuthError::InvalidToken);
    let value = value.to_str().map_err(|_| invalid())?;
    let (scheme, credentials) = value.split_once(' ').ok_or_else(invalid)?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Some(credentials.to_owned()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(invalid)?;
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    let key = if user.is_empty() { password } else { user };
    if key.is_empty() {
        return Ok(None);
    }
    Ok(Some(key.to_owned()))
}
