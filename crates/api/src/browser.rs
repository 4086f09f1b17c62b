//! Web pages as senders: `POST /v1/browser/events`, which takes a publishable key from the body
//! so that `navigator.sendBeacon` and a `text/plain` fetch (no CORS preflight) can send, and
//! `/eye.js`, the snippet that does it.

use std::borrow::Cow;

use actix_web::http::Method;
use actix_web::http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, ETAG, IF_NONE_MATCH, X_CONTENT_TYPE_OPTIONS,
};
use actix_web::{HttpRequest, HttpResponse, web};
use eye_core::token::Scope;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::problem::ApiError;
use crate::{State, cors, ingest};

/// The snippet, served as it is in the repository: no build step.
pub const SCRIPT: &str = include_str!("../static/eye.js");

/// Changes whenever the script does, so a cached copy is revalidated cheaply.
const SCRIPT_TAG: u64 = fnv1a(SCRIPT.as_bytes());

/// Registers the browser path, the preflights of every `/v1/` route and `/eye.js`.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/browser/events", web::post().to(post_events))
        .route(
            "/v1/{_:.*}",
            web::method(Method::OPTIONS).to(cors::preflight),
        )
        .route("/eye.js", web::get().to(script));
}

/// What a page sends: its publishable key beside the events.
#[derive(Deserialize)]
struct BrowserBody<'a> {
    #[serde(borrow, default)]
    key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    events: &'a RawValue,
}

/// Sends events from a web page: `{"key": "<publishable key>", "events": [...]}` as
/// `text/plain` (what `navigator.sendBeacon` sends, and a fetch that needs no preflight) or
/// `application/json`, answered 202 once the broker confirmed them. Only publishable keys are
/// taken here, and only with an `Origin` header naming one of the key's origins; each client
/// address is also held to `publishable_rate_limit`.
#[utoipa::path(
    post,
    path = "/v1/browser/events",
    tag = "browser",
    operation_id = "post_browser_events",
    request_body(content = crate::openapi::BrowserEvents, content_type = "text/plain",
                 description = "JSON, sent as `text/plain` or `application/json`."),
    params(
        ("Origin" = String, Header,
         description = "The page's origin, as browsers send it; it must be one of the key's."),
        ("Content-Encoding" = Option<String>, Header,
         description = "`gzip` for a compressed body; `identity` or none for plain JSON.")
    ),
    responses((status = 202, description = "Queued and confirmed.", body = crate::ingest::Accepted))
)]
#[tracing::instrument(skip_all, fields(application_id, events))]
pub async fn post_events(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    check_content_type(&request)?;
    let gzip = ingest::is_gzip(&request)?;
    let limits = &state.limits;
    let body = ingest::read_body(&request, payload, limits.max_request_bytes).await?;
    state.metrics.body(body.len());
    let arrived = tokio::time::Instant::now();
    let inflated;
    let body: &[u8] = if gzip {
        inflated = ingest::gunzip(&body, limits.max_request_bytes)?;
        &inflated
    } else {
        &body
    };
    let sent: BrowserBody =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let key = sent
        .key
        .filter(|key| !key.trim().is_empty())
        .ok_or(ApiError::MissingKey)?;
    let grant = state
        .gate
        .authorize_key(key.trim(), eye_auth::origin(&request), Scope::EventsWrite)
        .await?;
    if !grant.is_publishable() {
        return Err(ApiError::NotPublishable);
    }
    tracing::Span::current().record(
        "application_id",
        tracing::field::display(grant.application_id),
    );
    let events = ingest::parse_events(sent.events.get().as_bytes(), limits)?;
    let received_at = eye_core::event::now();
    let ids = ingest::queue(&request, &state, &grant, events, arrived, received_at).await?;
    Ok(HttpResponse::Accepted().json(ingest::Accepted { ids }))
}

/// `text/plain` or `application/json`, with any parameters (`charset=UTF-8`).
fn check_content_type(request: &HttpRequest) -> Result<(), ApiError> {
    if ingest::is_json_or_text(request) {
        Ok(())
    } else {
        Err(ApiError::BrowserMediaType)
    }
}

/// The snippet that sends page views and clicks from a page; see the README, "In a browser".
#[utoipa::path(
    get,
    path = "/eye.js",
    tag = "browser",
    operation_id = "eye_js",
    responses(
        (status = 200, description = "The script; cached for an hour, then revalidated by ETag.",
         content_type = "text/javascript", body = String),
        (status = 304, description = "The copy named by `If-None-Match` is current.")
    )
)]
pub async fn script(request: HttpRequest) -> HttpResponse {
    let tag = format!("\"{SCRIPT_TAG:016x}\"");
    let current = request
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut response = if current {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((ETAG, tag))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // Any page may load it, also with `crossorigin` and integrity, or under COEP.
        .insert_header((ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header(("Cross-Origin-Resource-Policy", "cross-origin"));
    if current {
        return response.finish();
    }
    response
        .content_type("text/javascript; charset=utf-8")
        .body(SCRIPT)
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}
