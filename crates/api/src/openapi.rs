//! The api's OpenAPI 3.1 description, served on `/openapi.json` with Swagger UI on
//! `/swagger-ui/`. Paths come from the handlers' `#[utoipa::path]`; the problems each answers
//! with are listed here, and a test checks every `ApiError` is among them.

use eye_core::IncomingEvent;
use eye_http::openapi::{Problems, TOKEN_REFUSED, finish, problems};
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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

/// The body of `POST /v1/browser/events`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct BrowserEvents {
    /// A publishable key (`eye token create --publishable --origin …`). Secret tokens are
    /// refused here.
    key: String,
    #[schema(inline)]
    events: Events,
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

/// A Segment message. Any other member is kept in the stored event's `source`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)]
pub struct SegmentMessage {
    /// `track`, `page`, `screen`, `identify`, `group` or `alias`: required in a batch,
    /// implied by the endpoint otherwise.
    #[schema(required = false, example = "track")]
    r#type: Option<String>,
    /// The message's id: a UUID is the event's id, any other text is made one (UUIDv5), so
    /// a message sent twice is stored once.
    #[schema(required = false)]
    messageId: Option<String>,
    /// One of `anonymousId` and `userId` is required; the session is made from it unless
    /// `context.sessionId` is a UUID.
    #[schema(required = false)]
    anonymousId: Option<String>,
    #[schema(required = false)]
    userId: Option<String>,
    /// The action of a `track` call: the event's name.
    #[schema(required = false, example = "Order Completed")]
    event: Option<String>,
    /// The page or screen name.
    #[schema(required = false)]
    name: Option<String>,
    /// The event's `data` for `track`, `page` and `screen`.
    #[schema(required = false)]
    properties: Option<serde_json::Map<String, serde_json::Value>>,
    /// The event's `data` for `identify` and `group`.
    #[schema(required = false)]
    traits: Option<serde_json::Map<String, serde_json::Value>>,
    #[schema(required = false)]
    context: Option<serde_json::Map<String, serde_json::Value>>,
    /// When it happened, as the client's clock says.
    #[schema(required = false, format = DateTime)]
    timestamp: Option<String>,
    /// With `sentAt`, corrects the event's time for the client's clock.
    #[schema(required = false, format = DateTime)]
    originalTimestamp: Option<String>,
    #[schema(required = false, format = DateTime)]
    sentAt: Option<String>,
    /// The write key, when not sent as the Basic-auth user name.
    #[schema(required = false)]
    writeKey: Option<String>,
}

/// A batch of Segment messages.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)]
pub struct SegmentBatch {
    #[schema(min_items = 1)]
    batch: Vec<SegmentMessage>,
    /// When the batch was sent, for messages that carry no `sentAt` of their own.
    #[schema(required = false, format = DateTime)]
    sentAt: Option<String>,
    #[schema(required = false)]
    writeKey: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "The Eye ingestion api",
        description = "Applications post events here; the api answers 202 once the broker \
                       confirmed them. Errors are `application/problem+json` with a stable `code`. \
                       Web pages send with a publishable key, from one of its origins: CORS \
                       preflights (`OPTIONS`) on `/v1/` are answered for those origins."
    ),
    paths(
        crate::ingest::post_events,
        crate::segment::batch,
        crate::segment::track,
        crate::segment::page,
        crate::segment::screen,
        crate::segment::identify,
        crate::segment::group,
        crate::segment::alias,
        crate::browser::post_events,
        crate::browser::script,
        crate::healthz,
        crate::readyz,
        crate::metrics::render
    ),
    components(schemas(
        Events,
        BrowserEvents,
        crate::ingest::Accepted,
        SegmentMessage,
        SegmentBatch,
        crate::segment::Success,
        Health,
        Readiness
    )),
    tags(
        (name = "events", description = "Sending events."),
        (name = "browser", description = "Sending events from web pages, with publishable keys."),
        (name = "segment", description = "Sending events with a Segment or RudderStack SDK: \
                                          the Segment HTTP API, mapped as docs/INTEGRATIONS.md says."),
        (name = "operations", description = "Health, readiness and metrics.")
    )
)]
struct ApiDoc;

