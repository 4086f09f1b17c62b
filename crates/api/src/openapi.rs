//! The api's OpenAPI 3.1 description, served on `/openapi.json` with Swagger UI on
//! `/swagger-ui/`. Paths come from the handlers' `#[utoipa::path]`; the problems each answers
//! with are listed here, and a test checks every `ApiError` is among them.

use eye_core::IncomingEvent;
use eye_http::openapi::{Problems, TOKEN_REFUSED, finish, problems};
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{OpenApi, ToSchema};

/// The body of `POST /v1/events`: one event, or a non-empty array of them (see
/// [`crate::parse_events`]).
pub struct Events;

impl utoipa::PartialSchema for Events {
    fn schema() -> RefOr<Schema> {
        let event = || Ref::from_schema_name(IncomingEvent::name());
        OneOfBuilder::new()
            .item(event())
            .item(ArrayBuilder::new().items(event()).min_items(Some(1)))
            .description(Some("One event, or a non-empty array of events."))
            .into()
    }
}

impl utoipa::ToSchema for Events {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            IncomingEvent::name().into(),
            <IncomingEvent as utoipa::PartialSchema>::schema(),
        ));
        <IncomingEvent as utoipa::ToSchema>::schemas(schemas);
    }
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Health {
    #[schema(example = "ok")]
    status: String,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    #[schema(example = "ready")]
    status: String,
    /// `ok`, `blocked` (a resource alarm) or `unreachable`.
    #[schema(example = "ok")]
    broker: String,
    /// Why the broker cannot take events now; only when unavailable.
    #[schema(required = false)]
    reason: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "The Eye ingestion api",
        description = "Applications post events here; the api answers 202 once the broker \
                       confirmed them. Errors are `application/problem+json` with a stable `code`."
    ),
    paths(
        crate::ingest::post_events,
        crate::healthz,
        crate::readyz,
        crate::metrics::render
    ),
    components(schemas(Events, crate::ingest::Accepted, Health, Readiness)),
    tags(
        (name = "events", description = "Sending events."),
        (name = "operations", description = "Health, readiness and metrics.")
    )
)]
struct ApiDoc;

const AUTH_403: Problems = Problems {
    status: 403,
    description: "The token lacks the scope this operation needs.",
    codes: &["missing_scope"],
};

/// What `POST /v1/events` answers when it does not take the events.
pub const POST_EVENTS_PROBLEMS: &[Problems] = &[
    Problems {
        status: 400,
        description: "The body is not an event or an array of events of the right shape; \
                      `errors` names each wrong field.",
        codes: &[
            "invalid_json",
            "invalid_gzip",
            "not_an_event",
            "invalid_events",
            "read_failed",
        ],
    },
    TOKEN_REFUSED,
    AUTH_403,
    Problems {
        status: 413,
        description: "The body, an event or the batch is too large: split it.",
        codes: &[
            "payload_too_large",
            "event_too_large",
            "too_many_events",
            "batch_over_burst",
        ],
    },
    Problems {
        status: 415,
        description: "The body is not `application/json`, or its encoding is not gzip.",
        codes: &["unsupported_media_type", "unsupported_encoding"],
    },
    Problems {
        status: 429,
        description: "The application's rate limit is reached: retry after `Retry-After` \
                      seconds.",
        codes: &["rate_limited"],
    },
    Problems {
        status: 503,
        description: "The events could not be queued now (nothing was stored): retry after \
                      `Retry-After` seconds.",
        codes: &[
            "broker_unavailable",
            "broker_timeout",
            "broker_rejected",
            "broker_unroutable",
            "queue_full",
            "broker_blocked",
            "auth_unavailable",
        ],
    },
    Problems {
        status: 504,
        description: "The broker did not confirm in time: the events may be stored. Retry with \
                      the same ids (listed in `ids`) so that they are stored once.",
        codes: &["broker_unconfirmed"],
    },
];

/// The api's description: its own paths only.
pub fn document() -> Document {
    let mut openapi = ApiDoc::openapi();
    problems(&mut openapi, "/v1/events", "post", POST_EVENTS_PROBLEMS);
    finish(&mut openapi);
    openapi
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ApiError;
    use actix_web::ResponseError;
    use eye_auth::AuthError;
    use eye_core::queue::PublishError;
    use eye_core::rate_limit::RateLimit;

    #[test]
    fn every_problem_of_the_api_is_described_with_its_status_and_code() {
        let limit = RateLimit::new("5/min".parse().unwrap(), 5).unwrap();
        let mut errors = vec![
            ApiError::UnsupportedMediaType,
            ApiError::UnsupportedEncoding("br".into()),
            ApiError::PayloadTooLarge(1),
            ApiError::EventTooLarge { index: 0, limit: 1 },
            ApiError::TooManyEvents(1),
            ApiError::InvalidGzip,
            ApiError::InvalidJson("x".into()),
            ApiError::NotAnEvent,
            ApiError::InvalidEvents(Vec::new()),
            ApiError::Unconfirmed {
                reason: "x".into(),
                ids: Vec::new(),
            },
            ApiError::Read(actix_web::error::PayloadError::Incomplete(None)),
            ApiError::RateLimited {
                limit,
                retry_after_secs: 1,
            },
            ApiError::BatchOverBurst { limit, events: 6 },
        ];
        errors.extend(
            [
                PublishError::Unavailable("x".into()),
                PublishError::Timeout,
                PublishError::Nacked,
                PublishError::Unroutable,
                PublishError::Full,
                PublishError::Blocked,
                PublishError::Unconfirmed("x".into()),
            ]
            .map(ApiError::Broker),
        );
        errors.extend(
            [
                AuthError::MissingToken,
                AuthError::InvalidToken,
                AuthError::TokenExpired,
                AuthError::TokenRevoked,
                AuthError::UnknownToken,
                AuthError::ApplicationDisabled,
                AuthError::MissingScope("events:write"),
                AuthError::Unavailable(sea_orm::DbErr::Custom("x".into())),
            ]
            .map(ApiError::Auth),
        );
        for error in errors {
            let status = error.status_code().as_u16();
            assert!(
                POST_EVENTS_PROBLEMS
                    .iter()
                    .any(|p| p.status == status && p.codes.contains(&error.code())),
                "{status} {} is missing from the description of POST /v1/events",
                error.code()
            );
        }
        assert!(PublishError::CODES.iter().all(|code| {
            POST_EVENTS_PROBLEMS
                .iter()
                .any(|p| p.status >= 503 && p.codes.contains(code))
        }));
    }
}
