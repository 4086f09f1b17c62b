//! Every error the api answers with, as `application/problem+json` with a stable `code`.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use eye_auth::AuthError;
use eye_core::FieldError;
use eye_core::queue::PublishError;
use eye_core::telemetry::ErrorChain;
use serde::Serialize;
use uuid::Uuid;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("send the body as `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("`Content-Encoding: {0}` is not supported; send gzip or no encoding")]
    UnsupportedEncoding(String),
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("event {index} is larger than {limit} bytes")]
    EventTooLarge { index: usize, limit: usize },
    #[error("a request may carry at most {0} events")]
    TooManyEvents(usize),
    #[error("the body is not valid gzip")]
    InvalidGzip,
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body must be an event object or a non-empty array of events")]
    NotAnEvent,
    #[error("some events are not valid; see `errors`")]
    InvalidEvents(Vec<FieldError>),
    #[error("the event could not be queued: {0}")]
    Broker(#[from] PublishError),
    #[error(
        "the broker did not confirm in time ({reason}); the events may still be stored: retry with the same ids (see `ids`) so they are stored once"
    )]
    Unconfirmed { reason: String, ids: Vec<Uuid> },
    #[error("reading the request failed")]
    Read(#[source] actix_web::error::PayloadError),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Auth(e) => e.code(),
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::UnsupportedEncoding(_) => "unsupported_encoding",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::EventTooLarge { .. } => "event_too_large",
            ApiError::TooManyEvents(_) => "too_many_events",
            ApiError::InvalidGzip => "invalid_gzip",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::NotAnEvent => "not_an_event",
            ApiError::InvalidEvents(_) => "invalid_events",
            ApiError::Broker(e) => e.code(),
            ApiError::Unconfirmed { .. } => "broker_unconfirmed",
            ApiError::Read(_) => "read_failed",
        }
    }

    fn title(&self) -> &'static str {
        match self.status_code() {
            StatusCode::UNAUTHORIZED => "Not authenticated",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "Too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
            StatusCode::SERVICE_UNAVAILABLE => "Temporarily unavailable",
            StatusCode::GATEWAY_TIMEOUT => "Outcome unknown",
            _ => "Invalid request",
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    code: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
    #[serde(skip_serializing_if = "<[Uuid]>::is_empty")]
    ids: &'a [Uuid],
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Auth(e) => e.status_code(),
            ApiError::UnsupportedMediaType | ApiError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::PayloadTooLarge(_)
            | ApiError::EventTooLarge { .. }
            | ApiError::TooManyEvents(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidGzip
            | ApiError::InvalidJson(_)
            | ApiError::NotAnEvent
            | ApiError::InvalidEvents(_)
            | ApiError::Read(_) => StatusCode::BAD_REQUEST,
            ApiError::Broker(PublishError::Unconfirmed(_)) | ApiError::Unconfirmed { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ApiError::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %ErrorChain(self as &dyn std::error::Error), "request failed");
        } else {
            tracing::debug!(code = self.code(), error = %self, "request refused");
        }
        let errors = match self {
            ApiError::InvalidEvents(errors) => errors.as_slice(),
            _ => &[],
        };
        let ids = match self {
            ApiError::Unconfirmed { ids, .. } => ids.as_slice(),
            _ => &[],
        };
        let problem = Problem {
            kind: format!("urn:eye:problem:{}", self.code()),
            title: self.title(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: self.code(),
            errors,
            ids,
        };
        let mut response = HttpResponse::build(status);
        response.insert_header((CONTENT_TYPE, "application/problem+json"));
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ) {
            response.insert_header((RETRY_AFTER, RETRY_AFTER_SECS));
        }
        response.body(serde_json::to_vec(&problem).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(error: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = error.error_response();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let status = response.status();
        let body = actix_web::body::to_bytes(response.into_body());
        let body = futures_util::FutureExt::now_or_never(body)
            .unwrap()
            .unwrap();
        (status, retry_after, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn a_blocked_broker_is_a_503_to_retry_later() {
        let (status, retry_after, problem) = rendered(ApiError::Broker(PublishError::Blocked));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(problem["code"], "broker_blocked");
        assert!(problem["detail"].as_str().unwrap().contains("alarm"));
    }

    #[test]
    fn events_sent_but_not_confirmed_are_a_504_listing_their_ids() {
        let ids = vec![Uuid::now_v7(), Uuid::now_v7()];
        let (status, retry_after, problem) = rendered(ApiError::Unconfirmed {
            reason: "no confirm before the deadline".into(),
            ids: ids.clone(),
        });
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(problem["code"], "broker_unconfirmed");
        let listed: Vec<Uuid> = serde_json::from_value(problem["ids"].clone()).unwrap();
        assert_eq!(listed, ids);
    }
}