const AUTH_403: Problems = Problems {
    status: 403,
    description: "The token lacks the scope this operation needs, or it is a publishable key \
                  and the request's `Origin` is missing or not one of the key's.",
    codes: &["missing_scope", "origin_required", "origin_not_allowed"],
};

const RATE_LIMITED: Problems = Problems {
    status: 429,
    description: "The application's rate limit, or with a publishable key the limit of the \
                  client address, is reached: retry after `Retry-After` seconds.",
    codes: &["rate_limited", "address_rate_limited"],
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
    RATE_LIMITED,
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

/// The documented Segment endpoints (each also has a one-letter alias).
const SEGMENT_PATHS: [&str; 7] = [
    "/v1/batch",
    "/v1/track",
    "/v1/page",
    "/v1/screen",
    "/v1/identify",
    "/v1/group",
    "/v1/alias",
];

/// What `POST /v1/browser/events` answers when it does not take the events: those of
/// `POST /v1/events`, a body without a key, a secret token, and other media types.
pub const POST_BROWSER_EVENTS_PROBLEMS: &[Problems] = &[
    Problems {
        status: 400,
        description: "The body is not `{\"key\": …, \"events\": …}` with events of the right \
                      shape; `errors` names each wrong field.",
        codes: &[
            "invalid_json",
            "invalid_gzip",
            "not_an_event",
            "invalid_events",
            "read_failed",
        ],
    },
    TOKEN_REFUSED,
    Problems {
        status: 403,
        description: "The key is a secret token, or the request's `Origin` is missing or not \
                      one of the key's.",
        codes: &[
            "not_publishable",
            "origin_required",
            "origin_not_allowed",
            "missing_scope",
        ],
    },
    POST_EVENTS_PROBLEMS[3],
    Problems {
        status: 415,
        description: "The body is not `text/plain` or `application/json`, or its encoding is \
                      not gzip.",
        codes: &["unsupported_media_type", "unsupported_encoding"],
    },
    RATE_LIMITED,
    POST_EVENTS_PROBLEMS[6],
    POST_EVENTS_PROBLEMS[7],
];

/// The api's description: its own paths only.
pub fn document() -> Document {
    let mut openapi = ApiDoc::openapi();
    problems(&mut openapi, "/v1/events", "post", POST_EVENTS_PROBLEMS);
    for path in SEGMENT_PATHS {
        problems(&mut openapi, path, "post", POST_EVENTS_PROBLEMS);
    }
    problems(
        &mut openapi,
        "/v1/browser/events",
        "post",
        POST_BROWSER_EVENTS_PROBLEMS,
    );
    finish(&mut openapi);
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "basic",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Basic)
                .description(Some(
                    "Segment's write key: an ingestion token as the user name, no password.",
                ))
                .build(),
        ),
    );
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
            ApiError::MissingWriteKey,
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
            ApiError::AddressRateLimited {
                limit,
                retry_after_secs: 1,
            },
            ApiError::AddressBatchOverBurst { limit, events: 6 },
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
                AuthError::OriginRequired,
                AuthError::OriginNotAllowed("https://x.example".into()),
                AuthError::Unavailable(sea_orm::DbErr::Custom("x".into())),
            ]
            .map(ApiError::Auth),
        );
        let described = |list: &[Problems], error: &ApiError| {
            let status = error.status_code().as_u16();
            list.iter()
                .any(|p| p.status == status && p.codes.contains(&error.code()))
        };
        for error in &errors {
            for (path, list) in [
                ("/v1/events", POST_EVENTS_PROBLEMS),
                ("/v1/browser/events", POST_BROWSER_EVENTS_PROBLEMS),
            ] {
                assert!(
                    described(list, error),
                    "{} {} is missing from the description of POST {path}",
                    error.status_code(),
                    error.code()
                );
            }
        }
        for error in [
            ApiError::MissingKey,
            ApiError::NotPublishable,
            ApiError::BrowserMediaType,
        ] {
            assert!(
                described(POST_BROWSER_EVENTS_PROBLEMS, &error),
                "{} {} is missing from the description of POST /v1/browser/events",
                error.status_code(),
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
