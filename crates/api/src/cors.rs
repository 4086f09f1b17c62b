//! CORS for the pages of publishable keys. An `Origin` that an active publishable key lists
//! (any key: a preflight carries none) gets the CORS headers on every `/v1/` answer and its
//! preflights answered; any other origin gets neither, so a browser keeps its page from
//! reading answers. This is not what protects the keys: the gate checks each request's
//! `Origin` against its own key's origins, whatever the browser does with the answer.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, HeaderValue, ORIGIN, VARY,
};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use eye_auth::AuthError;

use crate::State;
use crate::problem::ApiError;

/// What a page may send: JSON or text bodies, gzipped or not, a bearer key, a request id.
pub const ALLOWED_HEADERS: &str = "Content-Type, Authorization, Content-Encoding, X-Request-Id";
/// What a page may read of an answer besides the body.
pub const EXPOSED_HEADERS: &str = "Retry-After, X-Request-Id";
/// How long a browser may reuse a preflight's answer (Chromium caps it at 2 h).
pub const MAX_AGE_SECS: u32 = 7200;

/// Answers a CORS preflight (`OPTIONS`) on `/v1/…` from a listed origin with 204; anything
/// else is refused with 403, naming why.
pub async fn preflight(
    request: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    match eye_auth::origin(&request) {
        Some(origin) if state.gate.origin_listed(origin) => Ok(HttpResponse::NoContent()
            .insert_header((ACCESS_CONTROL_ALLOW_METHODS, "POST"))
            .insert_header((ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS))
            .insert_header((ACCESS_CONTROL_MAX_AGE, MAX_AGE_SECS))
            .finish()),
        Some(origin) => Err(AuthError::OriginNotAllowed(
            origin
                .chars()
                .take(eye_core::origin::MAX_ORIGIN_CHARS)
                .collect(),
        )
        .into()),
        None => Err(AuthError::OriginRequired.into()),
    }
}

/// Adds the CORS headers to every `/v1/` answer (errors included, so a page can read why it
/// was refused) for a listed origin, and `Vary: Origin` to every `/v1/` answer to a request
/// that named one. The list is read after the handler, so a key's first use lists it.
pub async fn headers(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let origin = request
        .path()
        .starts_with("/v1/")
        .then(|| request.headers().get(ORIGIN).cloned())
        .flatten();
    let gate = request
        .app_data::<web::Data<State>>()
        .map(|state| state.gate.clone());
    let mut response = next.call(request).await?;
    let (Some(origin), Some(gate)) = (origin, gate) else {
        return Ok(response);
    };
    let headers = response.headers_mut();
    headers.append(VARY, HeaderValue::from_static("Origin"));
    if origin.to_str().is_ok_and(|o| gate.origin_listed(o)) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
    Ok(response)
}
