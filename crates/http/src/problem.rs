//! One `application/problem+json` body (RFC 9457) with a stable snake_case `code` and the
//! request's id, and one way of logging the error behind it.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, RETRY_AFTER};
use eye_core::telemetry::ErrorChain;
use eye_core::{FieldError, RequestId};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// `urn:eye:problem:<code>`.
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    /// The HTTP status, repeated.
    status: u16,
    /// What went wrong and what to do, for people.
    detail: String,
    /// Stable and machine-readable: what a program should branch on.
    code: &'a str,
    /// What is wrong with each field (`invalid_events`).
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
    /// The ids of events whose outcome is unknown (`broker_unconfirmed`): retry with them.
    #[serde(skip_serializing_if = "<[Uuid]>::is_empty")]
    ids: &'a [Uuid],
    /// The id to quote when asking about this answer; also in the `X-Request-Id` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    request_id: Option<RequestId>,
    #[serde(skip)]
    retry_after_secs: Option<u64>,
    #[serde(skip)]
    http_status: StatusCode,
}

impl<'a> Problem<'a> {
    /// A problem of the request being handled (its id is taken from the task-local).
    pub fn new(status: StatusCode, title: &'a str, code: &'a str, detail: String) -> Self {
        Self {
            kind: format!("urn:eye:problem:{code}"),
            title,
            status: status.as_u16(),
            detail,
            code,
            errors: &[],
            ids: &[],
            request_id: crate::current_request_id(),
            retry_after_secs: None,
            http_status: status,
        }
    }

    /// What is wrong with each field, for a 400.
    pub fn errors(mut self, errors: &'a [FieldError]) -> Self {
        self.errors = errors;
        self
    }

    /// The ids of events whose outcome is unknown, for a retry.
    pub fn ids(mut self, ids: &'a [Uuid]) -> Self {
        self.ids = ids;
        self
    }

    /// Sends `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.http_status);
        response.insert_header((CONTENT_TYPE, "application/problem+json"));
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((RETRY_AFTER, secs.to_string()));
        }
        response.body(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Logs the error behind an answer: a 5xx at error with its whole cause chain, anything else
/// at debug (a client's mistake is not the operator's). The request's span adds its id.
pub fn log(status: StatusCode, code: &str, error: &dyn std::error::Error) {
    if status.is_server_error() {
        tracing::error!(code, error = %ErrorChain(error), "request failed");
    } else {
        tracing::debug!(code, error = %error, "request refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(response: HttpResponse) -> serde_json::Value {
        let bytes = actix_web::body::to_bytes(response.into_body());
        let bytes = futures_util::FutureExt::now_or_never(bytes)
            .unwrap()
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_problem_carries_the_id_of_the_request_being_handled() {
        let id = RequestId::parse("req-1").unwrap();
        let response = crate::request_id::scope(id, async {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "x",
                "bad".into(),
            )
            .response()
        })
        .await;
        let problem = body(response);
        assert_eq!(problem["request_id"], "req-1");
        assert_eq!(problem["type"], "urn:eye:problem:x");
    }

    #[test]
    fn outside_a_request_a_problem_has_no_id_and_empty_lists_are_left_out() {
        let response = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "t", "y", "d".into())
            .retry_after(1)
            .response();
        assert_eq!(response.headers().get(RETRY_AFTER).unwrap(), "1");
        let problem = body(response);
        assert!(problem.get("request_id").is_none());
        assert!(problem.get("errors").is_none() && problem.get("ids").is_none());
        assert_eq!(problem["status"], 503);
    }
}
