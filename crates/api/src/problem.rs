//! Every error the api answers with, as `application/problem+json` with a stable `code`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use eye_auth::AuthError;
use eye_core::FieldError;
use eye_core::queue::PublishError;
use eye_core::rate_limit::RateLimit;
use eye_http::Problem;
use uuid::Uuid;

use crate::rate_limit::Refusal;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("send the body as `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("send the write key as the Basic-auth user name or as `writeKey` in the body")]
    MissingWriteKey,
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
    #[error(
        "this application's rate limit of {limit} events is reached; retry after {retry_after_secs} s"
    )]
    RateLimited {
        limit: RateLimit,
        retry_after_secs: u64,
    },
    #[error(
        "a batch of {events} events is more than this application's burst of {} (its limit is {limit} events) and can never pass: split the batch",
        limit.burst
    )]
    BatchOverBurst { limit: RateLimit, events: u32 },
    #[error("put the publishable key in the body's `key` field")]
    MissingKey,
    #[error(
        "only publishable keys are taken from a body: send a secret token as `Authorization: Bearer` to /v1/events, and never put it in a web page"
    )]
    NotPublishable,
    #[error(
        "send the body as `Content-Type: text/plain` (what navigator.sendBeacon sends) or `application/json`"
    )]
    BrowserMediaType,
    #[error(
        "this client address's limit of {limit} events with a publishable key is reached; retry after {retry_after_secs} s"
    )]
    AddressRateLimited {
        limit: RateLimit,
        retry_after_secs: u64,
    },
    #[error(
        "a batch of {events} events is more than the burst of {} allowed per client address with a publishable key (its limit is {limit} events) and can never pass: split the batch",
        limit.burst
    )]
    AddressBatchOverBurst { limit: RateLimit, events: u32 },
}

impl ApiError {
    /// A refusal of the limit per client address of publishable keys.
    pub(crate) fn address(refusal: Refusal) -> Self {
        match refusal {
            Refusal::RateLimited {
                limit,
                retry_after_secs,
            } => ApiError::AddressRateLimited {
                limit,
                retry_after_secs,
            },
            Refusal::OverBurst { limit, events } => {
                ApiError::AddressBatchOverBurst { limit, events }
            }
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::RateLimited {
                limit,
                retry_after_secs,
            } => ApiError::RateLimited {
                limit,
                retry_after_secs,
            },
            Refusal::OverBurst { limit, events } => ApiError::BatchOverBurst { limit, events },
        }
    }
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Auth(e) => e.code(),
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::MissingWriteKey => "missing_token",
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
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::BatchOverBurst { .. } => "batch_over_burst",
            ApiError::MissingKey => "missing_token",
            ApiError::NotPublishable => "not_publishable",
            ApiError::BrowserMediaType => "unsupported_media_type",
            ApiError::AddressRateLimited { .. } => "address_rate_limited",
            ApiError::AddressBatchOverBurst { .. } => "batch_over_burst",
        }
    }

    fn title(&self) -> &'static str {
        match self.status_code() {
            StatusCode::UNAUTHORIZED => "Not authenticated",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "Too large",
            StatusCode::TOO_MANY_REQUESTS => "Too many events",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
            StatusCode::SERVICE_UNAVAILABLE => "Temporarily unavailable",
            StatusCode::GATEWAY_TIMEOUT => "Outcome unknown",
            _ => "Invalid request",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Auth(e) => e.status_code(),
            ApiError::MissingWriteKey => StatusCode::UNAUTHORIZED,
            ApiError::UnsupportedMediaType
            | ApiError::UnsupportedEncoding(_)
            | ApiError::BrowserMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_)
            | ApiError::EventTooLarge { .. }
            | ApiError::TooManyEvents(_)
            | ApiError::BatchOverBurst { .. }
            | ApiError::AddressBatchOverBurst { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } | ApiError::AddressRateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::MissingKey => StatusCode::UNAUTHORIZED,
            ApiError::NotPublishable => StatusCode::FORBIDDEN,
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
        eye_http::problem::log(status, self.code(), self);
        let mut problem = Problem::new(status, self.title(), self.code(), self.to_string());
        match self {
            ApiError::InvalidEvents(errors) => problem = problem.errors(errors),
            ApiError::Unconfirmed { ids, .. } => problem = problem.ids(ids),
            _ => {}
        }
        if let ApiError::RateLimited {
            retry_after_secs, ..
        }
        | ApiError::AddressRateLimited {
            retry_after_secs, ..
        } = self
        {
            problem = problem.retry_after(*retry_after_secs);
        } else if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ) {
            problem = problem.retry_after(RETRY_AFTER_SECS);
        }
        problem.response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::RETRY_AFTER;

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
    fn over_the_rate_limit_is_a_429_saying_when_to_retry_and_naming_the_limit() {
        let limit = RateLimit::new("5/min".parse().unwrap(), 5).unwrap();
        let (status, retry_after, problem) = rendered(ApiError::RateLimited {
            limit,
            retry_after_secs: 12,
        });
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after.as_deref(), Some("12"));
        assert_eq!(problem["code"], "rate_limited");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("5/min, bursts of 5"), "{detail}");
    }

    #[test]
    fn a_batch_above_the_burst_is_a_413_to_split_not_to_retry() {
        let limit = RateLimit::new("5/min".parse().unwrap(), 5).unwrap();
        let (status, retry_after, problem) =
            rendered(ApiError::BatchOverBurst { limit, events: 6 });
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(retry_after, None);
        assert_eq!(problem["code"], "batch_over_burst");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("split the batch")
        );
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
