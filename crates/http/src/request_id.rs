//! `X-Request-Id`: the client's own when sane (see [`RequestId::parse`]), otherwise a new one;
//! answered on every response, and in every log line and problem body of the request.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use eye_core::RequestId;
use eye_core::request_id::HEADER;
use tracing::Instrument;

tokio::task_local! {
    static CURRENT: RequestId;
}

/// The id of the request being handled on this task; `None` outside a request (a unit test
/// rendering an error, a background task).
pub fn current_request_id() -> Option<RequestId> {
    CURRENT.try_with(RequestId::clone).ok()
}

/// Runs `future` as part of request `id`, as the middleware does around a handler.
pub async fn scope<F: Future>(id: RequestId, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

/// Middleware (`actix_web::middleware::from_fn(request_id)`), wrapped outermost so that every
/// other middleware, extractor and handler runs inside the request's span and task-local.
pub async fn request_id(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::parse)
        .unwrap_or_else(RequestId::generate);
    // At error level so that it exists whenever any line of the request is logged.
    let span = tracing::error_span!("request", request_id = %id, method = %request.method(),
        path = request.path());
    let tagged = id.clone();
    let handled = async move {
        match next.call(request).await {
            Ok(mut response) => {
                tag(response.headers_mut(), &tagged);
                Ok(response)
            }
            // Rendered here, not later by the server, so that its body still sees the id.
            Err(error) => {
                let mut response = error.error_response();
                tag(response.headers_mut(), &tagged);
                Err(InternalError::from_response(error, response).into())
            }
        }
    };
    CURRENT.scope(id, handled.instrument(span)).await
}

fn tag(headers: &mut HeaderMap, id: &RequestId) {
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        headers.insert(HeaderName::from_static(HEADER), value);
    }
}
